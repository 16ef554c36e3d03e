"""A free TCP port on 127.0.0.1, an embedded server started on one, and a
client for it, for the scripts that start servers."""
import random
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import boto3
from botocore.config import Config


def free_run(n):
    """The first of `n` consecutive free ports (cluster.sh gives node i the
    port base + i - 1)."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 40000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports")


def percentile_ms(sorted_s, q):
    """The `q` quantile (0-1) of latencies `sorted_s` (seconds, sorted), in
    milliseconds."""
    return sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))] * 1000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_embedded(binary, data, port, *flags, stderr=subprocess.DEVNULL, wait_s=20):
    """`dynaraft embedded` on `data` and `port` (instant table transitions,
    plus `flags`); (process, endpoint URL) once it answers."""
    proc = subprocess.Popen([binary, "embedded", "--port", str(port), "--data-dir", data,
                             "--instant-transitions", *flags], stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the server did not start")


def run_restarting(binary, body, *flags):
    """Calls body(start, data): start() starts `dynaraft embedded` (with
    `flags`) on the data directory `data` and one port, again after each
    kill, and returns (process, url). Every process still running is
    stopped at the end."""
    data = tempfile.mkdtemp()
    port = free_port()
    servers = []

    def start():
        proc, url = start_embedded(binary, data, port, *flags)
        servers.append(proc)
        return proc, url

    try:
        body(start, data)
    finally:
        for p in servers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait()


def client(url, region="us-east-1"):
    """A DynamoDB client of `url` in `region` that retries a failed call at
    most once (botocore's `max_attempts` counts retries), so that a test
    sees nearly every failure (a crash test's writer stops at its first)."""
    return boto3.client("dynamodb", endpoint_url=url, region_name=region,
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(retries={"max_attempts": 1}))


def job_done(ddb, kind, arn):
    """Export or import `arn` (kind "export" or "import") described once it
    is no longer IN_PROGRESS; None while it is."""
    if kind == "export":
        d = ddb.describe_export(ExportArn=arn)["ExportDescription"]
        return d if d["ExportStatus"] != "IN_PROGRESS" else None
    d = ddb.describe_import(ImportArn=arn)["ImportTableDescription"]
    return d if d["ImportStatus"] != "IN_PROGRESS" else None


def scan_items(ddb, table):
    """Every item of `table`, in Scan order, from consistent reads."""
    items, start = [], None
    while True:
        kw = {"TableName": table, "ConsistentRead": True}
        if start:
            kw["ExclusiveStartKey"] = start
        r = ddb.scan(**kw)
        items += r["Items"]
        start = r.get("LastEvaluatedKey")
        if not start:
            return items
