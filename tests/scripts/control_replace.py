"""A control-plane member that loses its disk, finds its data damaged, or
is replaced by an operator, on a local three-zone cluster.

Usage: control_replace.py <dynaraft binary>

1. Node 3 (a control member) is killed and comes back with an empty data
   directory (`cluster.sh wipe`). It must not serve the control group as
   the voter it was (it forgot what it voted and acknowledged): it says so
   in its log, asks the leader to remove it from the voters, starts its
   control replica empty and asks to be added back, while the cluster
   keeps serving (two of three voters). Its data-partition replicas, lost
   too, leave their groups' voters on their own, start empty and are added
   back by their leaders once caught up. No operator step.
2. Node 3 is stopped and one byte in the middle of its newest WAL segment
   is flipped (acknowledged entries damaged, not a torn last write). At
   start it finds the damage, sets its data directory's contents aside
   (`corrupt-<ms>` inside it) and rebuilds every replica as in 1.
3. The runbook's operator steps (deploy/README.md): node 3 is killed,
   `dynaraft admin control remove --node 3` leaves voters 1 and 2, node 3
   comes back empty and waits, `dynaraft admin control add --member 3=...`
   makes it a learner and then a voter once caught up.
4. Node 1 is stopped: the control group (now 2 and 3) still has a quorum,
   so a catalog change (tags) commits, every table made so far takes
   writes and reads back whole, and a table created now serves (its
   partitions form on nodes 2 and 3 although their placement names node 1
   first).
"""
import os
import re
import subprocess
import sys
import tempfile
import time

import boto3
from botocore.config import Config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port, free_run  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SH = os.path.join(HERE, "..", "..", "deploy", "local", "cluster.sh")
WAIT_S = 60
LOST_VOTER_LOG = "the control group still counts it as a voter"
REJOINED_LOG = "back among the control group's voters"
REJOIN_LOG = "lost replica left the voters and started empty"
SET_ASIDE_LOG = "damaged data at start-up"


def admin(binary, control, *args):
    return subprocess.run([binary, "admin", "--control", control, *args],
                          capture_output=True, text=True, timeout=60)


def wait(what, check):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def member_row(report, node):
    for line in report.splitlines():
        cols = line.split()
        if cols[:1] == [str(node)]:
            return line
    return ""


def caught_up(binary, control):
    row = member_row(admin(binary, control, "control").stdout, 3)
    cols = row.split()
    return row if len(cols) >= 7 and cols[3] in ("voter", "leader") and cols[-1] == "0" else None


def rebuilt(binary, control, log3, since):
    """Waits for node 3 to be back among the control group's voters and for
    each data replica it holds to have rejoined empty and caught up, by its
    log from byte `since` on; returns how many data replicas it holds."""
    def new_log():
        return open(log3).read()[since:]
    wait("node 3 back among the control voters", lambda: REJOINED_LOG in new_log())
    row = wait("node 3's control replica caught up", lambda: caught_up(binary, control))
    assert "voters (as the leader has them): 1,2,3" in admin(binary, control, "control").stdout
    assert row
    return data_rebuilt(binary, control, new_log)


def data_rebuilt(binary, control, new_log):
    """Waits for each data replica node 3 holds to have rejoined empty (by
    `new_log`, node 3's log since the loss) and caught up; returns how
    many it holds."""
    held = len(re.findall(r"^\S+\s+\d+\s+\S+\s+\S*3\S*\s", admin(binary, control).stdout, re.M))
    wait("node 3's lost data replicas to rejoin",
         lambda: new_log().count(REJOIN_LOG) == held)
    wait("node 3's replicas caught up", lambda: all(
        " 3:0" in line for line in admin(binary, control).stdout.splitlines()
        if re.match(r"^\S+\s+\d+\s+[0-9a-f]{16}\s", line)))
    return held


def stop_node(pid, signal="TERM"):
    subprocess.run(["kill", f"-{signal}", pid], check=True)
    wait(f"process {pid} to exit", lambda: not os.path.exists(f"/proc/{pid}"))


def flip_wal_byte(wal_dir):
    """Flips one byte a third of the way into the newest WAL segment: in a
    batch followed by later ones, so acknowledged entries are damaged."""
    segment = sorted(os.path.join(wal_dir, f) for f in os.listdir(wal_dir) if f.endswith(".log"))[-1]
    with open(segment, "r+b") as f:
        data = f.read()
        at = len(data) // 3
        f.seek(at)
        f.write(bytes([data[at] ^ 0xFF]))
    return segment, at


def create_and_write(ddb, table, n):
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    for i in range(n):
        ddb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
    got = ddb.scan(TableName=table, ConsistentRead=True)["Count"]
    assert got == n, f"{table}: {got} of {n} items"


def main():
    binary = os.path.abspath(sys.argv[1])
    root = tempfile.mkdtemp(prefix="dynaraft-control-")
    router_port, node_port = free_port(), free_run(3)
    url = f"http://127.0.0.1:{router_port}"
    try:
        subprocess.run([CLUSTER_SH, "start", binary, root, str(router_port), str(node_port),
                        "--transition-delay-ms", "0"], check=True)
        control = open(os.path.join(root, "control")).read().strip()
        node3 = next(m for m in control.split(",") if m.startswith("3="))
        ddb = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="k", aws_secret_access_key="s",
                           config=Config(retries={"mode": "standard", "max_attempts": 8}))
        create_and_write(ddb, "before", 20)
        report = admin(binary, control, "control").stdout
        assert "voters (as the leader has them): 1,2,3" in report, report
        print("control group: voters 1,2,3")

        # 1. Node 3's disk is lost.
        log3 = os.path.join(root, "node-3.log")
        since = len(open(log3).read())
        subprocess.run([CLUSTER_SH, "wipe", root, "3"], check=True)
        wait("node 3 to refuse its old vote", lambda: LOST_VOTER_LOG in open(log3).read()[since:])
        held = rebuilt(binary, control, log3, since)
        create_and_write(ddb, "while_lost", 10)
        print(f"node 3 wiped: it left the control group's voters and rejoined on its own; its {held} "
              "data replicas left their voters, rejoined empty and caught up; the cluster served throughout")

        # 2. Node 3's WAL is damaged while it is stopped.
        create_and_write(ddb, "before_damage", 30)
        pids = os.path.join(root, "pids")
        stop_node(open(pids).read().split()[2])
        segment, at = flip_wal_byte(os.path.join(root, "node-3", "wal"))
        since = len(open(log3).read())
        subprocess.run([CLUSTER_SH, "restart", root, "3"], check=True)
        wait("node 3 to set its damaged data aside", lambda: SET_ASIDE_LOG in open(log3).read())
        aside = [d for d in os.listdir(os.path.join(root, "node-3")) if d.startswith("corrupt-")]
        assert len(aside) == 1, os.listdir(os.path.join(root, "node-3"))
        held = rebuilt(binary, control, log3, since)
        print(f"node 3's WAL damaged ({os.path.basename(segment)}, byte {at}): it set its data aside "
              f"({aside[0]}) and rebuilt its control replica and {held} data replicas from the other zones")

        # 3. The operator replaces node 3 by the runbook.
        stop_node(open(pids).read().split()[2], "KILL")
        out = admin(binary, control, "control", "remove", "--node", "3")
        assert out.returncode == 0 and "voters now: 1,2" in out.stdout, (out.stdout, out.stderr)
        print(f"remove: {out.stdout.strip()}")
        since = len(open(log3).read())
        subprocess.run([CLUSTER_SH, "wipe", root, "3"], check=True)
        wait("node 3 to start", lambda: "storage node running" in open(log3).read()[since:])
        out = admin(binary, control, "control", "add", "--member", node3)
        assert out.returncode == 0 and "voters now: 1,2,3" in out.stdout, (out.stdout, out.stderr)
        row = wait("node 3 to be a voter caught up", lambda: caught_up(binary, control))
        assert LOST_VOTER_LOG not in open(log3).read()[since:], "node 3 took itself for a lost voter"
        data_rebuilt(binary, control, lambda: open(log3).read()[since:])
        print(f"add: {out.stdout.strip()}; {' '.join(row.split())}")
        # The same change again is refused, with the reason.
        again = admin(binary, control, "control", "add", "--member", node3)
        assert again.returncode != 0 and "already a voter" in again.stderr, (again.stdout, again.stderr)

        # 4. Node 1 stops: 2 and 3 are a quorum of the control group.
        subprocess.run(["kill", "-TERM", open(os.path.join(root, "pids")).read().split()[0]], check=True)
        arn = ddb.describe_table(TableName="before")["Table"]["TableArn"]
        ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "replaced", "Value": "node-3"}])
        tags = ddb.list_tags_of_resource(ResourceArn=arn)["Tags"]
        assert tags == [{"Key": "replaced", "Value": "node-3"}], tags
        for table, n in (("before", 20), ("while_lost", 10), ("before_damage", 30)):
            for i in range(n, n + 5):
                ddb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
            got = ddb.scan(TableName=table, ConsistentRead=True)["Count"]
            assert got == n + 5, f"{table}: {got} of {n + 5}"
        # A table made now: its partitions' placement names node 1 (down)
        # first; the other replicas initialise them after waiting for it.
        started = time.time()
        create_and_write(ddb, "after", 10)
        print("node 1 stopped: a catalog change committed by the control group on nodes 2 and 3; "
              "every table written and read back whole; a new table created and written in "
              f"{time.time() - started:.1f} s")
        # No node's Raft met a follower whose log went backwards (openraft
        # asserts that in debug builds: an empty replica served as a voter).
        for n in (1, 2, 3):
            text = open(os.path.join(root, f"node-{n}.log")).read()
            assert "panicked at" not in text, f"node {n} panicked: see {root}/node-{n}.log"
    finally:
        subprocess.run([CLUSTER_SH, "stop", root], check=False)


if __name__ == "__main__":
    main()
