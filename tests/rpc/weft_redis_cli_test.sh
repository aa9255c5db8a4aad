#!/usr/bin/env bash
# weft-redis driven by the real Redis clients (Debian's redis-tools):
# redis-cli round trips and a pipelined script (--pipe), redis-benchmark
# with no errors, a client that pipelines and never reads is closed past
# --weft_redis_client_output_limit while others are served, and a flood of
# connections past --max_connections is cut while the server stays up.
#   weft_redis_cli_test.sh WEFT_REDIS [BENCH_REQUESTS]
set -u
bin="$1"
bench_n="${2:-100000}"
. "$(dirname "$0")/../../tools/common/server_script_lib.sh"
fail() { echo "FAIL: $*"; [ -f "$work/server.err" ] && tail -5 "$work/server.err"; exit 1; }
command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null ||
  fail "redis-cli / redis-benchmark missing (tools/install-deps)"

# start_redis [flags...]: weft-redis on a free port; sets server_pid and port.
start_redis() { start_server "$bin" --port 0 "$@"; }
cli() { timeout 20 redis-cli -h 127.0.0.1 -p "$port" "$@"; }
expect() {
  local want="$1"
  shift
  local got
  got=$(cli "$@") || fail "redis-cli $* exited $?"
  [ "$got" = "$want" ] || fail "redis-cli $*: got '$got', want '$want'"
}

# ---- round trips ----
start_redis
expect PONG PING
expect OK SET greeting "hello world"
expect "hello world" GET greeting
expect 1 INCR counter
expect 2 INCR counter
expect 12 INCRBY counter 10
expect 11 DECR counter
expect 1 DEL greeting
expect "" GET greeting
expect "ERR unknown command 'NOPE', with args beginning with: 'x' " NOPE x
expect "ERR wrong number of arguments for 'get' command" GET

# ---- a pipelined script: 2000 commands in one stream ----
{
  for i in $(seq 1000); do
    printf '*3\r\n$3\r\nSET\r\n$%d\r\nkey%d\r\n$1\r\nv\r\n' $((${#i} + 3)) "$i"
    printf 'INCR piped\r\n'
  done
} >"$work/script.resp"
cli --pipe <"$work/script.resp" >"$work/pipe.out" 2>&1 || fail "redis-cli --pipe: $(cat "$work/pipe.out")"
grep -q 'errors: 0, replies: 2000' "$work/pipe.out" || fail "--pipe: $(cat "$work/pipe.out")"
expect 1000 GET piped
expect 1002 DBSIZE

# ---- redis-benchmark, pipelined ----
timeout 300 redis-benchmark -h 127.0.0.1 -p "$port" -t ping,set,get,incr,mset -n "$bench_n" \
  -P 16 -q >"$work/bench.out" 2>&1 || fail "redis-benchmark exited $?: $(cat "$work/bench.out")"
tr '\r' '\n' <"$work/bench.out" | grep -v '^ *$' | grep -v 'requests per second' |
  grep -iv 'rps=' >"$work/bench.bad"
[ -s "$work/bench.bad" ] && fail "redis-benchmark: $(cat "$work/bench.bad")"
for t in PING_INLINE PING_MBULK SET GET INCR MSET; do
  tr '\r' '\n' <"$work/bench.out" | grep -Eq "^ *$t( \(10 keys\))?: [0-9.]+ requests per second" ||
    fail "redis-benchmark: no $t line: $(cat "$work/bench.out")"
done
expect PONG PING
stop_server

# ---- a client that pipelines and never reads ----
start_redis --weft_redis_client_output_limit=1048576
head -c 65536 /dev/zero | tr '\0' 'v' >"$work/big"
cli -x SET big <"$work/big" >/dev/null || fail "SET big"
(
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  # 64 MiB of replies asked for, none read; bounded by the count.
  for _ in $(seq 1024); do printf 'GET big\r\n' >&3 || exit 0; done
  sleep 30
) 2>/dev/null &
hog=$!
closed=""
for _ in $(seq 100); do
  if grep -q 'output over --weft_redis_client_output_limit' "$work/server.err"; then
    closed=1
    break
  fi
  sleep 0.1
done
[ -n "$closed" ] || fail "the unread client was not closed past the output limit"
expect PONG PING
kill "$hog" 2>/dev/null
wait "$hog" 2>/dev/null
stop_server

# ---- a flood of connections past max_connections ----
start_redis --max_connections=8
fds=()
for _ in $(seq 30); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$port" || fail "connect"
  fds+=("$fd")
done
cut=0
for fd in "${fds[@]}"; do
  # EOF (status 1, not a timeout's >128) means the server closed it.
  read -r -t 1 -u "$fd" _
  rc=$?
  [ "$rc" -gt 128 ] || cut=$((cut + 1))
done
[ "$cut" -ge 22 ] || fail "only $cut of 30 connections cut with --max_connections=8"
for fd in "${fds[@]}"; do exec {fd}>&-; done
served=""
for _ in $(seq 50); do
  if [ "$(cli PING 2>/dev/null)" = PONG ]; then
    served=1
    break
  fi
  sleep 0.1
done
[ -n "$served" ] || fail "not served after the flood went away"
stop_server

echo "weft-redis CLI: ok"
