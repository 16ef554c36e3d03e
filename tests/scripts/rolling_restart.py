"""A rolling restart of a local three-zone cluster under load: no client
error, nothing acknowledged lost.

Usage: rolling_restart.py <dynaraft binary>. Starts `deploy/local/cluster.sh`
(three storage nodes, one per zone, and a router; each node's /metrics and
/ready on its own port), creates a table split over three partitions, and
runs writers and readers through the router with the SDK's standard
retries (as clients run). Then, one node at a time, in zone order as a
StatefulSet per zone would be rolled: `cluster.sh restart` (SIGTERM: the node
hands its leaderships off, stops, and starts again with the same command
line), then waits for that node's /ready (caught up and serving) before the
next. Passes if no client request failed and every acknowledged write reads
back afterwards; prints how long each node took to be ready again.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import boto3
from botocore.config import Config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port, free_run, percentile_ms  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SH = os.path.join(HERE, "..", "..", "deploy", "local", "cluster.sh")
TABLE = "rolled"
WRITERS = 3
READY_WITHIN_S = 60
# How each node is stopped: TERM (it hands its leaderships off first), or
# ROLL_SIGNAL=KILL to see what the same restart costs without that.
SIGNAL = os.environ.get("ROLL_SIGNAL", "TERM")
SETTLE_S = 2


def client(url):
    # The SDK's own retries, as applications run; what still fails counts.
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="k", aws_secret_access_key="s",
                        config=Config(retries={"mode": "standard", "max_attempts": 5},
                                      connect_timeout=5, read_timeout=10))


class Load:
    def __init__(self, url):
        self.url = url
        self.stop = threading.Event()
        self.acked = {}
        self.errors = []
        self.latencies = []
        self.lock = threading.Lock()

    def writer(self, w):
        ddb = client(self.url)
        n = 0
        while not self.stop.is_set():
            key = f"w{w}-{n}"
            started = time.time()
            try:
                ddb.put_item(TableName=TABLE, Item={"pk": {"S": key}, "v": {"N": str(n)}})
                with self.lock:
                    self.acked[key] = n
                    self.latencies.append(time.time() - started)
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                with self.lock:
                    self.errors.append(f"put {key}: {e}")
            n += 1

    def reader(self):
        ddb = client(self.url)
        while not self.stop.is_set():
            with self.lock:
                keys = list(self.acked)[-50:]
            for key in keys[:5]:
                started = time.time()
                try:
                    got = ddb.get_item(TableName=TABLE, Key={"pk": {"S": key}}, ConsistentRead=True)
                    if "Item" not in got:
                        with self.lock:
                            self.errors.append(f"get {key}: acknowledged, not found")
                    with self.lock:
                        self.latencies.append(time.time() - started)
                except Exception as e:  # noqa: BLE001
                    with self.lock:
                        self.errors.append(f"get {key}: {e}")
            time.sleep(0.01)


def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main():
    binary = os.path.abspath(sys.argv[1])
    root = tempfile.mkdtemp(prefix="dynaraft-rolling-")
    router_port, node_port, metrics_port = free_port(), free_run(3), free_run(3)
    env = dict(os.environ, METRICS_BASE=str(metrics_port))
    subprocess.run([CLUSTER_SH, "start", binary, root, str(router_port), str(node_port),
                    "--partitions-per-table", "3", "--transition-delay-ms", "0"],
                   env=env, check=True)
    try:
        url = f"http://127.0.0.1:{router_port}"
        ddb = client(url)
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        for i in range(3):
            deadline = time.time() + READY_WITHIN_S
            while not ready(metrics_port + i):
                assert time.time() < deadline, f"node {i + 1} never ready before the restarts"
                time.sleep(0.1)
        load = Load(url)
        threads = [threading.Thread(target=load.writer, args=(w,)) for w in range(WRITERS)]
        threads.append(threading.Thread(target=load.reader))
        for t in threads:
            t.start()
        took = []
        try:
            time.sleep(SETTLE_S)
            for node in (1, 2, 3):
                started = time.time()
                subprocess.run([CLUSTER_SH, "restart", root, str(node), SIGNAL], check=True)
                stopped = time.time() - started
                while not ready(metrics_port + node - 1):
                    assert time.time() - started < READY_WITHIN_S, f"node {node} not ready again"
                    time.sleep(0.05)
                took.append((node, stopped, time.time() - started))
                time.sleep(SETTLE_S)
        finally:
            load.stop.set()
            for t in threads:
                t.join()
        assert not load.errors, f"{len(load.errors)} client errors: {load.errors[:5]}"
        for key, v in load.acked.items():
            got = ddb.get_item(TableName=TABLE, Key={"pk": {"S": key}}, ConsistentRead=True)
            assert got.get("Item", {}).get("v", {}).get("N") == str(v), f"{key} lost: {got}"
        lat = sorted(load.latencies)
        p = lambda q: percentile_ms(lat, q)  # noqa: E731
        steps = ", ".join(f"node {n} stopped in {s:.1f} s, ready after {r:.1f} s" for n, s, r in took)
        print(f"rolling restart (SIG{SIGNAL}): {steps}; {len(load.acked)} writes acknowledged and read back, "
              f"{len(lat)} requests, 0 client errors (p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, "
              f"max {lat[-1] * 1000:.0f} ms, debug build)")
    finally:
        subprocess.run([CLUSTER_SH, "stop", root], check=False)


if __name__ == "__main__":
    main()
