"""A realistic boto3 session against a real dynaraft process.

Usage: boto3_session.py <dynaraft binary>. Checks what boto3 users touch:
resource API, waiters, conditions from boto3.dynamodb.conditions,
paginators, batch_writer, Decimal numbers, ClientError codes, a local
secondary index, and a DynamoDB Streams consumer (the README's example).
"""
import decimal
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError


def start(binary):
    if os.environ.get("DYNARAFT_URL"):
        # A running cluster: use it as it is.
        return None, os.environ["DYNARAFT_URL"]
    data = tempfile.mkdtemp()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([binary, "embedded", "--port", str(port), "--data-dir", data,
                             "--transition-delay-ms", "200"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/")
            break
        except OSError:
            time.sleep(0.1)
    return proc, url


def read_stream(streams, table_name):
    """Every record of the table's latest stream, shard by shard, oldest
    first (the README's DynamoDB Streams example)."""
    arn = streams.list_streams(TableName=table_name)["Streams"][0]["StreamArn"]
    records = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=100)
            records += page["Records"]
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return records


def streams_session(session, ddb, url):
    events = ddb.create_table(
        TableName="Events",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        BillingMode="PAY_PER_REQUEST")
    events.wait_until_exists()
    for i in range(5):
        events.put_item(Item={"id": f"e{i}", "n": i})
    events.update_item(Key={"id": "e1"}, UpdateExpression="SET n = :n",
                       ExpressionAttributeValues={":n": 10})
    events.delete_item(Key={"id": "e2"})
    streams = session.client("dynamodbstreams", endpoint_url=url)
    records = read_stream(streams, "Events")
    seen = sorted((r["dynamodb"]["Keys"]["id"]["S"], r["eventName"]) for r in records)
    expected = sorted([(f"e{i}", "INSERT") for i in range(5)] + [("e1", "MODIFY"), ("e2", "REMOVE")])
    assert seen == expected, seen
    modify = next(r for r in records if r["eventName"] == "MODIFY")
    assert modify["dynamodb"]["OldImage"]["n"] == {"N": "1"}, modify
    assert modify["dynamodb"]["NewImage"]["n"] == {"N": "10"}, modify
    events.delete()
    events.wait_until_not_exists()


def partiql_session(client):
    """PartiQL through boto3: a Query-shaped SELECT paged by NextToken, an UPDATE's RETURNING, an INSERT of a key that
    exists, a transaction cancelled by a false EXISTS."""
    ask = dict(Statement='SELECT order_id FROM "Orders" WHERE customer = ? AND order_id > ? ORDER BY order_id DESC',
               Parameters=[{"S": "c1"}, {"N": "30"}], Limit=2)
    ids, pages = [], 0
    while True:
        page = client.execute_statement(**ask)
        ids += [int(i["order_id"]["N"]) for i in page["Items"]]
        pages += 1
        if "NextToken" not in page:
            break
        ask["NextToken"] = page["NextToken"]
    assert ids == list(range(58, 30, -3)) and pages == 6, (ids, pages)
    r = client.execute_statement(
        Statement='UPDATE "Orders" SET points = 5 SET tags = list_append(tags, [\'vip\']) '
                  "WHERE customer = 'c0' AND order_id = 0 RETURNING MODIFIED NEW *")
    assert r["Items"] == [{"points": {"N": "5"}, "tags": {"L": [{"S": "rush"}, {"S": "vip"}]}}], r
    try:
        client.execute_statement(Statement="INSERT INTO \"Orders\" VALUE {'customer': 'c0', 'order_id': 0}")
        raise AssertionError("INSERT of an existing key should fail")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "DuplicateItemException", e.response
    try:
        client.execute_transaction(TransactStatements=[
            {"Statement": "INSERT INTO \"Orders\" VALUE {'customer': 'p9', 'order_id': 1}"},
            {"Statement": "EXISTS(SELECT * FROM \"Orders\" WHERE customer = 'c0' AND order_id = 0 AND points > 5)"}])
        raise AssertionError("a false EXISTS should cancel the transaction")
    except ClientError as e:
        reasons = [r["Code"] for r in e.response["CancellationReasons"]]
        assert reasons == ["None", "ConditionalCheckFailed"], e.response
    got = client.execute_statement(Statement="SELECT * FROM \"Orders\" WHERE customer = 'p9' AND order_id = 1")
    assert got["Items"] == [], got
    client.execute_statement(Statement="UPDATE \"Orders\" REMOVE points, tags WHERE customer = 'c0' AND order_id = 0")


def main():
    proc, url = start(sys.argv[1])
    try:
        session = boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local",
                                        region_name="us-east-1")
        ddb = session.resource("dynamodb", endpoint_url=url)
        client = session.client("dynamodb", endpoint_url=url)
        table = ddb.create_table(
            TableName="Orders",
            KeySchema=[{"AttributeName": "customer", "KeyType": "HASH"},
                       {"AttributeName": "order_id", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "customer", "AttributeType": "S"},
                                  {"AttributeName": "order_id", "AttributeType": "N"},
                                  {"AttributeName": "total", "AttributeType": "N"}],
            LocalSecondaryIndexes=[{
                "IndexName": "by_total",
                "KeySchema": [{"AttributeName": "customer", "KeyType": "HASH"},
                              {"AttributeName": "total", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status"]}}],
            BillingMode="PAY_PER_REQUEST")
        table.wait_until_exists()
        table.reload()
        assert table.table_status == "ACTIVE", table.table_status

        with table.batch_writer() as batch:
            for i in range(60):
                batch.put_item(Item={"customer": f"c{i % 3}", "order_id": i,
                                     "total": decimal.Decimal("19.99") * i, "status": "NEW"})

        got = table.get_item(Key={"customer": "c1", "order_id": 4}, ConsistentRead=True)["Item"]
        assert got["total"] == decimal.Decimal("79.96"), got

        r = table.query(KeyConditionExpression=Key("customer").eq("c0") & Key("order_id").between(10, 20))
        assert [int(i["order_id"]) for i in r["Items"]] == [12, 15, 18], r["Items"]

        r = table.query(KeyConditionExpression=Key("customer").eq("c2"),
                        FilterExpression=Attr("total").gt(500), ScanIndexForward=False)
        assert all(i["total"] > 500 for i in r["Items"]) and r["Count"] < r["ScannedCount"], r

        table.update_item(Key={"customer": "c0", "order_id": 0},
                          UpdateExpression="SET #s = :s, tags = list_append(if_not_exists(tags, :empty), :t)",
                          ConditionExpression=Attr("status").eq("NEW"),
                          ExpressionAttributeNames={"#s": "status"},
                          ExpressionAttributeValues={":s": "PAID", ":t": ["rush"], ":empty": []})
        try:
            table.update_item(Key={"customer": "c0", "order_id": 0},
                              UpdateExpression="SET #s = :s", ConditionExpression=Attr("status").eq("NEW"),
                              ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":s": "X"})
            raise AssertionError("condition should fail")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ConditionalCheckFailedException", e.response

        try:
            table.put_item(Item={"customer": "c0"})
            raise AssertionError("missing sort key should fail")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ValidationException"
            assert e.response["Error"]["Message"] == \
                "One or more parameter values were invalid: Missing the key order_id in the item", e.response

        # The local index: c1's orders by total, projected keys and status,
        # through the query paginator; the update above shows in it.
        pages = client.get_paginator("query").paginate(
            TableName="Orders", IndexName="by_total",
            KeyConditionExpression="customer = :c AND #t > :min",
            ExpressionAttributeNames={"#t": "total"},
            ExpressionAttributeValues={":c": {"S": "c1"}, ":min": {"N": "500"}},
            PaginationConfig={"PageSize": 3})
        items = [i for p in pages for i in p["Items"]]
        totals = [decimal.Decimal(i["total"]["N"]) for i in items]
        assert totals == sorted(totals) and all(t > 500 for t in totals) and len(totals) == 11, totals
        assert set(items[0]) == {"customer", "order_id", "total", "status"}, items[0]
        paid = table.query(IndexName="by_total", ConsistentRead=True,
                           KeyConditionExpression=Key("customer").eq("c0") & Key("total").eq(0))["Items"]
        assert [i["status"] for i in paid] == ["PAID"], paid
        index = client.describe_table(TableName="Orders")["Table"]["LocalSecondaryIndexes"][0]
        assert (index["IndexName"], index["ItemCount"]) == ("by_total", 60), index

        # A global index added online by status: CREATING (backfilling the 60
        # orders) then ACTIVE; queried (eventually consistent) by status.
        r = client.update_table(
            TableName="Orders",
            AttributeDefinitions=[{"AttributeName": "status", "AttributeType": "S"},
                                  {"AttributeName": "order_id", "AttributeType": "N"}],
            GlobalSecondaryIndexUpdates=[{"Create": {
                "IndexName": "by_status",
                "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                              {"AttributeName": "order_id", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
        assert r["TableDescription"]["GlobalSecondaryIndexes"][0]["IndexStatus"] == "CREATING", r
        for _ in range(300):
            desc = client.describe_table(TableName="Orders")["Table"]
            if desc["GlobalSecondaryIndexes"][0]["IndexStatus"] == "ACTIVE":
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"by_status never became ACTIVE: {desc}")
        table.put_item(Item={"customer": "c9", "order_id": 1000, "total": 1, "status": "PAID"})
        for _ in range(300):
            paid = table.query(IndexName="by_status", KeyConditionExpression=Key("status").eq("PAID"))["Items"]
            if len(paid) == 2:
                break
            time.sleep(0.1)
        assert [int(i["order_id"]) for i in paid] == [0, 1000], paid
        assert set(paid[0]) == {"customer", "order_id", "status"}, paid[0]
        try:
            table.query(IndexName="by_status", ConsistentRead=True,
                        KeyConditionExpression=Key("status").eq("PAID"))
            raise AssertionError("a consistent read of a global index should fail")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ValidationException", e.response
        table.delete_item(Key={"customer": "c9", "order_id": 1000})

        # Transactions: a transfer between two accounts commits as a whole
        # (once per ClientRequestToken); an overdraft cancels it with the
        # reasons in request order.
        key = lambda c: {"customer": {"S": c}, "order_id": {"N": "0"}}
        move = lambda c, d: {"Update": {
            "TableName": "Orders", "Key": key(c),
            "UpdateExpression": "SET points = points + :d", "ConditionExpression": "points >= :min",
            "ExpressionAttributeValues": {":d": {"N": str(d)}, ":min": {"N": str(max(-d, 0))}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
        for c in ("t0", "t1"):
            table.put_item(Item={"customer": c, "order_id": 0, "points": 10})
        for _ in range(2):
            client.transact_write_items(TransactItems=[move("t0", -3), move("t1", 3)],
                                        ClientRequestToken="boto3-transfer")
        got = client.transact_get_items(TransactItems=[
            {"Get": {"TableName": "Orders", "Key": key(c)}} for c in ("t0", "t1")])["Responses"]
        assert [int(r["Item"]["points"]["N"]) for r in got] == [7, 13], got
        try:
            client.transact_write_items(TransactItems=[move("t1", 100), move("t0", -100)])
            raise AssertionError("an overdraft should cancel the transaction")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "TransactionCanceledException", e.response
            reasons = e.response["CancellationReasons"]
            assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed"], reasons
            assert reasons[1]["Item"]["points"] == {"N": "7"}, reasons
        assert table.get_item(Key={"customer": "t1", "order_id": 0})["Item"]["points"] == 13
        for c in ("t0", "t1"):
            table.delete_item(Key={"customer": c, "order_id": 0})

        partiql_session(client)

        pages = list(client.get_paginator("scan").paginate(TableName="Orders", PaginationConfig={"PageSize": 7}))
        assert sum(p["Count"] for p in pages) == 60 and len(pages) >= 9, [p["Count"] for p in pages]

        table.delete()
        table.wait_until_not_exists()
        streams_session(session, ddb, url)
        print("boto3 session: ok")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
