"""Runs the image's default command as the image's user, without a
container runtime.

Usage: image_check.py <dynaraft binary>. Reads deploy/Dockerfile's final
stage: its USER, ENTRYPOINT and CMD, and the directories its RUN lines make
and chown. In a private mount namespace (`unshare --mount`, so nothing
outlives the check), a fresh directory made and owned as those RUN lines
say is bind-mounted where the image has it, and the ENTRYPOINT + CMD runs
as the image's user (`setpriv`), with the binary given standing in for the
image's (and the CMD's port swapped for a free one, since 8000 may be in
use here). Passes if the server answers, a table can be created and
written, and the data directory then holds files owned by that user.
Needs root (the bind mount and the user switch); without it, says so and
skips, as the disk scripts do.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "scripts"))
from ports import free_port  # noqa: E402


def final_stage(path):
    lines = open(path).read().replace("\\\n", " ").splitlines()
    stages = [i for i, l in enumerate(lines) if l.strip().upper().startswith("FROM ")]
    return [l.strip() for l in lines[stages[-1]:] if l.strip() and not l.strip().startswith("#")]


def instruction(stage, name):
    found = [l[len(name):].strip() for l in stage if l.upper().startswith(name + " ")]
    return found[-1] if found else None


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def main():
    binary = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        print("image_check: SKIPPED, needs root to bind-mount the data directory and switch user")
        return
    if os.environ.get("IMAGE_CHECK_INNER") != "1":
        env = dict(os.environ, IMAGE_CHECK_INNER="1")
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private",
                               sys.executable, *sys.argv], env)
    stage = final_stage(os.path.join(HERE, "Dockerfile"))
    user = instruction(stage, "USER")
    if not user or not re.fullmatch(r"\d+:\d+", user) or user.startswith("0:"):
        fail(f"the image runs as USER {user!r}, not a numeric non-root uid:gid")
    uid, gid = (int(x) for x in user.split(":"))
    argv = json.loads(instruction(stage, "ENTRYPOINT")) + json.loads(instruction(stage, "CMD"))
    if argv[0] != "dynaraft":
        fail(f"the entrypoint is {argv[0]}, not the dynaraft binary")
    made = []
    for run in (l for l in stage if l.upper().startswith("RUN ")):
        for m in re.finditer(r"mkdir -p (\S+)", run):
            made.append(m.group(1))
        for m in re.finditer(r"chown (\d+):(\d+) (\S+)", run):
            if m.group(3) in made and (int(m.group(1)), int(m.group(2))) != (uid, gid):
                fail(f"{m.group(3)} is chowned to {m.group(1)}:{m.group(2)}, not the image's user")
    data = argv[argv.index("--data-dir") + 1] if "--data-dir" in argv else None
    if data is None or data not in made:
        fail(f"the default command's data directory {data} is not made by the image")
    chowned = any(f"chown {uid}:{gid} {data}" in l for l in stage)
    if not chowned:
        fail(f"{data} is not chowned to the image's user {uid}:{gid}")
    # The image's filesystem, as far as the command needs it.
    root = tempfile.mkdtemp(prefix="dynaraft-image-")
    os.chown(root, uid, gid)
    os.makedirs(data, exist_ok=True)
    subprocess.run(["mount", "--bind", root, data], check=True)
    port = free_port()
    args = [binary] + argv[1:]
    args[args.index("--port") + 1] = str(port)
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *args]
    print("running:", " ".join(shlex.quote(a) for a in cmd))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None:
                fail(f"the default command exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/", timeout=1)
                break
            except OSError:
                if time.time() > deadline:
                    fail("the default command never answered")
                time.sleep(0.1)
        c = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                         aws_access_key_id="k", aws_secret_access_key="s")
        c.create_table(TableName="image", BillingMode="PAY_PER_REQUEST",
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                       KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        c.get_waiter("table_exists").wait(TableName="image", WaiterConfig={"Delay": 0.2})
        c.put_item(TableName="image", Item={"pk": {"S": "a"}})
        assert c.get_item(TableName="image", Key={"pk": {"S": "a"}}, ConsistentRead=True)["Item"]
        owners = {os.stat(os.path.join(d, f)).st_uid
                  for d, _, files in os.walk(data) for f in files}
        if owners != {uid}:
            fail(f"files under {data} are owned by {owners}, expected only {uid}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        subprocess.run(["umount", data], check=False)
    print(f"image_check: `{' '.join(argv)}` as {user} serves on a fresh {data} it owns "
          f"(created a table, wrote and read an item)")


if __name__ == "__main__":
    main()
