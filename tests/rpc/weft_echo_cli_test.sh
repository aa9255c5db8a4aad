#!/usr/bin/env bash
# weft-echo as rpc.md says: server prints "listening on", the client's
# progress and summary lines, the histogram's counts sum to calls, SIGTERM
# stops the server with 0, bad flags exit 2, and a server killed mid-run
# makes calls fail without hanging the client.
set -u
bin="$1"
. "$(dirname "$0")/../../tools/common/server_script_lib.sh"

start_server "$bin" server --port 0
"$bin" client --server "127.0.0.1:$port" --concurrency 4 --payload 100 --duration 2 \
  --histogram "$work/hist.csv" >"$work/client.out" || fail "client exited $?"
grep -q '^progress: ' "$work/client.out" || fail "no progress line"
summary=$(grep '^summary: ' "$work/client.out")
[ "$(grep -c '^summary: ' "$work/client.out")" = 1 ] || fail "not exactly one summary line"
echo "$summary" | grep -Eq '^summary: qps=[0-9.]+ p50_us=[0-9]+ p99_us=[0-9]+ p999_us=[0-9]+ errors=0 calls=[0-9]+$' \
  || fail "bad summary: $summary"
calls=$(echo "$summary" | sed 's/.*calls=//')
sum=$(tail -n +2 "$work/hist.csv" | awk -F, '{s+=$2} END{print s+0}')
[ "$sum" = "$calls" ] || fail "histogram sums to $sum, calls=$calls"
sort -t, -k1,1n -c <(tail -n +2 "$work/hist.csv" | grep -v '^inf') || fail "histogram not ascending"

"$bin" client --server "127.0.0.1:$port" --concurrency 2 --duration 1 --connection_type pooled \
  >"$work/pooled.out" || fail "pooled client exited $?"
grep -Eq '^summary: .* errors=0 calls=[1-9]' "$work/pooled.out" || fail "pooled: $(cat "$work/pooled.out")"
"$bin" client --server "127.0.0.1:$port" --concurrency 2 --duration 1 --connection_type short \
  >"$work/short.out" || fail "short client exited $?"
grep -Eq '^summary: .* errors=0 calls=[1-9]' "$work/short.out" || fail "short: $(cat "$work/short.out")"

stop_server

"$bin" client --server 127.0.0.1:1 --no_such_flag=1 >/dev/null 2>&1
[ $? = 2 ] || fail "unknown flag did not exit 2"
"$bin" client --server 127.0.0.1:1 --connection_type bogus >/dev/null 2>&1
[ $? = 2 ] || fail "bad connection type did not exit 2"
"$bin" frobnicate >/dev/null 2>&1
[ $? = 2 ] || fail "bad mode did not exit 2"

# Callers it cannot start (a fiber cap below --concurrency): the client
# says so and exits 1 after the callers it did start have stopped (they
# use its stack: returning under them crashed or hung).
start_server "$bin" server --port 0
"$bin" client --server "127.0.0.1:$port" --concurrency 64 --duration 5 --weft_max_fibers=16 \
  >"$work/capped.out" 2>"$work/capped.err"
rc=$?
[ "$rc" = 1 ] || fail "fiber-capped client exited $rc: $(cat "$work/capped.err")"
grep -q 'cannot start a caller fiber' "$work/capped.err" || fail "capped: $(cat "$work/capped.err")"
kill -TERM "$server_pid"
wait "$server_pid"

# Killed mid-run: errors are counted, the client ends near --duration.
start_server "$bin" server --port 0
"$bin" client --server "127.0.0.1:$port" --concurrency 8 --duration 3 >"$work/killed.out" &
client_pid=$!
sleep 1
kill -9 "$server_pid"
t0=$(date +%s)
wait "$client_pid" || fail "client exited $? after the server died"
t1=$(date +%s)
[ $((t1 - t0)) -le 6 ] || fail "client took $((t1 - t0)) s after the server died"
grep -Eq '^summary: .* errors=[1-9][0-9]* calls=' "$work/killed.out" || fail "killed: $(tail -2 "$work/killed.out")"
echo "weft-echo CLI: ok"
