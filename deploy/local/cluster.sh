#!/usr/bin/env bash
# A local three-zone cluster as separate processes on 127.0.0.1: storage
# nodes 1, 2, 3 in az-a, az-b, az-c (all three control-plane members) and a
# router serving the DynamoDB API.
#
#   cluster.sh start <binary> <data dir> <router port> [node base port] [router flags...]
#   cluster.sh restart <data dir> <node 1-3> [signal]
#   cluster.sh wipe <data dir> <node 1-3>
#   cluster.sh stop <data dir>
#
# NODE_FLAGS adds flags to every storage node, e.g.
# NODE_FLAGS="--split-size-bytes 65536" to watch tables split.
# METRICS_BASE=PORT serves node i's /metrics on 127.0.0.1:PORT+i-1.
# API_BASE=PORT has node i also serve the DynamoDB API on 127.0.0.1:PORT+i-1
# (`node --api-listen`, with the router flags given to `start`).
#
# `start` returns once the router answers and all three nodes are
# registered; pids, logs and each node's command line are kept in the data
# dir. `restart` stops one node with SIGTERM (it hands its leaderships off
# first; another signal, such as KILL, can be named), waits for it to exit and starts it again with the same command
# line (a rolling restart does this node by node, waiting for each one's
# /ready). `wipe` is a lost disk: node N is killed (SIGKILL), its data
# directory deleted, and it starts again empty with the same command line.
# `stop` sends SIGTERM to every process (each shuts down cleanly)
# and waits for them.
set -euo pipefail

wait_ready() {  # <binary> <control> <router port>
  python3 - "$1" "$2" "$3" <<'PY'
import subprocess, sys, time, urllib.request
binary, control, port = sys.argv[1:4]
deadline = time.time() + 30
while time.time() < deadline:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        out = subprocess.run([binary, "admin", "--control", control],
                             capture_output=True, text=True, timeout=10).stdout
        nodes = [l for l in out.splitlines() if l.split()[:1] in (["1"], ["2"], ["3"]) and " yes " in l]
        if len(nodes) == 3:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit("cluster did not become ready in 30 s")
PY
}

case "${1:-}" in
  start)
    BIN="$2"; DIR="$3"; RPORT="$4"; BASE="${5:-7001}"; shift 5 || shift $#
    # Exports and imports: one machine, so every node shares one directory
    # object store (a bucket is a subdirectory of DIR/objects).
    mkdir -p "$DIR/objects"
    OBJECTS="$(cd "$DIR/objects" && pwd)"
    CONTROL="1=127.0.0.1:$BASE@az-a,2=127.0.0.1:$((BASE + 1))@az-b,3=127.0.0.1:$((BASE + 2))@az-c"
    : >"$DIR/pids"
    # A local cluster is open (like DynamoDB Local) unless given an auth file.
    OPEN=--allow-unauthenticated
    case " $* " in *" --auth-file"*) OPEN= ;; esac
    for i in 1 2 3; do
      az="az-$(printf "\\x$(printf %x $((96 + i)))")"
      METRICS=
      [ -n "${METRICS_BASE:-}" ] && METRICS="--metrics-listen 127.0.0.1:$((METRICS_BASE + i - 1))"
      API=()
      [ -n "${API_BASE:-}" ] && API=(--api-listen "127.0.0.1:$((API_BASE + i - 1))" $OPEN "$@")
      cmd=("$BIN" node --id "$i" --az "$az" --listen "127.0.0.1:$((BASE + i - 1))"
        --data-dir "$DIR/node-$i" --control "$CONTROL" --object-store "file://$OBJECTS" ${NODE_FLAGS:-} $METRICS ${API[@]+"${API[@]}"})
      printf '%q ' "${cmd[@]}" >"$DIR/node-$i.cmd"
      "${cmd[@]}" >"$DIR/node-$i.log" 2>&1 &
      echo $! >>"$DIR/pids"
    done
    "$BIN" router --port "$RPORT" --control "$CONTROL" $OPEN "$@" >"$DIR/router.log" 2>&1 &
    echo $! >>"$DIR/pids"
    echo "$CONTROL" >"$DIR/control"
    wait_ready "$BIN" "$CONTROL" "$RPORT"
    ;;
  restart|wipe)
    DIR="$2"; N="$3"; SIG="${4:-TERM}"
    [ "$1" = wipe ] && SIG=KILL
    pid=$(sed -n "${N}p" "$DIR/pids")
    kill -"$SIG" "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    # A lost disk: the node comes back with an empty data directory.
    [ "$1" = wipe ] && rm -rf "$DIR/node-$N"
    bash -c "exec $(cat "$DIR/node-$N.cmd")" >>"$DIR/node-$N.log" 2>&1 &
    new=$!
    sed -i "${N}s/.*/$new/" "$DIR/pids"
    ;;
  stop)
    DIR="$2"
    [ -f "$DIR/pids" ] || exit 0
    pids=$(cat "$DIR/pids")
    kill $pids 2>/dev/null || true
    for p in $pids; do
      while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
    done
    rm -f "$DIR/pids"
    ;;
  *)
    echo "usage: $0 start <binary> <data dir> <router port> [node base port] [router flags...] | restart <data dir> <node> [signal] | wipe <data dir> <node> | stop <data dir>" >&2
    exit 2
    ;;
esac
