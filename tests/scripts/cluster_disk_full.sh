#!/usr/bin/env bash
# A storage node of a local three-zone cluster whose disk fills under load,
# then frees: how long until it has caught up. Not part of `make test` (a
# measurement; docs/reliability.md has what it printed). Needs root: node 3's
# data directory is a tmpfs, mounted in a private mount namespace.
#
# Usage: cluster_disk_full.sh <dynaraft binary> <python with boto3>
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "cluster_disk_full: needs root"; exit 1; fi
if [ -z "${CLUSTER_DISK_FULL_NS:-}" ]; then
  CLUSTER_DISK_FULL_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
BIN="$(realpath "$1")"; PY="$2"
HERE="$(cd "$(dirname "$0")/../.." && pwd)"
DISK_MB=512 BALLAST_MB=430 WRITES=1500 ITEM_BYTES=100000 FREE_AT=1000
D="$(mktemp -d)"
trap 'cp "$D"/node-*.log /tmp/ 2>/dev/null || true; "$HERE/deploy/local/cluster.sh" stop "$D" >/dev/null 2>&1 || true; umount -l "$D/node-3" 2>/dev/null || true; rm -rf "$D"' EXIT
mkdir -p "$D/node-3"
mount -t tmpfs -o size=${DISK_MB}m tmpfs "$D/node-3"
dd if=/dev/zero of="$D/node-3/ballast" bs=1M count=$BALLAST_MB 2>/dev/null
"$HERE/deploy/local/cluster.sh" start "$BIN" "$D" 18600 18601 >/dev/null
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
"$PY" - "$BIN" "$D" $WRITES $ITEM_BYTES $FREE_AT <<'PY'
import os, re, subprocess, sys, time
import boto3
binary, d, writes, item_bytes, free_at = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
c = boto3.client("dynamodb", endpoint_url="http://127.0.0.1:18600")
c.create_table(TableName="full", BillingMode="PAY_PER_REQUEST",
               KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
               AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
c.get_waiter("table_exists").wait(TableName="full")
control = open(os.path.join(d, "control")).read().strip()

def lag3():
    out = subprocess.run([binary, "admin", "--control", control], capture_output=True, text=True).stdout
    lags = re.findall(r"\b3:(\d+)", out)
    return int(lags[0]) if lags else None

errors, freed = 0, None
started = time.time()
for i in range(writes):
    try:
        c.put_item(TableName="full", Item={"id": {"S": str(i)}, "v": {"S": "x" * item_bytes}})
    except Exception as e:
        errors += 1
        print("error", i, str(e)[:160])
    if i == free_at:
        os.remove(os.path.join(d, "node-3", "ballast"))
        freed = time.time()
        print(f"ballast deleted after write {i}; node 3 lag {lag3()} entries", flush=True)
ended = time.time()
print(f"{writes} writes of {item_bytes} B in {ended - started:.1f} s, {errors} client errors")
while True:
    lag = lag3()
    if lag == 0:
        break
    if time.time() - ended > 300:
        sys.exit(f"node 3 still {lag} entries behind 300 s after the load")
    time.sleep(0.5)
print(f"node 3 caught up {time.time() - freed:.1f} s after space was freed "
      f"({time.time() - ended:.1f} s after the load ended)")
PY
grep -cE "storage failed; the node restarts" "$D/node-3.log" | sed 's/^/node 3 re-executed after a storage failure: /; s/$/ time(s)/'
