#!/usr/bin/env bash
# The RESP floor answers real clients correctly: started on a free port,
# redis-cli's SET / GET / PING round trips give Redis's replies, and
# `redis-benchmark -t ping,set,get -P 16` runs every row with no error.
# A malformed request closes its connection only. Then SIGTERM must end it
# with 0.
#   smoke_test.sh SERVER_BINARY [--block]
set -u
server_bin="$1"
shift
. "$(dirname "$0")/../../tools/common/server_script_lib.sh"
start_server "$server_bin" --port 0 "$@"

cli() { timeout 10 redis-cli -h 127.0.0.1 -p "$port" "$@"; }
[ "$(cli ping)" = PONG ] || fail "PING"
[ "$(cli set k hello)" = OK ] || fail "SET"
[ "$(cli get k)" = hello ] || fail "GET"
[ -z "$(cli get missing)" ] || fail "GET of a missing key"
cli nosuch | grep -q "ERR unknown command" || fail "an unknown command"

# A malformed array closes that connection; the server keeps serving.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf '*x\r\n' >&3
timeout 5 cat <&3 >/dev/null || fail "the malformed request's connection stayed open"
exec 3<&-
[ "$(cli ping)" = PONG ] || fail "PING after a malformed request"

timeout 60 redis-benchmark -h 127.0.0.1 -p "$port" -t ping,set,get -c 8 -n 20000 -P 16 -q \
  >"$work/bench.out" 2>&1 || fail "redis-benchmark exited $?: $(cat "$work/bench.out")"
tr '\r' '\n' <"$work/bench.out" | grep -Ei "error|warning" && fail "redis-benchmark reported errors"
for row in PING_INLINE PING_MBULK SET GET; do
  tr '\r' '\n' <"$work/bench.out" | grep -q "^$row: [0-9.]* requests per second" || fail "no $row row"
done

stop_server
echo "smoke: ok"
