"""A table on the local three-zone cluster (deploy/local/cluster.sh, what
`make cluster` starts) grows from one partition to at least 16 under a
continuous mixed workload, with no client error; afterwards a Scan returns
exactly the items written and every GetItem finds its item (issue 21).

Usage: cluster_growth.py <dynaraft binary>. The storage nodes split at
SPLIT_SIZE_BYTES; two writers put new items while a reader gets and
queries items already written and an updater rewrites them, all with
boto3 and no client retries, until `dynaraft admin partitions` lists
WANT_PARTITIONS partitions of the table. Latencies are printed, not
judged: make bench's splits row measures them on a release build.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import urllib.request
import time

import boto3
from botocore.config import Config

from ports import free_port, free_run, percentile_ms, scan_items

SPLIT_SIZE_BYTES = 32 * 1024
WANT_PARTITIONS = 16
GROWTH_TIMEOUT_S = 300
TABLE = "growth"
PAD = "x" * 200
CLUSTER_SH = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "local", "cluster.sh")


def client(url):
    # No client retries: every failure is seen.
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(retries={"total_max_attempts": 1}))


def partitions(binary, control):
    out = subprocess.run([binary, "admin", "--control", control, "partitions", "--json"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [r for r in json.loads(out) if r["table"].endswith(TABLE) and r["index"] is None]


class Load:
    def __init__(self, url):
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.written = {}  # key -> version acknowledged last
        self.errors = []
        self.latencies = []

    def call(self, what, f):
        t = time.time()
        try:
            r = f()
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            with self.lock:
                self.errors.append(f"{what}: {e}")
            return None
        with self.lock:
            self.latencies.append(time.time() - t)
        return r

    def writer(self, first, step):
        ddb = client(self.url)
        i = first
        while not self.stop.is_set():
            key = f"k{i:06}"
            item = {"pk": {"S": key}, "sk": {"N": "0"}, "v": {"N": "0"}, "pad": {"S": PAD}}
            if self.call("put", lambda: ddb.put_item(TableName=TABLE, Item=item)) is not None:
                with self.lock:
                    self.written[key] = 0
            i += step

    def written_keys(self, seed):
        """Keys already written, one at a time at random, until stopped."""
        rng = random.Random(seed)
        while not self.stop.is_set():
            with self.lock:
                keys = list(self.written)
            if keys:
                yield rng.choice(keys)
            else:
                time.sleep(0.01)

    def reader(self):
        ddb = client(self.url)
        for key in self.written_keys(7):
            got = self.call("get", lambda: ddb.get_item(
                TableName=TABLE, Key={"pk": {"S": key}, "sk": {"N": "0"}}, ConsistentRead=True))
            if got is not None and "Item" not in got:
                with self.lock:
                    self.errors.append(f"get {key}: not found")
            q = self.call("query", lambda: ddb.query(
                TableName=TABLE, KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": key}}))
            if q is not None and q["Count"] != 1:
                with self.lock:
                    self.errors.append(f"query {key}: {q['Count']} items")

    def updater(self):
        ddb = client(self.url)
        for key in self.written_keys(11):
            with self.lock:
                version = self.written[key] + 1
            done = self.call("update", lambda: ddb.update_item(
                TableName=TABLE, Key={"pk": {"S": key}, "sk": {"N": "0"}},
                UpdateExpression="SET v = :v", ExpressionAttributeValues={":v": {"N": str(version)}}))
            if done is not None:
                with self.lock:
                    # Only this thread updates: the version written last.
                    self.written[key] = version


def main():
    binary = os.path.abspath(sys.argv[1])
    root = tempfile.mkdtemp(prefix="dynaraft-growth-")
    router_port, node_port, metrics_port = free_port(), free_run(3), free_run(3)
    env = dict(os.environ, NODE_FLAGS=f"--split-size-bytes {SPLIT_SIZE_BYTES}",
               METRICS_BASE=str(metrics_port))
    subprocess.run([CLUSTER_SH, "start", binary, root, str(router_port), str(node_port),
                    "--partitions-per-table", "1", "--transition-delay-ms", "0"],
                   env=env, check=True)
    try:
        url = f"http://127.0.0.1:{router_port}"
        with open(os.path.join(root, "control")) as f:
            control = f.read().strip()
        ddb = client(url)
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                               {"AttributeName": "sk", "AttributeType": "N"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                    {"AttributeName": "sk", "KeyType": "RANGE"}])
        assert len(partitions(binary, control)) == 1
        load = Load(url)
        threads = [threading.Thread(target=load.writer, args=(w, 2)) for w in range(2)]
        threads += [threading.Thread(target=load.reader), threading.Thread(target=load.updater)]
        for t in threads:
            t.start()
        started = time.time()
        try:
            while True:
                n = len(partitions(binary, control))
                if n >= WANT_PARTITIONS:
                    break
                assert time.time() - started < GROWTH_TIMEOUT_S, f"only {n} partitions"
                assert not load.errors, load.errors[:5]
                time.sleep(1)
        finally:
            load.stop.set()
            for t in threads:
                t.join()
        grew_s = time.time() - started
        assert not load.errors, f"{len(load.errors)} client errors: {load.errors[:5]}"
        items = scan_items(ddb, TABLE)
        keys = [i["pk"]["S"] for i in items]
        assert len(keys) == len(set(keys)), "a Scan returned an item twice"
        assert set(keys) == set(load.written), (
            f"scan has {len(keys)} items, {len(load.written)} were written")
        for item in items:
            want = load.written[item["pk"]["S"]]
            assert item["v"]["N"] == str(want), (item["pk"], item["v"], want)
        for key in load.written:
            got = ddb.get_item(TableName=TABLE, Key={"pk": {"S": key}, "sk": {"N": "0"}},
                               ConsistentRead=True)
            assert "Item" in got, f"{key} not found"
        # Every storage node serves its metrics; the splits were counted.
        splits = 0
        for i in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port + i}/metrics",
                                        timeout=5) as r:
                text = r.read().decode()
            assert "# TYPE dynaraft_" in text, text[:500]
            for family in ("dynaraft_raft_groups gauge", "dynaraft_wal_fsync_seconds histogram"):
                assert f"# TYPE {family}" in text, f"node {i}: no {family}"
            splits += sum(float(line.split()[-1]) for line in text.splitlines()
                          if line.startswith("dynaraft_partition_splits_total"))
        assert splits >= WANT_PARTITIONS - 1, f"{splits} splits counted on the nodes"
        # The router serves the CloudWatch-named families, per table.
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
            text = r.read().decode()
        consumed = [float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith(f'dynaraft_consumed_write_capacity_units_total{{table="{TABLE}"}}')]
        assert consumed and consumed[0] >= len(load.written), (
            f"router: consumed write units {consumed} for {len(load.written)} items written")
        assert "# HELP dynaraft_consumed_read_capacity_units_total " in text
        lat = sorted(load.latencies)
        p = lambda q: percentile_ms(lat, q)  # noqa: E731
        parts = partitions(binary, control)
        print(f"cluster growth: 1 -> {len(parts)} partitions in {grew_s:.0f} s, "
              f"{len(load.written)} items written, {len(lat)} requests, 0 errors "
              f"(p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, debug build); "
              f"the Scan and every GetItem match; {splits:.0f} splits counted on the nodes' /metrics, "
              f"{consumed[0]:.0f} write units on the router's")
    finally:
        subprocess.run([CLUSTER_SH, "stop", root], check=False)


if __name__ == "__main__":
    main()
