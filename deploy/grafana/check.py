"""Checks the Grafana dashboard and its provisioning files offline.

Usage: check.py <dynaraft binary>

1. The provisioning files are in Grafana's format (apiVersion 1, a file
   provider with a path, a Prometheus data source with a uid).
2. The dashboard JSON is one Grafana loads: a uid, title and schemaVersion,
   unique panel ids, panels on the 24-column grid without overlaps, every
   query against the `${datasource}` variable, unique refIds, template
   variables that exist, balanced PromQL brackets and quotes.
3. Every metric a query names is one dynaraft serves: an embedded server on
   disk is driven through a workload that moves the families (provisioned
   table throttled, a global index, Query and Scan, a failed condition, an
   expired item deleted by time to live) and each name must be in its
   /metrics, unless it is listed in EVENT_ONLY with the event it needs, and
   then it must be a name the sources record.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "scripts"))
import ports  # noqa: E402

# Families that exist only after an event this check does not cause.
EVENT_ONLY = {
    "dynaraft_contributor_insights_key_requests": "a completed minute with Contributor Insights on",
    "dynaraft_online_index_percentage_progress": "a global index being backfilled",
    "dynaraft_replication_lag_ms": "a global table (replicas in other regions)",
    "dynaraft_partition_splits_total": "a split (cluster)",
    "dynaraft_replica_moves_total": "a replica move (cluster)",
    "dynaraft_leader_transfers_total": "a leader transfer (cluster)",
    "dynaraft_system_errors_total": "a 5xx answer",
    "dynaraft_transaction_conflict_total": "a transaction conflict",
    "dynaraft_requests_unavailable_total": "a request the cluster could not serve",
}
GRID_COLUMNS = 24
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check_provisioning():
    with open(os.path.join(HERE, "provisioning", "dashboards", "dynaraft.yaml")) as f:
        prov = yaml.safe_load(f)
    if prov.get("apiVersion") != 1 or not prov.get("providers"):
        fail("dashboards provisioning: apiVersion 1 with providers")
    for p in prov["providers"]:
        if p.get("type") != "file" or not p.get("options", {}).get("path") or not p.get("name"):
            fail(f"dashboards provider {p}: a named file provider with options.path")
    with open(os.path.join(HERE, "provisioning", "datasources", "prometheus.yaml")) as f:
        ds = yaml.safe_load(f)
    if ds.get("apiVersion") != 1 or not ds.get("datasources"):
        fail("datasources provisioning: apiVersion 1 with datasources")
    for d in ds["datasources"]:
        if d.get("type") != "prometheus" or not d.get("uid") or not d.get("url"):
            fail(f"data source {d}: prometheus with a uid and url")


def balanced(expr):
    pairs = {")": "(", "]": "[", "}": "{"}
    stack, quote = [], None
    for ch in expr:
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and quote is None


def check_dashboard():
    with open(os.path.join(HERE, "dashboards", "dynaraft.json")) as f:
        dash = json.load(f)
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time"):
        if key not in dash:
            fail(f"dashboard has no {key}")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
        fail("a `datasource` variable of Prometheus data sources")
    exprs = []
    for v in variables.values():
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            exprs.append((f"variable {v['name']}", q))
    ids, cells = set(), set()
    for p in dash["panels"]:
        if p["id"] in ids:
            fail(f"panel id {p['id']} twice")
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > GRID_COLUMNS or g["h"] < 1:
            fail(f"panel {p['title']}: gridPos {g} off the grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    fail(f"panel {p['title']} overlaps another at {(x, y)}")
                cells.add((x, y))
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"panel {p['title']}: not on the ${{datasource}} variable")
        refs = [t["refId"] for t in p["targets"]]
        if len(set(refs)) != len(refs) or not refs:
            fail(f"panel {p['title']}: refIds {refs}")
        for t in p["targets"]:
            exprs.append((p["title"], t["expr"]))
    for where, e in exprs:
        if not balanced(e):
            fail(f"{where}: unbalanced brackets or quotes in {e}")
        for var in re.findall(r"\$\{?(\w+)", e):
            if var not in variables and var not in BUILTIN_VARIABLES:
                fail(f"{where}: no variable ${var}")
    return exprs


def workload(url):
    cfg = Config(retries={"max_attempts": 1})
    c = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id="k", aws_secret_access_key="s", config=cfg)
    c.create_table(
        TableName="dash", BillingMode="PROVISIONED",
        ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "g", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "by_g", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
            "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 400}}])
    c.update_time_to_live(TableName="dash", TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    # A failed condition, while the table still has capacity.
    c.put_item(TableName="dash", Item={"pk": {"S": "cond"}})
    try:
        c.put_item(TableName="dash", Item={"pk": {"S": "cond"}}, ConditionExpression="attribute_not_exists(pk)")
        fail("the condition did not fail")
    except ClientError as e:
        if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
    throttled = 0
    for i in range(400):
        item = {"pk": {"S": f"k{i}"}, "g": {"S": "x"}}
        if i == 0:
            item["ttl"] = {"N": str(int(time.time()) - 60)}
        try:
            c.put_item(TableName="dash", Item=item)
        except ClientError as e:
            if e.response["Error"]["Code"] != "ProvisionedThroughputExceededException":
                raise
            throttled += 1
    if not throttled:
        fail("400 writes at 1 WCU were never throttled")
    c.query(TableName="dash", IndexName="by_g", KeyConditionExpression="g = :g",
            ExpressionAttributeValues={":g": {"S": "x"}}, Limit=5)
    c.scan(TableName="dash", Limit=5)
    try:
        c.get_item(TableName="nosuch", Key={"pk": {"S": "a"}})
    except ClientError:
        pass
    # Time to live deletes the expired item within a few sweeps.
    deadline = time.time() + 20
    while time.time() < deadline:
        if "Item" not in c.get_item(TableName="dash", Key={"pk": {"S": "k0"}}):
            return
        time.sleep(0.5)
    fail("the expired item was not deleted by time to live")


def served_families(binary):
    data = tempfile.mkdtemp()
    proc, url = ports.start_embedded(binary, data, ports.free_port())
    try:
        workload(url)
        time.sleep(1.5)  # one more node-metrics round
        text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


def recorded_in_sources(name):
    for d, _, files in os.walk(os.path.join(ROOT, "crates")):
        for f in files:
            if f.endswith(".rs") and f'"{name}"' in open(os.path.join(d, f)).read():
                return True
    return False


def main():
    if len(sys.argv) != 2:
        fail(__doc__)
    check_provisioning()
    exprs = check_dashboard()
    names = set()
    for _, e in exprs:
        for n in re.findall(r"\bdynaraft_[a-z0-9_]+", e):
            names.add(re.sub(r"_(bucket|count|sum)$", "", n) if n.endswith(("_bucket", "_count", "_sum")) else n)
    served = served_families(sys.argv[1])
    for n in sorted(names):
        if n in served:
            continue
        if n in EVENT_ONLY and recorded_in_sources(n):
            print(f"  {n}: not served in this run (needs {EVENT_ONLY[n]}); recorded in the sources")
            continue
        fail(f"the dashboard queries {n}, which dynaraft does not serve")
    print(f"grafana: {len(exprs)} queries, {len(names)} metrics, "
          f"{len(names & served)} served in this run, provisioning files well formed")


if __name__ == "__main__":
    main()
