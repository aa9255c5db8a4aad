#!/usr/bin/env bash
# A baseline echo server answers `weft-echo client` correctly: started on a
# free port, driven for 1 s over single, pooled and short connections, every
# call must succeed (errors=0, calls > 0; the client checks each reply's
# length). Then SIGTERM must end it with 0.
#   smoke_test.sh SERVER_BINARY WEFT_ECHO_BINARY
set -u
server_bin="$1"
echo_bin="$2"
. "$(dirname "$0")/../../tools/common/server_script_lib.sh"
start_server "$server_bin" --port 0 --threads 2

for spec in "single 8" "single 64" "pooled 4" "short 2"; do
  set -- $spec
  "$echo_bin" client --server "127.0.0.1:$port" --connection_type "$1" --concurrency "$2" \
    --payload 64 --duration 1 >"$work/client.out" || fail "$spec: client exited $?"
  summary=$(grep '^summary: ' "$work/client.out")
  echo "$spec: $summary"
  echo "$summary" | grep -Eq ' errors=0 calls=[1-9][0-9]*$' || fail "$spec: $summary"
done
# A payload spanning many reads and an empty payload come back intact too.
for bytes in 300000 0; do
  "$echo_bin" client --server "127.0.0.1:$port" --concurrency 2 --payload "$bytes" \
    --duration 1 >"$work/client.out" || fail "payload $bytes: client exited $?"
  grep -Eq '^summary: .* errors=0 calls=[1-9][0-9]*$' "$work/client.out" \
    || fail "payload $bytes: $(grep summary "$work/client.out")"
done

stop_server
echo "smoke: ok"
