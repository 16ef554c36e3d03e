"""A table's stream survives kill -9 of the server.

Usage: stream_crash.py <dynaraft binary>. Starts the embedded server on a
fresh data directory, writes to a table with a stream, reads the stream,
kills the process with SIGKILL mid-flight, restarts it on the same data, and
checks with boto3 that every acknowledged write is in the stream exactly
once with the sequence number it had before the crash, and that writes
after the restart get new, larger sequence numbers (none reused).
"""
import os
import signal
import sys
import tempfile
import threading
import time

import boto3

from boto3_session import read_stream
from ports import free_port, start_embedded

WRITES_BEFORE = 40
WRITES_DURING = 200


def start(binary, data, port):
    return start_embedded(binary, data, port)


def clients(url):
    session = boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local",
                                    region_name="us-east-1")
    return (session.client("dynamodb", endpoint_url=url),
            session.client("dynamodbstreams", endpoint_url=url))


def stream_records(streams):
    """(sequence number, event, key) of every record kept, shard by shard."""
    return [(int(r["dynamodb"]["SequenceNumber"]), r["eventName"], r["dynamodb"]["Keys"]["id"]["S"])
            for r in read_stream(streams, "Crash")]


def main():
    binary = sys.argv[1]
    data = tempfile.mkdtemp()
    port = free_port()
    proc, url = start(binary, data, port)
    try:
        ddb, streams = clients(url)
        ddb.create_table(TableName="Crash",
                         KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                         StreamSpecification={"StreamEnabled": True,
                                              "StreamViewType": "KEYS_ONLY"},
                         BillingMode="PAY_PER_REQUEST")
        for i in range(WRITES_BEFORE):
            ddb.put_item(TableName="Crash", Item={"id": {"S": f"b{i}"}})
        before = stream_records(streams)
        assert len(before) == WRITES_BEFORE, len(before)

        # Writes racing the kill: the acknowledged ones must all survive.
        acked = []

        def writer():
            for i in range(WRITES_DURING):
                try:
                    ddb.put_item(TableName="Crash", Item={"id": {"S": f"d{i}"}})
                    acked.append(f"d{i}")
                except Exception:
                    return

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t.join()

        proc, url = start(binary, data, port)
        ddb, streams = clients(url)
        after = stream_records(streams)
        assert after[:WRITES_BEFORE] == before, "records read before the crash changed"
        keys = [k for (_, _, k) in after]
        assert len(keys) == len(set(keys)), "a record appears twice"
        missing = [k for k in acked if k not in set(keys)]
        assert not missing, f"acknowledged writes missing from the stream: {missing[:5]}"
        last = max(s for (s, _, _) in after)
        ddb.put_item(TableName="Crash", Item={"id": {"S": "after"}})
        newest = stream_records(streams)[-1]
        assert newest[2] == "after" and newest[0] > last, (newest, last)
        print(f"stream crash test: ok ({len(acked)} writes acknowledged around the kill, "
              f"{len(after) - WRITES_BEFORE} logged)")
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
