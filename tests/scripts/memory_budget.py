"""Sustained writes against the embedded server under a memory budget: how
its resident set behaves, and how long a restart after the load takes.

Not part of `make test` (it runs for minutes); docs/reliability.md has the
figures it printed. Usage:

    memory_budget.py <release dynaraft binary> [--minutes 10] [--memory-limit-mb 256] [--engine fjall|sled]

Starts `dynaraft embedded --memory-limit-mb N` on a fresh data directory,
drives it with `dynaraft bench --workload put` (uniform keys over ten
million records: nearly every write a new item, so the data grows all
along), samples the server's RSS every RSS_SAMPLE_S seconds, then kills it
with SIGKILL (the worst case for recovery) and times the restart until
`/ready` answers 200. Fails if RSS ever passed the budget or the restart
took longer than RESTART_WITHIN_S.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from ports import free_port

RSS_SAMPLE_S = 5
RESTART_WITHIN_S = 5.0
RECORDS = 10_000_000


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def ready(url):
    try:
        with urllib.request.urlopen(url + "/ready", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(binary, data, port, args, log):
    return subprocess.Popen([binary, "embedded", "--port", str(port), "--data-dir", data,
                             "--instant-transitions", "--memory-limit-mb", str(args.memory_limit_mb)]
                            + (["--engine", args.engine] if args.engine else []),
                            stdout=log, stderr=log)


def wait_ready(url, proc, within_s):
    started = time.time()
    while time.time() - started < within_s * 6:
        if proc.poll() is not None:
            raise AssertionError("the server exited")
        if ready(url):
            return time.time() - started
        time.sleep(0.02)
    raise AssertionError("the server never became ready")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--memory-limit-mb", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=32)
    # Unless given, the server's default engine.
    ap.add_argument("--engine", choices=["sled", "fjall"])
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="dynaraft-memory-")
    log = open(data + ".log", "w")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(args.binary, data, port, args, log)
    try:
        wait_ready(url, server, 10)
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.time(), rss_mib(server.pid)))
                stop.wait(RSS_SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        seconds = int(args.minutes * 60)
        bench = subprocess.run(
            [args.binary, "bench", "--endpoint", url, "--workload", "put", "--distribution", "uniform",
             "--records", str(RECORDS), "--load", "never", "--duration-s", str(seconds),
             "--warmup-s", "0", "--concurrency", str(args.concurrency), "--quiet"],
            capture_output=True, text=True)
        stop.set()
        sampler.join()
        print(bench.stdout.strip()[-1500:])
        if bench.returncode != 0:
            print(bench.stderr[-2000:])
            raise AssertionError("the benchmark failed")
        start_t = samples[0][0]
        for t, rss in samples[:: max(1, len(samples) // 20)]:
            print(f"  t={t - start_t:6.0f} s  RSS {rss:7.1f} MiB")
        peak = max(r for _, r in samples)
        wal = sum(f.stat().st_size for f in os.scandir(os.path.join(data, "wal")) if f.is_file())
        store = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs)
        print(f"peak RSS {peak:.1f} MiB (budget {args.memory_limit_mb} MiB); "
              f"data dir {store / 2**20:.0f} MiB, WAL {wal / 2**20:.0f} MiB")
        server.send_signal(signal.SIGKILL)
        server.wait()
        server = start(args.binary, data, port, args, log)
        took = wait_ready(url, server, RESTART_WITHIN_S)
        print(f"restart after kill -9: ready in {took:.2f} s")
        assert peak <= args.memory_limit_mb, f"RSS {peak:.1f} MiB passed the budget"
        assert took <= RESTART_WITHIN_S, f"restart took {took:.2f} s"
        print("memory_budget: ok")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
