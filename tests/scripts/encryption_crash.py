"""Encryption at rest: sealed values survive kill -9, and nothing under
the data directory gives an item value away.

Usage: encryption_crash.py <dynaraft binary>. Starts the embedded server on
a fresh data directory with --encryption-key-file, writes items carrying a
unique marker in a non-key attribute (and a stream, so the change log holds
their images too) while killing the process with SIGKILL at random moments,
restarts it on the same data with the key, and checks with boto3 that every
acknowledged write is readable with its value. Then, with the server
stopped: no file under the data directory contains the marker (WAL, store,
anything); the server refuses to start without the key file, with a key
file holding only another key, and a directory created without encryption
refuses a key file. Key attribute values are not encrypted (the store's
order needs them) and are not checked for.
"""
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from ports import client, free_port, start_embedded

ROUNDS = 4
MARKER = "zq-unique-marker-7f3a9c"
KEY = "3f" * 32
OTHER_KEY = "a1" * 32


def write_until_killed(ddb, first, acked, stop):
    i = first
    while not stop.is_set():
        try:
            ddb.put_item(TableName="secrets", Item={"pk": {"S": f"k{i}"},
                                                    "secret": {"S": f"{MARKER}-{i}"}})
            acked.append(i)
        except Exception:
            return
        i += 1


def refused(binary, data, *flags):
    """The server exits at start-up with its reason on stderr."""
    r = subprocess.run([binary, "embedded", "--port", str(free_port()), "--data-dir", data,
                        *flags], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, f"started with {flags}"
    return r.stderr


def files_containing(root, needle):
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                if needle in f.read():
                    found.append(path)
    return found


def main():
    binary = sys.argv[1]
    tmp = tempfile.mkdtemp()
    data = os.path.join(tmp, "data")
    keyfile, other = os.path.join(tmp, "key"), os.path.join(tmp, "other")
    with open(keyfile, "w") as f:
        f.write(f"# the active key\n{KEY}\n")
    with open(other, "w") as f:
        f.write(OTHER_KEY + "\n")
    port = free_port()
    acked = []
    proc, url = start_embedded(binary, data, port, "--encryption-key-file", keyfile)
    ddb = client(url)
    ddb.create_table(TableName="secrets", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     StreamSpecification={"StreamEnabled": True,
                                          "StreamViewType": "NEW_AND_OLD_IMAGES"})
    desc = ddb.describe_table(TableName="secrets")["Table"]
    assert desc.get("SSEDescription") == {"Status": "ENABLED", "SSEType": "AES256"}, desc
    try:
        for rnd in range(ROUNDS):
            stop = threading.Event()
            writer = threading.Thread(target=write_until_killed,
                                      args=(ddb, len(acked) + 1_000_000 * rnd, acked, stop))
            writer.start()
            time.sleep(random.uniform(0.5, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stop.set()
            writer.join()
            proc, url = start_embedded(binary, data, port, "--encryption-key-file", keyfile)
            ddb = client(url)
            for i in random.sample(acked, min(100, len(acked))):
                got = ddb.get_item(TableName="secrets", Key={"pk": {"S": f"k{i}"}},
                                   ConsistentRead=True)
                assert got.get("Item", {}).get("secret") == {"S": f"{MARKER}-{i}"}, (i, got)
            print(f"round {rnd + 1}: {len(acked)} acknowledged writes, all readable")
        count = ddb.scan(TableName="secrets", Select="COUNT")["Count"]
        assert count >= len(acked), (count, len(acked))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    leaks = files_containing(data, MARKER.encode())
    assert not leaks, f"the marker is readable in {leaks}"
    why = refused(binary, data)
    assert "is encrypted" in why and "--encryption-key-file" in why, why
    why = refused(binary, data, "--encryption-key-file", other)
    assert "holds none of them" in why, why
    plain = os.path.join(tmp, "plain")
    proc, _ = start_embedded(binary, plain, free_port())
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    why = refused(binary, plain, "--encryption-key-file", keyfile)
    assert "created without encryption" in why, why
    print(f"encryption_crash: {ROUNDS} kill -9 rounds, {len(acked)} acknowledged writes "
          f"readable, no value found under the data directory, refused without the key")


if __name__ == "__main__":
    main()
