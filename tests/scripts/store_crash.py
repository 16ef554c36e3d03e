"""The store's own files across kill -9: memtable flushes, compactions and
fjall's blob files (values of SEPARATED_VALUE_BYTES and more are kept
apart from the tree, crates/storage/src/kv.rs) written and collected while
the process dies, and the idle compaction (crates/cluster/src/host.rs,
Host::compact_idle: journal sealed, memtable flushed, tree merged, logs
purged, WAL segment closed and deleted) killed part-way.

Usage: store_crash.py <dynaraft binary>. Starts the embedded server on a
fresh data directory with a small memory budget, so that its memtables are
about a megabyte and flush every few hundred writes. WRITERS threads
overwrite KEYS keys again and again with values from 100 bytes to 3 KB
(most of them separated, some not; every value names its key and version
and has a length that is a function of both), while the process is killed
with SIGKILL at random moments. Every other round the writers stop
instead, the server goes idle (IDLE_AFTER_MS) and is killed while its
idle compaction runs: after its log says it started, at a random moment
within as long as the previous one took. After
every restart a consistent Scan must
show each key holding the last value acknowledged for it, or the one whose
PutItem was in flight at the kill, whole. At the end the data directory
must hold blob files, so that the separated path was exercised, and the
server's log must have no error from the store. Last, after one more
burst of writes and an idle compaction let finish, the WAL must be down to
one small segment and fjall to its one active journal.
"""
import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from ports import client, free_port, scan_items, start_embedded

ROUNDS = 8
WRITERS = 4
KEYS = 1200
# Acknowledged overwrites each round before the kill may come (then 0-2 s
# more): enough over the rounds for blob files to be collected, however
# fast the machine (a round of 2-5 s wrote ~1,800 here alone, ~700 with
# two other tests running, and then nothing was collected).
MIN_ROUND_WRITES = 1500
# Longest wait for them, in seconds.
MAX_ROUND_S = 60
# MiB: the store gets 4% of it per memtable (crates/cluster/src/host.rs,
# MEMTABLE_PERCENT), about 1.3 MiB.
MEMORY_LIMIT_MB = 32
TABLE = "store"
# The server compacts after this long without a write (a short
# --idle-compaction-after-ms; 5 s by default).
IDLE_AFTER_MS = 300
# Idle rounds kill the server at a random moment of the idle compaction:
# up to as long after its start as the last one took (this long before any
# finished), in seconds. One took 50-90 ms here (debug build).
IDLE_KILL_WINDOW_S = 0.1
# Longest wait for an idle compaction to start, or to finish, in seconds.
IDLE_WAIT_S = 30
# What the WAL's open segment may hold once an idle compaction finished:
# the purge points it logs again, not the writes before it, in bytes.
IDLE_SEGMENT_MAX_BYTES = 64 * 1024


def value(key, version):
    """The value version `version` of key `key` carries: 100 B - 3 KB."""
    size = 100 + (key * 7919 + version * 104729) % 2900
    head = f"{key}:{version}:"
    return head + "v" * (size - len(head))


def write_until_killed(ddb, keys, acked, in_flight, acks, w, stop):
    """Overwrites `keys` in random order; `acked[k]` is the last version
    acknowledged, `in_flight[k]` the one sent and not answered; `acks[w]`
    counts the acknowledgements."""
    rng = random.Random()
    while not stop.is_set():
        k = rng.choice(keys)
        v = acked.get(k, 0) + 1
        in_flight[k] = v
        try:
            ddb.put_item(TableName=TABLE, Item={"pk": {"S": f"k{k}"},
                                                "val": {"S": value(k, v)}})
        except Exception:
            return
        acked[k] = v
        del in_flight[k]
        acks[w] += 1


def check(ddb, acked, in_flight):
    """Every key holds its acknowledged value or the one in flight, whole;
    returns the version each key holds."""
    seen = {}
    for item in scan_items(ddb, TABLE):
        k = int(item["pk"]["S"][1:])
        text = item["val"]["S"]
        v = int(text.split(":")[1])
        assert text == value(k, v), f"k{k}: version {v} is not whole ({len(text)} bytes)"
        seen[k] = v
    for k, v in acked.items():
        allowed = {v, in_flight.get(k)}
        assert seen.get(k) in allowed, f"k{k}: acknowledged version {v}, found {seen.get(k)}"
    for k, v in in_flight.items():
        if k not in acked:
            assert seen.get(k) in (None, v), f"k{k}: never acknowledged, found {seen.get(k)}"
    return seen


def log_count(path, text):
    """Lines of the server's log at `path` that contain `text`."""
    with open(path, errors="replace") as f:
        return sum(text in line for line in f)


def last_compaction_s(path):
    """How long the last idle compaction in the log took, in seconds."""
    took = IDLE_KILL_WINDOW_S
    with open(path, errors="replace") as f:
        for line in f:
            if "idle compaction done" in line:
                took = json.loads(line)["fields"]["seconds"]
    return took


def wait_log(path, text, count):
    """Waits for the log to hold more than `count` lines with `text`."""
    deadline = time.time() + IDLE_WAIT_S
    while log_count(path, text) <= count:
        assert time.time() < deadline, f"no new {text!r} in the log after {IDLE_WAIT_S} s"
        time.sleep(0.002)


def write_burst(url, shares, acked, in_flight, acks, what):
    """Starts one writer per share and returns (stop event, threads) once
    they have MIN_ROUND_WRITES more acknowledgements."""
    stop = threading.Event()
    writers = [threading.Thread(target=write_until_killed,
                                args=(client(url), shares[w], acked[w], in_flight[w],
                                      acks, w, stop))
               for w in range(WRITERS)]
    started, counted = time.time(), sum(acks)
    for t in writers:
        t.start()
    while sum(acks) - counted < MIN_ROUND_WRITES:
        assert time.time() - started < MAX_ROUND_S, \
            f"{what}: {sum(acks) - counted} writes in {MAX_ROUND_S} s"
        time.sleep(0.05)
    return stop, writers


def main():
    binary = sys.argv[1]
    tmp = tempfile.mkdtemp()
    data = os.path.join(tmp, "data")
    log_path = os.path.join(tmp, "server.log")
    port = free_port()
    flags = ("--memory-limit-mb", str(MEMORY_LIMIT_MB),
             "--idle-compaction-after-ms", str(IDLE_AFTER_MS))
    log = open(log_path, "ab")
    proc, url = start_embedded(binary, data, port, *flags, stderr=log)
    ddb = client(url)
    ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    # Each writer owns its keys, so one key has at most one write in flight.
    shares = [list(range(w, KEYS, WRITERS)) for w in range(WRITERS)]
    acked = [{} for _ in range(WRITERS)]
    acks = [0] * WRITERS
    total = 0
    # Idle rounds killed before their compaction had finished.
    killed_mid_compaction = 0
    try:
        for rnd in range(ROUNDS):
            in_flight = [{} for _ in range(WRITERS)]
            counted = sum(acks)
            stop, writers = write_burst(url, shares, acked, in_flight, acks, f"round {rnd + 1}")
            idle = rnd % 2 == 1
            if idle:
                started, done = (log_count(log_path, "idle compaction started"),
                                 log_count(log_path, "idle compaction done"))
                stop.set()
                for t in writers:
                    t.join()
                window = last_compaction_s(log_path)
                wait_log(log_path, "idle compaction started", started)
                time.sleep(random.uniform(0.0, window))
            else:
                time.sleep(random.uniform(0.0, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stop.set()
            for t in writers:
                t.join()
            if idle and log_count(log_path, "idle compaction done") == done:
                killed_mid_compaction += 1
            writes = sum(acks) - counted
            total += writes
            proc, url = start_embedded(binary, data, port, *flags, stderr=log)
            ddb = client(url)
            merged_acked = {k: v for a in acked for k, v in a.items()}
            merged_flight = {k: v for f in in_flight for k, v in f.items()}
            seen = check(ddb, merged_acked, merged_flight)
            # What was in flight and landed is now the acknowledged version.
            for w in range(WRITERS):
                for k, v in in_flight[w].items():
                    if seen.get(k) == v:
                        acked[w][k] = v
            print(f"round {rnd + 1}{' (idle)' if idle else ''}: {writes} acknowledged "
                  f"overwrites, {len(merged_acked)} keys as acknowledged")
        # One more burst, then an idle compaction let finish.
        done = log_count(log_path, "idle compaction done")
        stop, writers = write_burst(url, shares, acked, [{} for _ in range(WRITERS)], acks,
                                    "last burst")
        stop.set()
        for t in writers:
            t.join()
        wait_log(log_path, "idle compaction done", done)
        segments = glob.glob(os.path.join(data, "wal", "wal-*.log"))
        journals = glob.glob(os.path.join(data, "fjall", "*.jnl"))
        assert len(segments) == 1, f"WAL segments after an idle compaction: {segments}"
        segment_bytes = os.path.getsize(segments[0])
        assert segment_bytes <= IDLE_SEGMENT_MAX_BYTES, \
            f"the open WAL segment holds {segment_bytes} bytes after an idle compaction"
        assert len(journals) == 1, f"fjall journals after an idle compaction: {journals}"
        check(client(url), {k: v for a in acked for k, v in a.items()}, {})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        log.close()
    blobs = [f for f in glob.glob(os.path.join(data, "fjall", "keyspaces", "*", "blobs", "*"))
             if os.path.isfile(f)]
    assert blobs, "no blob file under the data directory: the separated path was not exercised"
    # Blob files are numbered from 0 as they are written: fewer files than
    # numbers means some were collected (rewritten or dropped) on the way.
    written = max(int(os.path.basename(f)) for f in blobs) + 1
    assert written > len(blobs), f"none of {written} blob files was collected"
    with open(log_path, errors="replace") as f:
        errors = [line for line in f if "ERROR" in line or "panicked" in line]
    assert not errors, f"the server logged errors: {errors[:5]}"
    print(f"store_crash: {ROUNDS} kill -9 rounds ({ROUNDS // 2} idle, "
          f"{killed_mid_compaction} of them before the idle compaction finished), {total} "
          f"acknowledged overwrites of {KEYS} keys, every key as acknowledged, {written} blob "
          f"files written, {len(blobs)} left; after a last idle compaction one WAL segment of "
          f"{segment_bytes} bytes and one journal")


if __name__ == "__main__":
    main()
