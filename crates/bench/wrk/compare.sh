#!/usr/bin/env bash
# The independent comparison of issue 27: wrk (a load generator we did not
# write) sends GetItem and PutItem at 32 connections to dynalite and to
# `dynaraft embedded` (on disk, every write fsynced), one after the other in
# one sitting, and `dynaraft bench` runs the same two operations against
# the same servers, so that the report's ratios can be checked against
# another client's. Prints a Markdown table.
#
#   crates/bench/wrk/compare.sh        (make bench-wrk; after make bench,
#                                       which installs dynalite)
#
# Installs wrk with apt-get when missing (root), dynalite with npm.
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-target/release/dynaraft}
OUT=${OUT:-target/bench/wrk}
DYNALITE_DIR=${DYNALITE_DIR:-target/bench/dynalite}
DYNALITE_VERSION=${DYNALITE_VERSION:-3.2.2}
RECORDS=${RECORDS:-100000}
SECS=${WRK_SECONDS:-10}
CONNS=32
LUA=crates/bench/wrk/dynamodb.lua

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
CLI="$DYNALITE_DIR/node_modules/dynalite/cli.js"
[ -f "$CLI" ] || npm install --no-audit --no-fund --loglevel=error --prefix "$DYNALITE_DIR" "dynalite@$DYNALITE_VERSION"
rm -rf "$OUT" && mkdir -p "$OUT"

wait_up() {
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1" && return 0; sleep 0.1; done
  echo "nothing answers on port $1" >&2; return 1
}

# wrk OP PORT: requests/s, refusing a run with any non-200 answer.
run_wrk() {
  local out
  out=$(OP=$1 RECORDS=$RECORDS wrk -t2 -c$CONNS -d${SECS}s -s $LUA "http://127.0.0.1:$2/")
  echo "$out" >>"$OUT/wrk.log"
  if ! grep -q "^non-200 answers: 0$" <<<"$out" || grep -q "Non-2xx" <<<"$out"; then
    echo "wrk $1 against port $2 had errors:" >&2; echo "$out" >&2; return 1
  fi
  awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out"
}

# ours WORKLOAD PORT: dynaraft bench's ops/s (successful operations only).
run_ours() {
  "$BIN" bench --endpoint "http://127.0.0.1:$2" --workload "$1" --records "$RECORDS" \
    --distribution uniform --load never --duration-s "$SECS" --quiet --json "$OUT/bench.json" >>"$OUT/bench.log" 2>&1
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print("%.0f" % s["throughput"] if s["errors"] == 0 else "errors")' "$OUT/bench.json"
}

measure() {  # NAME PORT
  "$BIN" bench --endpoint "http://127.0.0.1:$2" --workload c --records "$RECORDS" \
    --duration-s 1 --warmup-s 0 --quiet >>"$OUT/bench.log" 2>&1
  # dynaraft bench first: wrk's PutItems replace the items with ones the
  # bench's answer check would not recognise.
  g=$(run_ours c "$2"); p=$(run_ours put "$2")
  G=$(run_wrk get "$2"); P=$(run_wrk put "$2")
  echo "$1 $G $P $g $p"
}

node "$CLI" --port 18501 >"$OUT/dynalite.log" 2>&1 &
DPID=$!
wait_up 18501
D=$(measure dynalite 18501)
kill $DPID; wait $DPID 2>/dev/null || true

"$BIN" embedded --port 18502 --data-dir "$OUT/data" >"$OUT/embedded.log" 2>&1 &
EPID=$!
wait_up 18502
E=$(measure embedded 18502)
kill $EPID; wait $EPID 2>/dev/null || true

python3 - "$D" "$E" <<'PY'
import sys
d, e = (l.split() for l in sys.argv[1:3])
print("| | GetItem, wrk | PutItem, wrk | GetItem, dynaraft bench | PutItem, dynaraft bench |")
print("|---|---|---|---|---|")
for row in (d, e):
    print(f"| {row[0]} | " + " | ".join(row[1:]) + " |")
ratio = lambda i: f"{float(e[i]) / float(d[i]):.2f}x" if "errors" not in (d[i], e[i]) else "-"
print("| embedded / dynalite | " + " | ".join(ratio(i) for i in range(1, 5)) + " |")
PY
