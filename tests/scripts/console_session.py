"""The web console in a real browser (headless Chromium, driven over the
DevTools protocol): pages load without console errors and show what the
API wrote.

Usage: console_session.py <dynaraft binary> <chromium> [screenshot dir]

1. An embedded server (a database per access key, as DynamoDB Local):
   boto3 writes a table of 60 items, some holding markup; the browser signs
   in with the same key, lists the table, pages through its items, runs a
   query, creates a table and adds a global index to it through the forms
   (boto3 sees both), deletes it (boto3 sees it gone), and shows the
   cluster (its one zone, the table's partition and its leader). Item
   values that are markup show as text: nothing of them runs or renders.
   The console's cluster operation refuses a cross-site request; a server
   started with --no-console serves neither the page nor the operation.
2. A local three-zone cluster whose router authenticates requests: a wrong
   secret is refused at sign-in; an administrator sees the three zones,
   every node up, each of the table's three partitions with its hash range
   and a leader, and request rates from /metrics; a user whose policy
   allows only one table sees that table's partitions only, and is refused
   a DeleteTable with IAM's message.
"""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import boto3
import websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port, free_run, start_embedded  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SH = os.path.join(HERE, "..", "..", "deploy", "local", "cluster.sh")
WAIT_S = 20
XSS = ["<script>window.__xss = 1</script>", '<img src=x onerror="window.__xss = 2">']
ACCOUNT = "000000000000"
REGION = "us-east-1"


class Browser:
    """One headless Chromium page, over the DevTools protocol."""

    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="dynaraft-chromium-")
        self.proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.time() + WAIT_S
        while port is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        assert port, "chromium did not start its DevTools endpoint"
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=WAIT_S,
                                              suppress_origin=True)
        self.next_id = 0
        self.errors = []
        self.dialogs = []
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(method)

    def send(self, method, **params):
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg.get("result", {})
            self.event(msg)

    def event(self, msg):
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append(("exception", d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            self.errors.append(("console", " ".join(str(a.get("value", a.get("description")))
                                                     for a in p["args"])))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append((p["entry"]["source"], p["entry"]["text"]))
        elif method == "Page.javascriptDialogOpening":
            # A confirm(): accepted, as a user would (answered without
            # waiting: the call that opened it waits for the answer).
            self.dialogs.append(p["message"])
            self.next_id += 1
            self.ws.send(json.dumps({"id": self.next_id, "method": "Page.handleJavaScriptDialog",
                                     "params": {"accept": True}}))

    def eval(self, expr):
        r = self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, f"{expr}: {r['exceptionDetails']}"
        return r["result"].get("value")

    def wait(self, expr, what):
        deadline = time.time() + WAIT_S
        while time.time() < deadline:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; page says: {self.text()[:1500]!r}")

    def go(self, url):
        self.send("Page.navigate", url=url)

    def text(self):
        return self.eval("document.body.innerText")

    def fill(self, selector, value):
        self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.value = {json.dumps(value)}; e.dispatchEvent(new Event('change')); return true; }})()""")

    def click(self, selector):
        self.eval(f"document.querySelector({json.dumps(selector)}).click(), true")

    def screenshot(self, path):
        if not path:
            return
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def assert_no_errors(self, where):
        assert not self.errors, f"{where}: the page logged errors: {self.errors}"

    def close(self):
        self.proc.kill()
        self.proc.wait()


def query(b, pk, op, sk, rows):
    """Runs the item browser's query form; the cells' texts once `rows` rows show."""
    b.fill("#browse select[name=mode]", "Query")
    b.fill("#browse input[name=pkValue]", pk)
    b.fill("#browse select[name=skOp]", op)
    b.fill("#browse input[name=skValue]", sk)
    b.click("#browse button[type=submit]")
    b.wait(f"document.querySelectorAll('table.items tbody tr').length === {rows}", f"the query's {rows} items")
    return b.eval("[...document.querySelectorAll('table.items td')].map(td => td.textContent)")


def sign_in(b, key, secret):
    b.wait("!!document.querySelector('#sign-in')", "the sign-in form")
    b.fill("#sign-in input[name=accessKeyId]", key)
    b.fill("#sign-in input[name=secretAccessKey]", secret)
    b.click("#sign-in button[type=submit]")


def raw_call(url, target, body, headers=None):
    """A request whose signature is not checked (the embedded server
    accepts any, as DynamoDB Local does)."""
    h = {"content-type": "application/x-amz-json-1.0", "x-amz-target": target,
         "authorization": "AWS4-HMAC-SHA256 Credential=k/20261204/us-east-1/dynamodb/aws4_request, "
                          "SignedHeaders=host, Signature=0"}
    h.update(headers or {})
    req = urllib.request.Request(url + "/", data=json.dumps(body).encode(), headers=h, method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start(binary, *flags):
    return start_embedded(binary, tempfile.mkdtemp(prefix="dynaraft-console-"), free_port(), *flags)


def embedded(binary, b, shots):
    # Without the console: neither the page nor its operation.
    proc, url = start(binary, "--no-console")
    try:
        try:
            urllib.request.urlopen(url + "/console")
            raise AssertionError("--no-console still served /console")
        except urllib.error.HTTPError as e:
            assert e.code == 404, e.code
        status, body = raw_call(url, "DynaraftConsole_20261204.DescribeCluster", {})
        assert status == 400 and body["__type"].endswith("UnknownOperationException"), (status, body)
    finally:
        proc.terminate()
        proc.wait()
    print("--no-console: /console 404, DescribeCluster an unknown operation")

    proc, url = start(binary)
    try:
        ddb = boto3.client("dynamodb", endpoint_url=url, region_name=REGION,
                           aws_access_key_id="browser", aws_secret_access_key="s")
        ddb.create_table(TableName="console_items", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                               {"AttributeName": "sk", "AttributeType": "N"},
                                               {"AttributeName": "n", "AttributeType": "N"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                    {"AttributeName": "sk", "KeyType": "RANGE"}],
                         GlobalSecondaryIndexes=[{
                             "IndexName": "by_n", "Projection": {"ProjectionType": "KEYS_ONLY"},
                             "KeySchema": [{"AttributeName": "n", "KeyType": "HASH"}]}])
        for i in range(60):
            item = {"pk": {"S": f"user#{i % 6}"}, "sk": {"N": str(i)}, "n": {"N": str(i * 7)}}
            if i < len(XSS):
                item["note"] = {"S": XSS[i]}
            ddb.put_item(TableName="console_items", Item=item)

        # Cross-site: refused; from a client that is no browser: served.
        status, body = raw_call(url, "DynaraftConsole_20261204.DescribeCluster", {},
                                {"origin": "http://evil.example"})
        assert status == 400 and body["__type"].endswith("AccessDeniedException"), (status, body)
        status, body = raw_call(url, "DynaraftConsole_20261204.DescribeCluster", {})
        assert status == 200 and body["nodes"][0]["az"] == "local", (status, body)
        print("DescribeCluster: cross-site request refused, same-site served")

        b.go(url + "/console")
        sign_in(b, "browser", "s")
        b.wait("!!document.querySelector('tr[data-table=\"console_items\"]')", "the table in the list")
        row = b.eval("document.querySelector('tr[data-table=\"console_items\"]').innerText")
        assert "pk (S)" in row and "sk (N)" in row and "60" in row, row
        b.screenshot(shots and os.path.join(shots, "console-tables.png"))
        b.assert_no_errors("the table list")
        print(f"table list: {row!r}")

        # Items, page by page, markup shown as text.
        b.click("tr[data-table=\"console_items\"] a")
        b.wait("document.querySelectorAll('table.items tbody tr').length === 25", "the first page of items")
        assert b.eval("document.getElementById('page-info').innerText") == "Items 1–25"
        b.screenshot(shots and os.path.join(shots, "console-items.png"))
        b.click("#next-page")
        b.wait("document.getElementById('page-info')?.innerText === 'Items 26–50'", "the second page")
        b.click("#next-page")
        b.wait("document.getElementById('page-info')?.innerText === 'Items 51–60'", "the third page")
        assert b.eval("document.getElementById('next-page').disabled") is True
        # A query: one partition key, a sort-key range.
        shown = query(b, "user#0", "<", "20", 4)
        cells = b.eval("[...document.querySelectorAll('table.items tbody tr')].map(r => r.cells[1].textContent)")
        assert cells == ["0", "6", "12", "18"], cells
        assert XSS[0] in shown, shown
        shown = query(b, "user#1", "=", "1", 1)
        assert XSS[1] in shown, shown
        assert b.eval("window.__xss === undefined"), "markup from an item ran"
        assert b.eval("document.querySelectorAll('main script, main img').length") == 0, \
            "markup from an item became elements"
        b.assert_no_errors("the item browser")
        print("items: 3 pages of 25/25/10, a query of 4, markup shown as text and never run")

        # Create a table, add an index, delete it: through the forms.
        b.go(url + "/console#/tables")
        b.wait("!!document.querySelector('#create-table')", "the create form")
        b.fill("#create-table input[name=tableName]", "made_in_console")
        b.fill("#create-table input[name=pkName]", "id")
        b.click("#create-table button[type=submit]")
        b.wait("!!document.querySelector('tr[data-table=\"made_in_console\"]')", "the new table")
        d = ddb.describe_table(TableName="made_in_console")["Table"]
        assert d["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}], d["KeySchema"]
        b.click("tr[data-table=\"made_in_console\"] a")
        b.wait("!!document.querySelector('#add-index')", "the add-index form")
        b.fill("#add-index input[name=indexName]", "by_email")
        b.fill("#add-index input[name=ipkName]", "email")
        b.click("#add-index button[type=submit]")
        b.wait("document.body.innerText.includes('by_email')", "the new index")
        gsis = ddb.describe_table(TableName="made_in_console")["Table"]["GlobalSecondaryIndexes"]
        assert [g["IndexName"] for g in gsis] == ["by_email"], gsis
        b.go(url + "/console#/tables")
        b.wait("!!document.querySelector('tr[data-table=\"made_in_console\"] button.danger')", "the delete button")
        b.click("tr[data-table=\"made_in_console\"] button.danger")
        b.wait("!document.querySelector('tr[data-table=\"made_in_console\"]')", "the table gone from the list")
        assert b.dialogs and "made_in_console" in b.dialogs[-1], b.dialogs
        names = ddb.list_tables()["TableNames"]
        assert names == ["console_items"], names
        b.assert_no_errors("the forms")
        print("forms: table created, index added, table deleted (after a confirmation), as boto3 sees")

        b.go(url + "/console#/cluster")
        b.wait("!!document.querySelector('[data-zone=\"local\"] tr[data-node=\"1\"]')", "the embedded node")
        # Leader 1; the table's partition has delivered every change to its
        # index (backlog 0); the index partition holds the 60 entries (the
        # view refreshes until the feed has caught up).
        b.wait("""(() => { const rows = [...document.querySelectorAll('table.partitions tbody tr')]
            .map(r => [...r.cells].map(c => c.innerText));
            return rows.length === 2
              && rows[0][0] === 'console_items' && rows[0][1] === '–' && rows[0][7] === '1' && rows[0][9] === '0'
              && rows[1][1] === 'by_n' && rows[1][4] === '60' && rows[1][7] === '1' && rows[1][9] === '–'; })()""",
               "the table's partition (backlog 0) and its index's (60 entries), both led by node 1")
        b.assert_no_errors("the cluster view")
        print("cluster (embedded): zone local, node 1 leading the table's partition (index backlog 0) and its index's (60 entries)")
    finally:
        proc.terminate()
        proc.wait()


def cluster(binary, b, shots):
    root = tempfile.mkdtemp(prefix="dynaraft-console-")
    auth = os.path.join(root, "auth.json")
    table_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/visible"
    with open(auth, "w") as f:
        json.dump({"users": [
            {"access_key_id": "consoleadmin", "secret_access_key": "admin-secret", "account_id": ACCOUNT,
             "name": "admin", "policies": [{"Version": "2012-10-17", "Statement": {
                 "Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}}]},
            {"access_key_id": "consolereader", "secret_access_key": "reader-secret", "account_id": ACCOUNT,
             "name": "reader", "policies": [{"Version": "2012-10-17", "Statement": [
                 {"Effect": "Allow", "Action": "dynamodb:ListTables", "Resource": "*"},
                 {"Effect": "Allow", "Action": ["dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:Query"],
                  "Resource": table_arn}]}]},
        ]}, f)
    router_port, node_port = free_port(), free_run(3)
    url = f"http://127.0.0.1:{router_port}"
    try:
        subprocess.run([CLUSTER_SH, "start", binary, root, str(router_port), str(node_port),
                        "--partitions-per-table", "3", "--transition-delay-ms", "0", "--auth-file", auth],
                       check=True)
        ddb = boto3.client("dynamodb", endpoint_url=url, region_name=REGION,
                           aws_access_key_id="consoleadmin", aws_secret_access_key="admin-secret")
        for name in ("visible", "hidden"):
            ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                             KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
            ddb.get_waiter("table_exists").wait(TableName=name)
        for i in range(30):
            ddb.put_item(TableName="visible", Item={"pk": {"S": f"k{i}"}})

        # A wrong secret: refused at sign-in, the form stays.
        b.go(url + "/console")
        sign_in(b, "consoleadmin", "not-the-secret")
        b.wait("!document.getElementById('error').hidden", "the sign-in error")
        err = b.eval("document.getElementById('error').innerText")
        assert "InvalidSignatureException" in err or "UnrecognizedClientException" in err, err
        assert b.eval("!!document.querySelector('#sign-in')")
        # The refused request is the only error the page logged.
        assert all(src == "network" for src, _ in b.errors), b.errors
        b.errors.clear()
        print(f"sign-in with a wrong secret: {err!r}")

        sign_in(b, "consoleadmin", "admin-secret")
        b.wait("!!document.querySelector('tr[data-table=\"visible\"]')", "the tables")
        b.go(url + "/console#/cluster")
        for zone in ("az-a", "az-b", "az-c"):
            b.wait(f"!!document.querySelector('[data-zone=\"{zone}\"] td.up')", f"zone {zone} with its node up")
        rows = b.wait("""(() => { const rows = [...document.querySelectorAll('table.partitions tbody tr')]
            .map(r => [...r.cells].map(c => c.innerText))
            .filter(c => c[0] === 'visible' && /^[123]$/.test(c[7]));
            return rows.length === 3 ? rows : null; })()""", "3 partitions of 'visible', each with a leader")
        ranges = [r[3] for r in rows]
        assert ranges[0].startswith("0000000000000000") and ranges[-1].endswith("end"), ranges
        b.wait("!!document.querySelector('table.rates')", "request rates from /metrics")
        rates = b.eval("document.querySelector('table.rates').innerText")
        assert "DescribeCluster" in rates, rates
        b.screenshot(shots and os.path.join(shots, "console-cluster.png"))
        b.assert_no_errors("the cluster view")
        print("cluster (three zones, authenticated): zones az-a, az-b, az-c up; 'visible' partitions "
              + "; ".join(f"{r[3]} led by {r[7]}" for r in rows))

        # A user allowed one table sees only its partitions, and is refused the rest.
        b.click("#sign-out")
        b.go(url + "/console#/tables")
        sign_in(b, "consolereader", "reader-secret")
        b.wait("!!document.querySelector('tr[data-table=\"visible\"]')", "the reader's table list")
        b.go(url + "/console#/cluster")
        b.wait("document.querySelectorAll('table.partitions tbody tr').length === 3", "the reader's partitions")
        tables = b.eval("[...document.querySelectorAll('table.partitions tbody tr')].map(r => r.cells[0].innerText)")
        assert set(tables) == {"visible"}, tables
        b.go(url + "/console#/tables")
        b.wait("!!document.querySelector('tr[data-table=\"visible\"] button.danger')", "the delete button")
        b.errors.clear()
        b.click("tr[data-table=\"visible\"] button.danger")
        b.wait("!document.getElementById('error').hidden", "the refusal")
        err = b.eval("document.getElementById('error').innerText")
        assert err.startswith("AccessDeniedException: User: arn:aws:iam::000000000000:user/reader is not "
                              "authorized to perform: dynamodb:DeleteTable"), err
        assert all(src == "network" for src, _ in b.errors), b.errors
        b.errors.clear()
        assert "visible" in ddb.list_tables()["TableNames"]
        print(f"reader: partitions of 'visible' only; DeleteTable refused: {err[:90]!r}...")
    finally:
        subprocess.run([CLUSTER_SH, "stop", root], check=False)


def main():
    binary, chromium = os.path.abspath(sys.argv[1]), sys.argv[2]
    shots = sys.argv[3] if len(sys.argv) > 3 else None
    if shots:
        os.makedirs(shots, exist_ok=True)
    b = Browser(chromium)
    try:
        embedded(binary, b, shots)
        cluster(binary, b, shots)
    finally:
        b.close()
    print("console: every page loaded without errors and showed what the API wrote")


if __name__ == "__main__":
    main()
