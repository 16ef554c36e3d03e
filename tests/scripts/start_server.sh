#!/usr/bin/env bash
# Starts a real dynaraft process on a free port with a fresh data dir.
# Usage: source start_server.sh <binary>; sets DYNARAFT_URL and a trap
# that stops the server and removes the data dir on exit. When DYNARAFT_URL
# is already set (a running cluster), nothing is started.
set -euo pipefail
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
if [ -n "${DYNARAFT_URL:-}" ]; then
  return 0
fi
BIN="$1"
DATA_DIR="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$BIN" embedded --port "$PORT" --data-dir "$DATA_DIR" --transition-delay-ms 200 >"$DATA_DIR.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; rm -rf "$DATA_DIR" "$DATA_DIR.log"' EXIT
# Wait for the health line (python3, not curl: a fresh machine may lack curl).
python3 - "$PORT" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
PY
export DYNARAFT_URL="http://127.0.0.1:$PORT"
# The embedded server's object store (exports and imports).
export DYNARAFT_OBJECTS="$DATA_DIR/objects"
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
