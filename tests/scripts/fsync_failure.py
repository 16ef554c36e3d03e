"""The embedded server on a disk whose fsyncs fail, with boto3.

Usage: fsync_failure.py <dynaraft binary>. Builds the LD_PRELOAD shim
tests/faults/fail_fsync.c with `cc` (fsync and fdatasync fail with EIO while
a flag file exists) and runs the server under it:

1. Under load, fsyncs start failing: no write is acknowledged while they
   fail (an fsync error is never taken for success), writes are refused
   with a retryable error, `/ready` answers 503, `/` stays up.
2. fsyncs work again: writes resume on their own within RESUME_WITHIN_S
   (the node re-executed itself and recovered from its log).
3. Every write acknowledged before, during and after is there, with its
   value, after a clean restart without the shim.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from disk_full import Prober, Server, Writers, check_all, client, get, live, refusal_kind, wait_until, TABLE

RESUME_WITHIN_S = 15
FAILING_FOR_S = 3
SHIM_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults", "fail_fsync.c")


def build_shim(out_dir):
    shim = os.path.join(out_dir, "fail_fsync.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", shim, SHIM_SOURCE, "-ldl"], check=True)
    return shim


def main(binary):
    work = tempfile.mkdtemp(prefix="dynaraft-fsync-")
    flag = os.path.join(work, "fail")
    os.environ["LD_PRELOAD"] = build_shim(work)
    os.environ["DYNARAFT_FAIL_FSYNC_FLAG"] = flag
    log = open(os.path.join(work, "server.log"), "w")
    server = Server(binary, os.path.join(work, "data"), log)
    server.start()
    del os.environ["LD_PRELOAD"]  # the clients' own processes run without it
    writers = Writers(server.url)
    try:
        client(server.url).create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
        writers.run()
        wait_until("some writes acknowledged", lambda: len(writers.acked) >= 20, 30)

        prober = Prober(server.url)
        open(flag, "w").close()
        failing_since = time.time()
        with writers.lock:
            acked_before = len(writers.acked)
            refused_before = len(writers.errors)
        wait_until("/ready is 503 while fsyncs fail",
                   lambda: get(server.url + "/ready")[0] == 503, 10)
        assert live(server.url), "liveness must stay up"
        time.sleep(FAILING_FOR_S)
        with writers.lock:
            acked_while_failing = [k for k in writers.acked if writers.acked_at[k] > failing_since + 1]
            refusals = writers.errors[refused_before:]
        kinds = {refusal_kind(e) for e in refusals}
        assert refusals, "writes must be refused while fsyncs fail"
        assert kinds <= {500, 503, "connection"}, f"refusals must be retryable, saw {kinds}"
        assert not acked_while_failing, f"acknowledged while fsyncs failed: {acked_while_failing[:3]}"
        print(f"fsyncs failing: {len(refusals)} writes refused ({sorted(map(str, kinds))}), "
              f"none acknowledged; {acked_before} acknowledged before")

        os.remove(flag)
        healed = time.time()
        wait_until("writes resume once fsyncs work", lambda: writers.last_ok > healed, RESUME_WITHIN_S)
        print(f"fsyncs working again: writes resumed after {writers.last_ok - healed:.1f} s")
        wait_until("/ready is 200 again", lambda: get(server.url + "/ready")[0] == 200, RESUME_WITHIN_S)
        print(f"liveness probes on new connections throughout: {prober.stop()}")
        time.sleep(1)
        writers.stop()
        server.stop()
        del os.environ["DYNARAFT_FAIL_FSYNC_FLAG"]
        server.start()
        check_all(server.url, writers.acked)
        server.stop()
        print("fsync_failure: ok")
    finally:
        writers.stopping.set()
        if server.proc and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
