"""The embedded server on a disk that fills up, with boto3.

Usage: disk_full.py <dynaraft binary>. Needs root (it mounts a small tmpfs
as the data directory's disk); it re-runs itself in a private mount
namespace (`unshare --mount`), so the mount vanishes with it whatever
happens. Without root it says so and skips.

1. Under load from several writers, the disk fills: writes fail with a
   retryable 5xx, `/ready` answers 503 naming the failure, `/` stays up.
2. A ballast file is deleted: writes resume on their own, without a
   restart, within RESUME_WITHIN_S, and `/ready` is 200 again.
3. The disk is filled again and the server stopped (SIGTERM, within
   SHUTDOWN_WITHIN_S); what room its exit left is filled too; starting it on
   the full disk, several times, either fails cleanly (an error message, no
   panic) or, when the start itself freed room to open, comes up and
   refuses writes retryably once that room is used, falling to not ready
   (`start_on_full_disk`); given a little room, a start comes up, fills
   it and is stopped the same way; the disk is grown and the server starts.
4. Every write acknowledged at any point is there, with its value.
"""
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import boto3
import botocore.exceptions
from botocore.config import Config
from ports import free_port

DISK_MB = 160
BALLAST_MB = 48
GROWN_DISK_MB = 512
ITEM_BYTES = 100_000
WRITERS = 4
RESUME_WITHIN_S = 15
SHUTDOWN_WITHIN_S = 15
START_ATTEMPTS_ON_FULL_DISK = 3
# How long a start on the full disk may take to either exit or come up, in
# seconds; and how many items one that came up may write before one is
# refused (the room a start frees is a blob of about 1 MB).
START_OUTCOME_WITHIN_S = 30
WRITES_AFTER_UP = 200
# Room given back before a start that must come up and fill it, in MB.
LITTLE_ROOM_MB = 6
TABLE = "DiskFull"
# How often the prober opens a connection, in seconds, and which of them
# carry a GET of `/`.
PROBE_EVERY_S = 0.001
PROBE_HTTP_EVERY = 20


def get(url):
    """(status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:  # refused: the moment of a re-exec
        return None, str(e)


def live(url):
    """Whether `/` answers 200: liveness holds through a storage failure."""
    return get(url + "/")[0] == 200


class Prober:
    """A thread opening a new connection to the server every PROBE_EVERY_S
    (a GET of `/` on every PROBE_HTTP_EVERY-th), counting the outcomes by
    kind. A connection is never refused: across the server's re-exec the
    listening socket stays open (the new image inherits it), so a client
    waits in its backlog. One accepted by the old image just before the
    exec is closed with it ("closed"), which a client retries."""

    def __init__(self, url):
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.kinds = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.probe, daemon=True)
        self.thread.start()

    def probe(self):
        n = 0
        while not self.stopping.is_set():
            n += 1
            kind = self.http() if n % PROBE_HTTP_EVERY == 0 else self.connect()
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            time.sleep(PROBE_EVERY_S)

    def connect(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=10).close()
            return "connected"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "closed"

    def http(self):
        try:
            with urllib.request.urlopen(self.url + "/", timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except urllib.error.URLError as e:
            return "refused" if isinstance(e.reason, ConnectionRefusedError) else "closed"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "closed"

    def stop(self):
        """The outcomes' kinds and counts; asserts none was refused."""
        self.stopping.set()
        self.thread.join()
        assert "refused" not in self.kinds, f"connections refused: {self.kinds}"
        return self.kinds


class Server:
    def __init__(self, binary, data, log):
        self.binary, self.data, self.log = binary, data, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def command(self):
        return [self.binary, "embedded", "--port", str(self.port), "--data-dir", self.data,
                "--instant-transitions"]

    def start(self):
        self.proc = subprocess.Popen(self.command(), stderr=self.log, stdout=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.proc.poll() is None, "the server exited at start-up"
            try:
                urllib.request.urlopen(self.url + "/", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the server did not start")

    def stop(self):
        started = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(SHUTDOWN_WITHIN_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"SIGTERM took over {SHUTDOWN_WITHIN_S} s")
        return time.time() - started


def client(url):
    # One attempt per call: the test sees every refusal itself.
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(retries={"max_attempts": 1, "mode": "standard"},
                                      connect_timeout=5, read_timeout=30))


class Writers:
    """Threads putting distinct items until told to stop; they keep what
    was acknowledged and the errors they saw."""

    def __init__(self, url):
        self.url = url
        self.acked = {}
        self.acked_at = {}
        self.errors = []
        self.last_ok = 0.0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []

    def run(self):
        self.stopping.clear()
        self.threads = [threading.Thread(target=self.write, args=(w,), daemon=True)
                        for w in range(WRITERS)]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join()

    def write(self, w):
        c = client(self.url)
        n = 0
        while not self.stopping.is_set():
            key = f"w{w}-{time.time_ns()}-{n}"
            value = (key * (ITEM_BYTES // len(key) + 1))[:ITEM_BYTES]
            n += 1
            try:
                c.put_item(TableName=TABLE, Item={"id": {"S": key}, "v": {"S": value}})
            except Exception as e:  # noqa: BLE001 - every refusal is recorded and checked
                with self.lock:
                    self.errors.append(e)
                time.sleep(0.05)
                continue
            with self.lock:
                self.acked[key] = value
                self.last_ok = self.acked_at[key] = time.time()


def wait_until(what, predicate, within_s):
    deadline = time.time() + within_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {within_s} s: {what}")


def refusal_kind(e):
    """A retryable refusal's HTTP status, or "connection" for a connection
    the server dropped or refused (the moment it re-executes itself)."""
    if isinstance(e, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        return "connection"
    return getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")


def fill(server, writers, ballast=None):
    """Writes until the disk is full and writes are refused."""
    writers.run()
    refused_before = len(writers.errors)
    wait_until("writes refused on a full disk", lambda: len(writers.errors) > refused_before + 20, 180)
    wait_until("/ready is 503 on a full disk", lambda: get(server.url + "/ready")[0] == 503, 5)
    _, body = get(server.url + "/ready")
    assert live(server.url), "liveness must stay up"
    with writers.lock:
        refusals = writers.errors[refused_before:]
    kinds = {refusal_kind(e) for e in refusals}
    assert kinds <= {500, 503, "connection"}, f"refusals must be retryable, saw {kinds}: {refusals[:3]}"
    print(f"disk full: {len(writers.acked)} writes acknowledged, refusals {sorted(map(str, kinds))}, "
          f"/ready: {body.strip()}")


def top_up(mnt):
    """Fills what room is left on `mnt`'s file system, to the last block."""
    fd = os.open(os.path.join(mnt, "top-up"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 4096):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)


def start_on_full_disk(server, acked):
    """Starts the server on the full disk; what became of it. Either the
    start fails at once, with an error message and no panic, or it comes up:
    a start can free room (sled removes a blob the stopped process wrote past
    its stable log), enough to open. Then writes go on until refused, each
    acknowledged one kept in `acked` to be read back, the refusals are
    retryable, `/ready` falls to 503, and SIGTERM stops it in time. Either
    way nothing panics. On a failure the server's log ends the message."""
    with tempfile.TemporaryFile("w+") as err:
        def stderr():
            err.seek(0)
            return err.read()
        try:
            return started_on_full_disk(server, acked, err, stderr)
        except AssertionError as e:
            raise AssertionError(f"{e}; the server's log ends:\n{stderr()[-4000:]}") from e


def started_on_full_disk(server, acked, err, stderr):
    server.proc = subprocess.Popen(server.command(), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + START_OUTCOME_WITHIN_S
    while server.proc.poll() is None and not live(server.url):
        assert time.time() < deadline, f"neither up nor exited in {START_OUTCOME_WITHIN_S} s"
        time.sleep(0.05)
    if server.proc.poll() is not None:
        assert server.proc.returncode != 0, "a start that could not open must fail"
        assert "panicked" not in stderr(), "a start panicked"
        errors = [l for l in stderr().splitlines() if l.startswith("Error:")]
        assert errors, "a failed start without an error message"
        return f"exit {server.proc.returncode}, {errors[0]}"
    try:
        c = client(server.url)
        written, refusal = 0, None
        for n in range(WRITES_AFTER_UP):
            key, value = f"up{n}-{time.time_ns()}", "x" * ITEM_BYTES
            try:
                c.put_item(TableName=TABLE, Item={"id": {"S": key}, "v": {"S": value}})
            except Exception as e:  # noqa: BLE001 - the refusal is checked below
                refusal = e
                break
            acked[key] = value
            written += 1
        assert refusal is not None, f"{WRITES_AFTER_UP} writes of {ITEM_BYTES} bytes on a full disk"
        assert refusal_kind(refusal) in {500, 503, "connection"}, f"not retryable: {refusal}"
        wait_until("/ready is 503 on the full disk", lambda: get(server.url + "/ready")[0] == 503,
                   RESUME_WITHIN_S)
        assert live(server.url), "liveness must stay up"
        _, body = get(server.url + "/ready")
    finally:
        took = server.stop()
    assert "panicked" not in stderr(), "the server panicked"
    return (f"up: {written} writes acknowledged, then refused "
            f"({refusal_kind(refusal)}), /ready: {body.strip()}; SIGTERM: exited in {took:.1f} s")


def check_all(url, acked):
    c = client(url)
    for key, value in acked.items():
        item = c.get_item(TableName=TABLE, Key={"id": {"S": key}}, ConsistentRead=True).get("Item")
        assert item is not None, f"acknowledged write {key} lost"
        assert item["v"]["S"] == value, f"acknowledged write {key} has a different value"
    print(f"every acknowledged write intact: {len(acked)}")


def main(binary, mnt):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", mnt], check=True)
    ballast = os.path.join(mnt, "ballast")
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=1M", f"count={BALLAST_MB}"],
                   check=True, capture_output=True)
    log = open(os.path.join(tempfile.gettempdir(), "dynaraft-disk-full.log"), "w")
    server = Server(binary, os.path.join(mnt, "data"), log)
    server.start()
    client(server.url).create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    writers = Writers(server.url)
    try:
        run(server, writers, ballast, mnt)
    finally:
        writers.stopping.set()
        if server.proc and server.proc.poll() is None:
            server.proc.kill()


def run(server, writers, ballast, mnt):
    # 1 and 2: full, then space freed with the server running.
    prober = Prober(server.url)
    fill(server, writers)
    freed = time.time()
    os.remove(ballast)
    wait_until("writes resume after space is freed", lambda: writers.last_ok > freed, RESUME_WITHIN_S)
    resumed = writers.last_ok - freed
    wait_until("/ready is 200 again", lambda: get(server.url + "/ready")[0] == 200, RESUME_WITHIN_S)
    print(f"space freed: writes resumed after {resumed:.1f} s without a restart")
    print(f"liveness probes on new connections throughout: {prober.stop()}")

    # 3: full again; stop; starts on the full disk fail cleanly; grow; start.
    fill(server, writers)
    writers.stop()
    took = server.stop()
    print(f"SIGTERM on a full disk: exited in {took:.1f} s")
    # The stopped server may have left a little room (a start that finds
    # enough to open is up, rightly): fill what is left, so that every
    # start below meets a full disk.
    top_up(mnt)
    for attempt in range(START_ATTEMPTS_ON_FULL_DISK):
        print(f"start {attempt + 1} on a full disk: {start_on_full_disk(server, writers.acked)}")
    # A start with a little room comes up, fills it, and is stopped: the
    # path a start that freed room takes above, every time.
    subprocess.run(["mount", "-o", f"remount,size={DISK_MB + LITTLE_ROOM_MB}m", mnt], check=True)
    outcome = start_on_full_disk(server, writers.acked)
    assert outcome.startswith("up"), f"a start with {LITTLE_ROOM_MB} MB of room: {outcome}"
    print(f"start with {LITTLE_ROOM_MB} MB of room: {outcome}")
    subprocess.run(["mount", "-o", f"remount,size={GROWN_DISK_MB}m", mnt], check=True)
    server.start()
    check_all(server.url, writers.acked)
    client(server.url).put_item(TableName=TABLE, Item={"id": {"S": "after"}, "v": {"S": "grown"}})
    server.stop()
    print("disk_full: ok")


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("disk_full: SKIPPED, needs root to mount a small tmpfs")
        sys.exit(0)
    if os.environ.get("DISK_FULL_NAMESPACE") != "1":
        os.environ["DISK_FULL_NAMESPACE"] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private",
                              sys.executable] + sys.argv)
    with tempfile.TemporaryDirectory() as mnt:
        try:
            main(sys.argv[1], mnt)
        finally:
            subprocess.run(["umount", "-l", mnt], capture_output=True)
