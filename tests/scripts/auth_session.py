"""Authentication and authorization through boto3 and the AWS CLI.

Usage: auth_session.py <dynaraft binary> <aws binary>. Starts the embedded
server with an auth file and checks, as a user of those clients sees it:
a signed request of a known user is served; a wrong secret is
InvalidSignatureException, an unknown key UnrecognizedClientException; a
read-only user reads but is refused a write with IAM's AccessDenied
message, and nothing is written; a user confined by dynamodb:LeadingKeys
writes only their partition; the AWS CLI gets the same answers; a
malformed auth file stops the server at start-up naming the line.
"""
import json
import os
import subprocess
import sys
import tempfile

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from ports import free_port, start_embedded

ACCOUNT = "000000000000"
TABLE_ARN = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/Notes"


def policy(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


USERS = {"users": [
    {"access_key_id": "ADMIN", "secret_access_key": "admin-secret", "account_id": ACCOUNT,
     "policies": [policy({"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"})]},
    {"access_key_id": "READER", "secret_access_key": "reader-secret", "account_id": ACCOUNT,
     "name": "reader",
     "policies": [policy({"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:Scan",
                                                        "dynamodb:DescribeTable"],
                          "Resource": TABLE_ARN})]},
    {"access_key_id": "CAROL", "secret_access_key": "carol-secret", "account_id": ACCOUNT,
     "name": "carol",
     "policies": [policy({"Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:GetItem"],
                          "Resource": TABLE_ARN,
                          "Condition": {"ForAllValues:StringEquals":
                                        {"dynamodb:LeadingKeys": ["${aws:username}"]}}})]},
]}


def client(url, key, secret):
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


def refused(call, code):
    try:
        call()
    except ClientError as e:
        assert e.response["Error"]["Code"] == code, e.response
        return e.response["Error"]["Message"]
    raise AssertionError(f"expected {code}")


def cli(aws, url, key, secret, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="1")
    return subprocess.run([aws, "dynamodb", "--endpoint-url", url, "--output", "json", *args],
                          env=env, capture_output=True, text=True)


def malformed_file_is_refused(binary, tmp):
    bad = os.path.join(tmp, "bad.json")
    with open(bad, "w") as f:
        f.write('{"users": [\n  {"access_key_id": "K", "secret_access_key": "s",\n'
                '   "account_id": "123456789012", "policies": [{"Statement": {"Effect": "Alow",'
                ' "Action": "*", "Resource": "*"}}]}]}\n')
    r = subprocess.run([binary, "embedded", "--in-memory", "--port", str(free_port()),
                        "--auth-file", bad], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, "a malformed auth file must stop the server"
    assert "Alow" in r.stderr and "line 3" in r.stderr, r.stderr


def main():
    binary, aws = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        malformed_file_is_refused(binary, tmp)
        auth = os.path.join(tmp, "auth.json")
        with open(auth, "w") as f:
            json.dump(USERS, f, indent=2)
        proc, url = start_embedded(binary, os.path.join(tmp, "data"), free_port(), "--auth-file", auth)
        try:
            admin = client(url, "ADMIN", "admin-secret")
            admin.create_table(TableName="Notes", BillingMode="PAY_PER_REQUEST",
                               KeySchema=[{"AttributeName": "owner", "KeyType": "HASH"}],
                               AttributeDefinitions=[{"AttributeName": "owner", "AttributeType": "S"}])
            admin.put_item(TableName="Notes", Item={"owner": {"S": "admin"}, "text": {"S": "hi"}})

            refused(lambda: client(url, "ADMIN", "wrong").list_tables(), "InvalidSignatureException")
            msg = refused(lambda: client(url, "NOBODY", "x").list_tables(), "UnrecognizedClientException")
            assert msg == "The security token included in the request is invalid.", msg

            reader = client(url, "READER", "reader-secret")
            got = reader.get_item(TableName="Notes", Key={"owner": {"S": "admin"}})
            assert got["Item"]["text"] == {"S": "hi"}, got
            msg = refused(lambda: reader.put_item(TableName="Notes", Item={"owner": {"S": "r"}}),
                          "AccessDeniedException")
            assert msg == (f"User: arn:aws:iam::{ACCOUNT}:user/reader is not authorized to perform: "
                           f"dynamodb:PutItem on resource: {TABLE_ARN} because no identity-based "
                           "policy allows the dynamodb:PutItem action"), msg
            refused(lambda: reader.list_tables(), "AccessDeniedException")

            carol = client(url, "CAROL", "carol-secret")
            carol.put_item(TableName="Notes", Item={"owner": {"S": "carol"}, "text": {"S": "mine"}})
            refused(lambda: carol.put_item(TableName="Notes", Item={"owner": {"S": "admin"}}),
                    "AccessDeniedException")
            refused(lambda: carol.get_item(TableName="Notes", Key={"owner": {"S": "admin"}}),
                    "AccessDeniedException")
            owners = sorted(i["owner"]["S"] for i in admin.scan(TableName="Notes")["Items"])
            assert owners == ["admin", "carol"], f"only allowed writes landed: {owners}"
            admin_item = admin.get_item(TableName="Notes", Key={"owner": {"S": "admin"}})["Item"]
            assert admin_item == {"owner": {"S": "admin"}, "text": {"S": "hi"}}, admin_item

            ok = cli(aws, url, "READER", "reader-secret", "get-item", "--table-name", "Notes",
                     "--key", '{"owner": {"S": "carol"}}')
            assert ok.returncode == 0 and '"mine"' in ok.stdout, ok
            denied = cli(aws, url, "READER", "reader-secret", "delete-table", "--table-name", "Notes")
            assert denied.returncode != 0 and "AccessDeniedException" in denied.stderr, denied
            wrong = cli(aws, url, "READER", "nope", "describe-table", "--table-name", "Notes")
            assert wrong.returncode != 0 and "InvalidSignatureException" in wrong.stderr, wrong
            assert admin.describe_table(TableName="Notes")["Table"]["TableStatus"] == "ACTIVE"
        finally:
            proc.kill()
            proc.wait()
    print("auth session (boto3, AWS CLI): ok")


if __name__ == "__main__":
    main()
