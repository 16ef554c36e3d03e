"""On-demand backups survive kill -9 of the server while they are copied.

Usage: backup_crash.py <dynaraft binary>. Starts the embedded server on a
fresh data directory (two partitions per table), fills a table, and then,
round after round: writers change the table (each owns its keys and writes
them one call at a time, noting when it called and when it was answered),
a backup is requested, and the process is killed with SIGKILL a moment
later, mid-copy in most rounds. After the restart the backup must finish
on its own (its partitions' change-log pins are in the replicated state),
and the table restored from it must hold, for every key, the last write
answered at or before the backup's moment T, or the next one if that was
called at or before T (in flight: either is right), and nothing else. A
write cut by the kill was never answered, so it counts as in flight from
its call on.
"""
import random
import signal
import sys
import threading
import time

from ports import client, run_restarting, scan_items

ROUNDS = 4
WRITERS = 4
KEYS_PER_WRITER = 300
PAD = "x" * 200
# How long writers run before the backup, and the longest wait between the
# backup's request and the kill, in seconds.
WRITE_BEFORE_S = 0.5
KILL_WITHIN_S = 0.4
SETTLE_WITHIN_S = 60
NEVER = float("inf")
TABLE = "backed"


def now_ms():
    return time.time() * 1000.0


def writer(ddb, keys, history, stop):
    """Writes `keys` in turn until `stop` or the server is gone: puts, and
    every fifth write a delete. history[key] gets [value, called, answered]
    entries (answered NEVER until it is)."""
    n = 0
    while not stop.is_set():
        for k in keys:
            n += 1
            value = None if n % 5 == 0 else f"v{n}-{random.random():.6f}"
            entry = [value, now_ms(), NEVER]
            history.setdefault(k, []).append(entry)
            try:
                if value is None:
                    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": k}})
                else:
                    ddb.put_item(TableName=TABLE, Item={"pk": {"S": k}, "v": {"S": value},
                                                       "pad": {"S": PAD}})
            except Exception:  # noqa: BLE001 - the server was killed
                return
            entry[2] = now_ms()
            if stop.is_set():
                return


def allowed_at(writes, before, t_ms):
    last = None
    for i, (_, _, answered) in enumerate(writes):
        if answered <= t_ms:
            last = i
    ok = [writes[last][0] if last is not None else before]
    # Every later write called by T may have been applied by T: one in
    # flight, and before it any cut by an earlier round's kill (never
    # answered, so the next round's writes of the key follow it). T is a
    # whole millisecond (writes are stamped in milliseconds too), so a
    # write called during T's millisecond may be on either side of it.
    nxt = 0 if last is None else last + 1
    ok += [w[0] for w in writes[nxt:] if w[1] < t_ms + 1]
    return ok


def wait_for(what, predicate):
    deadline = time.time() + SETTLE_WITHIN_S
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {SETTLE_WITHIN_S} s: {what}")


def main():
    run_restarting(sys.argv[1], run, "--partitions-per-table", "2")


def run(start, _data):
    proc, url = start()
    ddb = client(url)
    ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    keys = [[f"w{w}-k{i}" for i in range(KEYS_PER_WRITER)] for w in range(WRITERS)]
    history = {}
    for k in (k for ks in keys for k in ks):
        ddb.put_item(TableName=TABLE, Item={"pk": {"S": k}, "v": {"S": "initial"}, "pad": {"S": PAD}})
        history[k] = [["initial", 0, 0]]
    mid_copy = 0
    for rnd in range(ROUNDS):
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(client(url), ks, history, stop))
                   for ks in keys]
        for t in threads:
            t.start()
        time.sleep(WRITE_BEFORE_S)
        made = ddb.create_backup(TableName=TABLE, BackupName=f"round{rnd}")["BackupDetails"]
        arn, t_ms = made["BackupArn"], made["BackupCreationDateTime"].timestamp() * 1000.0
        # The first round kills at once (mid-copy), the others at random.
        time.sleep(random.uniform(0, KILL_WITHIN_S) if rnd else 0)
        status = ddb.describe_backup(BackupArn=arn)["BackupDescription"]["BackupDetails"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_copy += status["BackupStatus"] == "CREATING"
        stop.set()
        for t in threads:
            t.join()
        proc, url = start()
        ddb = client(url)
        backup = lambda: ddb.describe_backup(BackupArn=arn)["BackupDescription"]  # noqa: E731
        wait_for("backup AVAILABLE", lambda: backup()["BackupDetails"]["BackupStatus"] == "AVAILABLE")
        target = f"restored{rnd}"
        ddb.restore_table_from_backup(TargetTableName=target, BackupArn=arn)
        wait_for("restore ACTIVE",
                 lambda: ddb.describe_table(TableName=target)["Table"]["TableStatus"] == "ACTIVE")
        got = {it["pk"]["S"]: it["v"]["S"] for it in scan_items(ddb, target)}
        in_flight = 0
        for k, writes in history.items():
            # The preload is each key's first entry.
            ok = allowed_at(writes, None, round(t_ms))
            value = got.get(k)
            assert value in ok, f"round {rnd + 1}: {k} restored as {value}, allowed {ok}"
            in_flight += len(ok) > 1
        assert set(got) <= set(history), "the restored table has keys nobody wrote"
        count = backup()["SourceTableDetails"]["ItemCount"]
        assert count == len(got), f"ItemCount {count}, restored {len(got)}"
        print(f"round {rnd + 1}: killed with the backup {status['BackupStatus']}; "
              f"{len(got)} items restored as of T, {in_flight} keys in flight at T")
    assert mid_copy > 0, "no round killed the server while a backup was being copied"
    print(f"backup_crash: {ROUNDS} kill -9 rounds ({mid_copy} mid-copy), every restore exact")


if __name__ == "__main__":
    main()
