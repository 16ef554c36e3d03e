"""Partition splits survive kill -9 of the server at any step.

Usage: split_crash.py <dynaraft binary>. Starts the embedded server on a
fresh data directory with a tiny split size, so that a table splits again
and again while a client writes to it, kills the process with SIGKILL at a
random moment (mid-write, mid-split: begun in the catalog, applied by the
partition, or recorded), restarts it on the same data, and checks with
boto3, round after round, that every acknowledged write is readable, that
a Scan across all partitions returns each written item exactly once and
nothing else, and that the server logged splits (so the rounds did
crash during a splitting table, not a quiet one). A split left pending
by a crash is finished after the restart by the control plane.
"""
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time

import boto3
from botocore.config import Config

from ports import free_port, scan_items, start_embedded

ROUNDS = 6
SPLIT_SIZE_BYTES = 4096
PAD = "x" * 120


def start(binary, data, port, log):
    return start_embedded(binary, data, port, "--split-size-bytes", str(SPLIT_SIZE_BYTES),
                          "--log-format", "json", stderr=log)


def client(url):
    # No client retries: every failure is seen (and, before the kill, none
    # is expected).
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(retries={"max_attempts": 1}))


def write_until_killed(ddb, first, acked, attempted, stop):
    i = first
    while not stop.is_set():
        key = f"k{i}"
        attempted.add(key)
        try:
            ddb.put_item(TableName="grow", Item={"pk": {"S": key}, "pad": {"S": PAD}})
            acked.append(key)
        except Exception:
            return  # the server is gone
        i += 1


def check(ddb, acked, attempted):
    keys = [it["pk"]["S"] for it in scan_items(ddb, "grow")]
    assert len(keys) == len(set(keys)), "a Scan returned an item twice"
    missing = set(acked) - set(keys)
    assert not missing, f"acknowledged writes missing from the Scan: {sorted(missing)[:5]}"
    extra = set(keys) - attempted
    assert not extra, f"items nobody wrote: {sorted(extra)[:5]}"
    for key in random.sample(acked, min(50, len(acked))):
        r = ddb.get_item(TableName="grow", Key={"pk": {"S": key}}, ConsistentRead=True)
        assert "Item" in r, f"{key} not readable by GetItem"
    return len(keys)


def main():
    binary = sys.argv[1]
    data = tempfile.mkdtemp()
    log_path = os.path.join(data, "server.log")
    port = free_port()
    acked, attempted = [], set()
    with open(log_path, "ab") as log:
        proc, url = start(binary, data, port, log)
        ddb = client(url)
        ddb.create_table(TableName="grow", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        try:
            for rnd in range(ROUNDS):
                stop = threading.Event()
                writer = threading.Thread(target=write_until_killed,
                                          args=(ddb, len(attempted), acked, attempted, stop))
                writer.start()
                time.sleep(random.uniform(0.5, 2.0))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                stop.set()
                writer.join()
                proc, url = start(binary, data, port, log)
                ddb = client(url)
                n = check(ddb, acked, attempted)
                print(f"round {rnd + 1}: {len(acked)} acknowledged, {n} items after restart")
            # After the last restart the table keeps taking writes and splits.
            stop = threading.Event()
            writer = threading.Thread(target=write_until_killed,
                                      args=(ddb, len(attempted), acked, attempted, stop))
            writer.start()
            time.sleep(2.0)
            stop.set()
            writer.join()
            time.sleep(1.5)
            n = check(ddb, acked, attempted)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    splits = 0
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                if json.loads(line).get("fields", {}).get("message") == "partition split":
                    splits += 1
            except ValueError:
                pass
    assert splits >= ROUNDS, f"only {splits} splits logged: the rounds did not split"
    print(f"split_crash: {ROUNDS} kill -9 rounds, {len(acked)} acknowledged writes, "
          f"{n} items, {splits} splits logged, none lost")


if __name__ == "__main__":
    main()
