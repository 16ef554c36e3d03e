"""Exports to and imports from an S3-compatible object store, with boto3.

Usage: s3_session.py <dynaraft binary> <moto_server binary>. Starts moto's
S3 server and the embedded server with `--object-store` at it, then as a
user would: a table with point-in-time recovery, a moment T noted in a
quiet gap, changes after it, ExportTableToPointInTime at T into a bucket
(the objects read back through boto3's S3 client: DynamoDB's layout, the
manifests' counts and checksums those of the data files), ImportTable of
the data files into a new table, which must equal the table at T item for
item; then an export and an import naming a bucket that does not exist
fail with S3NoSuchBucket, and the failed import leaves no table.
"""
import base64
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import boto3

from ports import client, free_port, job_done, scan_items, start_embedded

ITEMS = 200
CHANGED_AFTER = 40
GAP_S = 0.05
SETTLE_WITHIN_S = 60
BUCKET = "dynaraft-exports"
TABLE = "inventory"
KEYS = {"AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto"}


def wait_until(what, f):
    deadline = time.time() + SETTLE_WITHIN_S
    while time.time() < deadline:
        got = f()
        if got is not None:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {SETTLE_WITHIN_S} s")


def item(i, v):
    return {
        "pk": {"S": f"item-{i:04}"},
        "n": {"N": f"{v}.5"},
        "b": {"B": bytes([0, i % 256, 255])},
        "tags": {"SS": ["x", f"t{i % 7}"]},
        "doc": {"M": {"l": {"L": [{"S": "a"}, {"N": str(i)}, {"NULL": True}]},
                      "ok": {"BOOL": i % 2 == 0}}},
    }


def finished(ddb, kind, arn):
    return wait_until(f"{kind} {arn}", lambda: job_done(ddb, kind, arn))


def creation(name):
    return {"TableName": name, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]}


def session(ddb, s3):
    s3.create_bucket(Bucket=BUCKET)
    ddb.create_table(**creation(TABLE))
    ddb.update_continuous_backups(
        TableName=TABLE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    for i in range(ITEMS):
        ddb.put_item(TableName=TABLE, Item=item(i, 1))
    time.sleep(GAP_S)
    t = time.time()
    expected = {i["pk"]["S"]: i for i in scan_items(ddb, TABLE)}
    time.sleep(GAP_S)
    for i in range(CHANGED_AFTER):
        ddb.put_item(TableName=TABLE, Item=item(i, 2))
        ddb.delete_item(TableName=TABLE, Key={"pk": {"S": f"item-{ITEMS - 1 - i:04}"}})
        ddb.put_item(TableName=TABLE, Item=item(ITEMS + i, 1))
    arn = ddb.describe_table(TableName=TABLE)["Table"]["TableArn"]

    made = ddb.export_table_to_point_in_time(TableArn=arn, S3Bucket=BUCKET, S3Prefix="daily",
                                             ExportTime=t)["ExportDescription"]
    done = finished(ddb, "export", made["ExportArn"])
    assert done["ExportStatus"] == "COMPLETED", done
    assert done["ItemCount"] == ITEMS, done
    summary_key = done["ExportManifest"]
    export_id = made["ExportArn"].rsplit("/", 1)[1]
    assert summary_key == f"daily/AWSDynamoDB/{export_id}/manifest-summary.json", summary_key
    get = lambda k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()  # noqa: E731
    summary = json.loads(get(summary_key))
    assert summary["itemCount"] == ITEMS and summary["exportArn"] == made["ExportArn"], summary
    counted = 0
    for line in get(summary["manifestFilesS3Key"]).decode().splitlines():
        f = json.loads(line)
        data = get(f["dataFileS3Key"])
        assert f["md5Checksum"] == base64.b64encode(hashlib.md5(data).digest()).decode()
        head = s3.head_object(Bucket=BUCKET, Key=f["dataFileS3Key"])
        assert head["ETag"].strip('"') == f["etag"], (head["ETag"], f)
        counted += sum(1 for _ in gzip.decompress(data).splitlines())
    assert counted == ITEMS, counted
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"daily/AWSDynamoDB/{export_id}/")
    names = sorted(o["Key"].rsplit("/", 1)[1] for o in listed["Contents"])
    for n in ["_started", "manifest-files.json", "manifest-files.md5",
              "manifest-summary.json", "manifest-summary.md5"]:
        assert n in names, names

    made = ddb.import_table(
        S3BucketSource={"S3Bucket": BUCKET, "S3KeyPrefix": f"daily/AWSDynamoDB/{export_id}/data/"},
        InputFormat="DYNAMODB_JSON", InputCompressionType="GZIP",
        TableCreationParameters=creation("inventory-copy"))["ImportTableDescription"]
    done = finished(ddb, "import", made["ImportArn"])
    assert done["ImportStatus"] == "COMPLETED", done
    assert (done["ImportedItemCount"], done["ErrorCount"]) == (ITEMS, 0), done
    got = {i["pk"]["S"]: i for i in scan_items(ddb, "inventory-copy")}
    assert got == expected, "the imported table differs from the table at T"
    print(f"s3: exported {ITEMS} items at T (after which {3 * CHANGED_AFTER} writes), "
          f"imported them back equal")

    made = ddb.export_table_to_point_in_time(TableArn=arn, S3Bucket="no-such-bucket")
    done = finished(ddb, "export", made["ExportDescription"]["ExportArn"])
    assert (done["ExportStatus"], done.get("FailureCode")) == ("FAILED", "S3NoSuchBucket"), done
    made = ddb.import_table(S3BucketSource={"S3Bucket": "no-such-bucket"},
                            InputFormat="DYNAMODB_JSON",
                            TableCreationParameters=creation("nowhere"))
    done = finished(ddb, "import", made["ImportTableDescription"]["ImportArn"])
    assert (done["ImportStatus"], done.get("FailureCode")) == ("FAILED", "S3NoSuchBucket"), done
    tables = ddb.list_tables()["TableNames"]
    assert tables == ["inventory", "inventory-copy"], tables
    print("s3: a bucket that does not exist fails the export and the import (no table left)")


def main():
    binary, moto = sys.argv[1], sys.argv[2]
    os.environ.update(KEYS)
    s3_port = free_port()
    moto_proc = subprocess.Popen([moto, "-p", str(s3_port)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    server = None
    try:
        s3_url = f"http://127.0.0.1:{s3_port}"
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", **{
            "aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"]})
        def up():
            try:
                s3.list_buckets()
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return None
        wait_until("moto's S3", up)
        with tempfile.TemporaryDirectory() as data:
            server, url = start_embedded(binary, data, free_port(), "--object-store", s3_url)
            ddb = client(url)
            session(ddb, s3)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        moto_proc.kill()
        moto_proc.wait()


if __name__ == "__main__":
    main()
