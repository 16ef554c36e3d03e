"""A global table between two regions, with the AWS CLI, and kill -9 of each
region while both are written.

Usage: global_session.py <dynaraft binary> <aws binary>. Starts two embedded
servers on their own data directories as regions us-east-1 and eu-west-1,
each the other's --peer-region. With the AWS CLI: creates a table in
us-east-1, writes items, adds a replica with `update-table
--replica-updates`, waits for it to be ACTIVE, reads an item in eu-west-1,
writes one there and reads it back in us-east-1. Then boto3 writers write
distinct keys in both regions while each region in turn is killed with
SIGKILL and restarted on its data; at the end both regions hold the same
items, every acknowledged write among them.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from ports import client, free_port, start_embedded

EAST, WEST = "us-east-1", "eu-west-1"
TABLE = "Orders"
CONVERGE_S = 60


class Region:
    def __init__(self, binary, root, name, port, peer, peer_port):
        self.binary, self.name, self.port = binary, name, port
        self.data = os.path.join(root, name)
        self.flags = ["--shared-db", "--region", name,
                      "--peer-region", f"{peer}=http://127.0.0.1:{peer_port}"]
        self.proc, self.url = None, None

    def start(self):
        self.proc, self.url = start_embedded(self.binary, self.data, self.port, *self.flags)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def aws(cli, region, *args):
    out = subprocess.run([cli, "dynamodb", "--endpoint-url", region.url, "--region", region.name,
                          "--output", "json", *args],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "AWS_ACCESS_KEY_ID": "local",
                              "AWS_SECRET_ACCESS_KEY": "local"})
    assert out.returncode == 0, f"aws {' '.join(args)}: {out.stderr}"
    return json.loads(out.stdout) if out.stdout.strip() else {}


def wait_for(what, check, timeout_s=CONVERGE_S):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def contents(url, region):
    ddb, items, start = client(url, region), {}, None
    while True:
        kw = {"TableName": TABLE, "ConsistentRead": True}
        if start:
            kw["ExclusiveStartKey"] = start
        page = ddb.scan(**kw)
        for i in page["Items"]:
            items[i["pk"]["S"]] = i["v"]["S"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def cli_session(cli, east, west):
    aws(cli, east, "create-table", "--table-name", TABLE,
        "--attribute-definitions", "AttributeName=pk,AttributeType=S",
        "--key-schema", "AttributeName=pk,KeyType=HASH", "--billing-mode", "PAY_PER_REQUEST")
    for i in range(20):
        aws(cli, east, "put-item", "--table-name", TABLE,
            "--item", json.dumps({"pk": {"S": f"before-{i}"}, "v": {"S": "east"}}))
    out = aws(cli, east, "update-table", "--table-name", TABLE,
              "--replica-updates", json.dumps([{"Create": {"RegionName": WEST}}]))
    replicas = out["TableDescription"]["Replicas"]
    assert replicas[0]["RegionName"] == WEST, replicas
    wait_for("the replica to be ACTIVE", lambda: aws(
        cli, east, "describe-table", "--table-name", TABLE)["Table"]["Replicas"][0]
        ["ReplicaStatus"] == "ACTIVE")
    west_table = aws(cli, west, "describe-table", "--table-name", TABLE)["Table"]
    assert west_table["GlobalTableVersion"] == "2019.11.21", west_table
    assert west_table["Replicas"] == [{"RegionName": EAST, "ReplicaStatus": "ACTIVE"}], west_table
    key = json.dumps({"pk": {"S": "before-7"}})
    wait_for("a copied item in eu-west-1", lambda: aws(
        cli, west, "get-item", "--table-name", TABLE, "--key", key).get("Item"))
    aws(cli, west, "put-item", "--table-name", TABLE,
        "--item", json.dumps({"pk": {"S": "from-west"}, "v": {"S": "west"}}))
    key = json.dumps({"pk": {"S": "from-west"}})
    wait_for("eu-west-1's write in us-east-1", lambda: aws(
        cli, east, "get-item", "--table-name", TABLE, "--key", key).get("Item"))


def writer(region, prefix, acked, stop):
    i = 0
    while not stop.is_set():
        try:
            client(region.url, region.name).put_item(
                TableName=TABLE, Item={"pk": {"S": f"{prefix}{i}"}, "v": {"S": region.name}})
            acked.append(f"{prefix}{i}")
        except Exception:
            time.sleep(0.05)  # killed or restarting: the write was not acknowledged
        i += 1


def main():
    binary, cli = sys.argv[1], sys.argv[2]
    root = tempfile.mkdtemp()
    pe, pw = free_port(), free_port()
    east = Region(binary, root, EAST, pe, WEST, pw)
    west = Region(binary, root, WEST, pw, EAST, pe)
    east.start()
    west.start()
    try:
        cli_session(cli, east, west)
        stop = threading.Event()
        acked_east, acked_west = [], []
        threads = [threading.Thread(target=writer, args=(east, "e", acked_east, stop)),
                   threading.Thread(target=writer, args=(west, "w", acked_west, stop))]
        for t in threads:
            t.start()
        for victim in (west, east, west):
            time.sleep(1.5)
            victim.kill9()
            time.sleep(0.5)
            victim.start()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
        acked = set(acked_east) | set(acked_west)
        assert acked_east and acked_west, "no write was acknowledged"

        def converged():
            e, w = contents(east.url, EAST), contents(west.url, WEST)
            return e == w and acked <= set(e)

        wait_for("both regions to hold every acknowledged write", converged)
        print(f"global session: ok ({len(acked_east)} writes acknowledged in {EAST}, "
              f"{len(acked_west)} in {WEST}, 3 kill -9)")
    finally:
        east.stop()
        west.stop()


if __name__ == "__main__":
    main()
