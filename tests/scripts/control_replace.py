"""Replacing a control-plane member that lost its disk, as the runbook in
deploy/README.md does it, on a local three-zone cluster.

Usage: control_replace.py <dynaraft binary>

1. Node 3 (a control member) is killed and comes back with an empty data
   directory (`cluster.sh wipe`). It must not serve the control group as
   the voter it was (it forgot what it voted and acknowledged): it says so
   in its log and holds no control replica, while the cluster keeps
   serving (two of three voters). Its data-partition replicas, lost too,
   leave their groups' voters on their own, start empty and are added
   back by their leaders once caught up.
2. `dynaraft admin control remove --node 3`: the voters are 1 and 2; node 3
   starts an empty control replica on its own.
3. `dynaraft admin control add --member 3=...`: node 3 joins as a learner,
   catches up and becomes a voter; `admin control` shows it caught up.
4. Node 1 is stopped: the control group (now 2 and 3) still has a quorum,
   so a catalog change (tags) commits, both tables (the one made before
   the loss, the one made while node 3 was lost) take writes and read back
   whole, and a table created now serves (its partitions form on nodes 2
   and 3 although their placement names node 1 first).
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
REJOINED_LOG = "removed from the control group's voters"
REJOIN_LOG = "lost replica left the voters and started empty"


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
        subprocess.run([CLUSTER_SH, "wipe", root, "3"], check=True)
        log3 = os.path.join(root, "node-3.log")
        wait("node 3 to refuse its old vote", lambda: LOST_VOTER_LOG in open(log3).read())
        report = admin(binary, control, "control").stdout
        assert "no control replica" in member_row(report, 3), report
        # Its data replicas leave their groups' voters, start empty, and
        # are added back by their leaders once caught up.
        held = len(re.findall(r"^\S+\s+\d+\s+\S+\s+\S*3\S*\s", admin(binary, control).stdout, re.M))
        wait("node 3's lost data replicas to rejoin",
             lambda: open(log3).read().count(REJOIN_LOG) == held)
        wait("node 3's replicas caught up", lambda: all(
            " 3:0" in line for line in admin(binary, control).stdout.splitlines()
            if re.match(r"^\S+\s+\d+\s+[0-9a-f]{16}\s", line)))
        create_and_write(ddb, "while_lost", 10)
        print(f"node 3 wiped: it holds no control replica and says why; its {held} data replicas left "
              "their voters, rejoined empty and caught up; the cluster still serves")

        # 2. Remove it from the voters.
        out = admin(binary, control, "control", "remove", "--node", "3")
        assert out.returncode == 0 and "voters now: 1,2" in out.stdout, (out.stdout, out.stderr)
        wait("node 3's empty control replica", lambda: REJOINED_LOG in open(log3).read())
        print(f"remove: {out.stdout.strip()}; node 3 started an empty control replica")

        # 3. Add it back: a learner, then a voter once caught up.
        out = admin(binary, control, "control", "add", "--member", node3)
        assert out.returncode == 0 and "voters now: 1,2,3" in out.stdout, (out.stdout, out.stderr)

        def caught_up():
            row = member_row(admin(binary, control, "control").stdout, 3)
            cols = row.split()
            return row if len(cols) >= 7 and cols[3] in ("voter", "leader") and cols[-1] == "0" else None
        row = wait("node 3 to be a voter caught up", caught_up)
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
        for table, n in (("before", 20), ("while_lost", 10)):
            for i in range(n, n + 5):
                ddb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
            got = ddb.scan(TableName=table, ConsistentRead=True)["Count"]
            assert got == n + 5, f"{table}: {got} of {n + 5}"
        # A table made now: its partitions' placement names node 1 (down)
        # first; the other replicas initialise them after waiting for it.
        started = time.time()
        create_and_write(ddb, "after", 10)
        print("node 1 stopped: a catalog change committed by the control group on nodes 2 and 3; "
              "both tables written and read back whole; a new table created and written in "
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
