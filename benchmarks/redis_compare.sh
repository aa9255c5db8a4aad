#!/usr/bin/env bash
# redis_compare.sh: issue 11's Redis benchmark, weft-redis against Debian's
# redis-server, interleaved in one run so both see the same machine.
#
#   benchmarks/redis_compare.sh [-n REQUESTS] [-P PIPELINE] [-r PAIRS] [-w WEFT_REDIS]
#                               [-f RESP_FLOOR_SERVER] [-p]
#
# Defaults: -n 2000000 -P 16 -r 2 -w build/release/tools/weft-redis
# -f build/release/benchmarks/resp_floor_server. The servers run for the
# whole script on 127.0.0.1 (weft-redis with 2 workers, redis-server with
# persistence off, and the floor: one thread that busy-polls, the cheapest
# server for the client, so its rate is the ceiling of each row on this
# machine; -f "" leaves it out); each redis-benchmark run
#   redis-benchmark -h 127.0.0.1 -p PORT -t TEST -c 50 -n N -P P -q
# holds /tmp/weft-build.lock on its own (one test of one server, so a hold
# stays under ~60 s even without pipelining), in the order
#   pair 1: ping weft, ping redis, set weft, set redis, get weft, get redis
#   pair 2: the same with redis first, and so on alternating;
# the floor runs after both in every pair.
# -p pins every server to CPU 0 and redis-benchmark to CPU 1 (taskset), so
# no row depends on where the kernel put two one-threaded processes;
# weft-redis then runs its default of one worker per CPU it may use (1).
# -t ping,set,get of the issue is the three -t runs together (ping is
# PING_INLINE and PING_MBULK). Prints requests per second per row and the
# ratios weft / redis and floor / redis of each pair.
set -euo pipefail

n=2000000
pipeline=16
pairs=2
weft=build/release/tools/weft-redis
floor=build/release/benchmarks/resp_floor_server
pin_server=()
pin_client=()
weft_threads=(--threads 2)
while getopts "n:P:r:w:f:p" opt; do
  case $opt in
    n) n=$OPTARG ;;
    P) pipeline=$OPTARG ;;
    r) pairs=$OPTARG ;;
    w) weft=$OPTARG ;;
    f) floor=$OPTARG ;;
    p) pin_server=(taskset -c 0); pin_client=(taskset -c 1); weft_threads=() ;;
    *) echo "usage: $0 [-n N] [-P P] [-r PAIRS] [-w WEFT_REDIS] [-f FLOOR] [-p]" >&2; exit 2 ;;
  esac
done

lock=/tmp/weft-build.lock
dir=$(mktemp -d /tmp/redis_compare.XXXXXX)
wpid=""
rpid=""
fpid=""
cleanup() {
  [ -n "$wpid" ] && kill "$wpid" 2>/dev/null || true
  [ -n "$fpid" ] && kill -CONT "$fpid" 2>/dev/null && kill "$fpid" 2>/dev/null || true
  [ -n "$rpid" ] && kill "$rpid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${pin_server[@]}" "$weft" --port 0 "${weft_threads[@]}" >"$dir/w.out" 2>"$dir/w.err" &
wpid=$!
# listening_port FILE: the port of FILE's "listening on 127.0.0.1:PORT" line.
listening_port() {
  local port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$1")
    [ -n "$port" ] && break
    sleep 0.1
  done
  echo "$port"
}
wport=$(listening_port "$dir/w.out")
[ -n "$wport" ] || { echo "weft-redis did not start" >&2; exit 1; }

# The floor spins even when idle, so it is stopped (SIGSTOP) except while
# its own redis-benchmark runs: the other servers' runs get both CPUs.
fport=""
if [ -n "$floor" ] && [ ! -x "$floor" ]; then
  echo "no floor server at $floor: build it (cmake --build build/release --target" \
    "resp_floor_server) or leave it out with -f ''" >&2
  exit 1
fi
if [ -n "$floor" ]; then
  "${pin_server[@]}" "$floor" --port 0 >"$dir/f.out" 2>"$dir/f.err" &
  fpid=$!
  fport=$(listening_port "$dir/f.out")
  [ -n "$fport" ] || { echo "$floor did not start" >&2; exit 1; }
  kill -STOP "$fpid"
fi

# A free port for redis-server: bind one with port 0 and read it back.
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${pin_server[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
  >"$dir/r.log" 2>&1 &
rpid=$!
for _ in $(seq 100); do
  redis-cli -h 127.0.0.1 -p "$rport" ping >/dev/null 2>&1 && break
  sleep 0.1
done

# run SERVER TEST: appends "SERVER ROW RPS P50" lines to $dir/results.
run() {
  local server=$1 test=$2 port lockfd
  case $server in
    weft) port=$wport ;;
    redis) port=$rport ;;
    floor) port=$fport ;;
  esac
  # The floor runs only while this run holds the lock: resumed before it
  # waited, it would spin beside whatever held the lock.
  exec {lockfd}>"$lock"
  flock "$lockfd"
  if [ "$server" = floor ]; then kill -CONT "$fpid"; fi
  timeout 120 "${pin_client[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" -c 50 -n "$n" \
    -P "$pipeline" -q 2>&1 | tr '\r' '\n' | grep "requests per second" |
    sed -n 's/^\([A-Z_]*\): \([0-9.]*\) requests per second, p50=\([0-9.]*\) msec.*/\1 \2 \3/p' |
    while read -r row rps p50; do echo "$pair $server $row $rps $p50"; done >>"$dir/results"
  if [ "$server" = floor ]; then kill -STOP "$fpid"; fi
  exec {lockfd}>&-
}

: >"$dir/results"
for pair in $(seq "$pairs"); do
  for test in ping set get; do
    if [ $((pair % 2)) -eq 1 ]; then
      run weft "$test"; run redis "$test"
    else
      run redis "$test"; run weft "$test"
    fi
    if [ -n "$floor" ]; then run floor "$test"; fi
  done
done

echo "redis-benchmark -t ping,set,get -c 50 -n $n -P $pipeline -q (weft-redis ${weft_threads[*]:-(1 worker)} vs redis-server${floor:+ vs the floor}${pin_server[*]:+; servers on CPU 0, client on CPU 1})"
printf "%-6s %-12s %12s %8s %12s %8s %12s %11s %12s\n" pair test weft-redis p50ms redis-server p50ms floor weft/redis floor/redis
# Then per test the median of its pairs' ratios (for an even count, the
# mean of the two middle ones).
awk '
  { key = $1 " " $3; rps[$2, key] = $4; p50[$2, key] = $5
    if (!(key in seen)) { seen[key] = 1; order[++k] = key }
    if (!($3 in tseen)) { tseen[$3] = 1; tests[++t] = $3 } }
  function ratio(a, b) { return b > 0 ? a / b : 0 }
  function median(list,   n, v, i, j, x) {
    n = split(list, v, " ")
    for (i = 2; i <= n; ++i) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; --j) v[j + 1] = v[j]; v[j + 1] = x }
    if (n == 0) return 0
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }
  END {
    for (i = 1; i <= k; ++i) { key = order[i]; split(key, f, " ")
      wr = ratio(rps["weft", key], rps["redis", key]); fr = ratio(rps["floor", key], rps["redis", key])
      printf "%-6s %-12s %12.0f %8s %12.0f %8s %12.0f %11.2f %12.2f\n", f[1], f[2], rps["weft", key],
             p50["weft", key], rps["redis", key], p50["redis", key], rps["floor", key], wr, fr
      wl[f[2]] = wl[f[2]] " " sprintf("%.2f", wr); fl[f[2]] = fl[f[2]] " " sprintf("%.2f", fr) }
    for (i = 1; i <= t; ++i)
      printf "%-6s %-12s %12s %8s %12s %8s %12s %11.2f %12.2f\n", "median", tests[i], "", "", "", "", "",
             median(wl[tests[i]]), median(fl[tests[i]]) }' "$dir/results"
