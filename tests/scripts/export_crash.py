"""Exports and imports survive kill -9 of the server while they run.

Usage: export_crash.py <dynaraft binary>. Starts the embedded server on a
fresh data directory (two partitions per table; exports go to the
directory object store under it), fills a table with point-in-time
recovery on, notes a moment T, and changes the table after it. Then, round
after round: an export at T is requested and the process killed with
SIGKILL a moment later (while the snapshot is copied or its files are
written); after the restart the export must finish on its own (its job and
progress are in the replicated catalog), its data files must hold exactly
the table at T, and nothing else may be listed in its manifest. The
export's files are then imported, with a kill in the same way; the import
must finish on its own into a table equal to the table at T, counting each
item once.
"""
import gzip
import json
import os
import random
import signal
import sys
import time

from ports import client, job_done, run_restarting, scan_items

ROUNDS = 3
ITEMS = 3000
CHANGED_AFTER = 300
PAD = "x" * 300
KILL_WITHIN_S = 0.6
SETTLE_WITHIN_S = 90
TABLE = "exported"
BUCKET = "bkt"


def item(i, v):
    return {"pk": {"S": f"k{i:05}"}, "v": {"N": str(v)}, "pad": {"S": PAD}}


def wait_for(what, look):
    deadline = time.time() + SETTLE_WITHIN_S
    while time.time() < deadline:
        try:
            got = look()
        except Exception:  # noqa: BLE001 - the server is still starting
            got = None
        if got is not None:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {SETTLE_WITHIN_S} s: {what}")


def exported_items(bucket_dir, manifest_key):
    """The items of an export's data files, as its manifests list them."""
    summary = json.load(open(os.path.join(bucket_dir, manifest_key)))
    items = {}
    for line in open(os.path.join(bucket_dir, summary["manifestFilesS3Key"])):
        f = json.loads(line)
        with gzip.open(os.path.join(bucket_dir, f["dataFileS3Key"])) as data:
            lines = data.read().decode().splitlines()
        assert len(lines) == f["itemCount"], (f, len(lines))
        for raw in lines:
            it = json.loads(raw)["Item"]
            key = it["pk"]["S"]
            assert key not in items, f"{key} exported twice"
            items[key] = it
    assert summary["itemCount"] == len(items), (summary["itemCount"], len(items))
    return items


def plain(it):
    """A boto3 item (B as bytes) or an export's JSON item as one shape."""
    return {k: json.dumps(v, sort_keys=True) for k, v in it.items()}


def differences(got, want):
    """How `got` differs from `want`, for a failure message: counts and a
    few keys of each kind (what the value is where they differ)."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    shown = [(k, got[k].get("v"), want[k].get("v")) for k in changed[:5]]
    return (f"{len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]}, "
            f"{len(changed)} changed (key, got v, want v) {shown}")


def main():
    run_restarting(sys.argv[1], run, "--partitions-per-table", "2")


def kill(proc):
    time.sleep(random.uniform(0, KILL_WITHIN_S))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def run(start, data):
    bucket_dir = os.path.join(data, "objects", BUCKET)
    proc, url = start()
    os.makedirs(bucket_dir, exist_ok=True)
    ddb = client(url)
    ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    ddb.update_continuous_backups(
        TableName=TABLE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    for i in range(ITEMS):
        ddb.put_item(TableName=TABLE, Item=item(i, 1))
    time.sleep(0.05)
    t = time.time()
    expected = {it["pk"]["S"]: plain(it) for it in scan_items(ddb, TABLE)}
    time.sleep(0.05)
    for i in range(CHANGED_AFTER):
        ddb.put_item(TableName=TABLE, Item=item(i, 2))
        ddb.delete_item(TableName=TABLE, Key={"pk": {"S": f"k{ITEMS - 1 - i:05}"}})
    arn = ddb.describe_table(TableName=TABLE)["Table"]["TableArn"]
    killed_running = exports_cut = 0
    for rnd in range(ROUNDS):
        made = ddb.export_table_to_point_in_time(TableArn=arn, S3Bucket=BUCKET,
                                                 S3Prefix=f"round{rnd}", ExportTime=t)
        export_arn = made["ExportDescription"]["ExportArn"]
        kill(proc)
        exports_cut += not os.path.exists(os.path.join(
            bucket_dir, f"round{rnd}", "AWSDynamoDB", export_arn.rsplit("/", 1)[1],
            "manifest-summary.json"))
        proc, url = start()
        ddb = client(url)
        done = wait_for("export finished", lambda: job_done(ddb, "export", export_arn))
        assert done["ExportStatus"] == "COMPLETED", done
        got = {k: plain(v) for k, v in exported_items(bucket_dir, done["ExportManifest"]).items()}
        assert got == expected, (
            f"round {rnd + 1}: the export differs from the table at T: {differences(got, expected)}")

        folder = done["ExportManifest"].rsplit("/", 1)[0]
        target = f"imported{rnd}"
        made = ddb.import_table(
            S3BucketSource={"S3Bucket": BUCKET, "S3KeyPrefix": f"{folder}/data/"},
            InputFormat="DYNAMODB_JSON", InputCompressionType="GZIP",
            TableCreationParameters={
                "TableName": target, "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]})
        import_arn = made["ImportTableDescription"]["ImportArn"]
        before = ddb.describe_import(ImportArn=import_arn)["ImportTableDescription"]["ImportStatus"]
        kill(proc)
        killed_running += before == "IN_PROGRESS"
        proc, url = start()
        ddb = client(url)
        done = wait_for("import finished", lambda: job_done(ddb, "import", import_arn))
        assert done["ImportStatus"] == "COMPLETED", done
        assert (done["ImportedItemCount"], done["ErrorCount"]) == (len(expected), 0), done
        table = {it["pk"]["S"]: plain(it) for it in scan_items(ddb, target)}
        # boto3 gives B as bytes; the table has none, so the shapes match.
        assert table == expected, (
            f"round {rnd + 1}: the imported table differs from T: {differences(table, expected)}")
        print(f"round {rnd + 1}: export and import each killed once; "
              f"{len(expected)} items exported as of T and imported back equal")
    assert exports_cut + killed_running > 0, "no kill cut an export or an import short"
    print(f"export_crash: {ROUNDS} rounds, {2 * ROUNDS} kill -9s ({exports_cut} before an "
          f"export's manifests, {killed_running} with the import running), every one exact")


if __name__ == "__main__":
    main()
