#!/usr/bin/env bash
# redis_compare.sh: issue 11's Redis benchmark, weft-redis against Debian's
# redis-server, interleaved in one run so both see the same machine.
#
#   benchmarks/redis_compare.sh [-n REQUESTS] [-P PIPELINE] [-r PAIRS] [-w WEFT_REDIS]
#
# Defaults: -n 2000000 -P 16 -r 2 -w build/release/tools/weft-redis. Both
# servers run for the whole script on 127.0.0.1 (weft-redis with 2 workers,
# redis-server with persistence off); each redis-benchmark run
#   redis-benchmark -h 127.0.0.1 -p PORT -t TEST -c 50 -n N -P P -q
# holds /tmp/weft-build.lock on its own (one test of one server, so a hold
# stays under ~60 s even without pipelining), in the order
#   pair 1: ping weft, ping redis, set weft, set redis, get weft, get redis
#   pair 2: the same with redis first, and so on alternating.
# -t ping,set,get of the issue is the three -t runs together (ping is
# PING_INLINE and PING_MBULK). Prints requests per second per row and the
# ratio weft / redis of each pair.
set -euo pipefail

n=2000000
pipeline=16
pairs=2
weft=build/release/tools/weft-redis
while getopts "n:P:r:w:" opt; do
  case $opt in
    n) n=$OPTARG ;;
    P) pipeline=$OPTARG ;;
    r) pairs=$OPTARG ;;
    w) weft=$OPTARG ;;
    *) echo "usage: $0 [-n N] [-P P] [-r PAIRS] [-w WEFT_REDIS]" >&2; exit 2 ;;
  esac
done

lock=/tmp/weft-build.lock
dir=$(mktemp -d /tmp/redis_compare.XXXXXX)
wpid=""
rpid=""
cleanup() {
  [ -n "$wpid" ] && kill "$wpid" 2>/dev/null || true
  [ -n "$rpid" ] && kill "$rpid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

"$weft" --port 0 --threads 2 >"$dir/w.out" 2>"$dir/w.err" &
wpid=$!
wport=""
for _ in $(seq 100); do
  wport=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/w.out")
  [ -n "$wport" ] && break
  sleep 0.1
done
[ -n "$wport" ] || { echo "weft-redis did not start" >&2; exit 1; }

# A free port for redis-server: bind one with port 0 and read it back.
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
  >"$dir/r.log" 2>&1 &
rpid=$!
for _ in $(seq 100); do
  redis-cli -h 127.0.0.1 -p "$rport" ping >/dev/null 2>&1 && break
  sleep 0.1
done

# run SERVER TEST: appends "SERVER ROW RPS P50" lines to $dir/results.
run() {
  local server=$1 test=$2 port
  if [ "$server" = weft ]; then port=$wport; else port=$rport; fi
  flock "$lock" timeout 120 redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" -c 50 -n "$n" \
    -P "$pipeline" -q 2>&1 | tr '\r' '\n' | grep "requests per second" |
    sed -n 's/^\([A-Z_]*\): \([0-9.]*\) requests per second, p50=\([0-9.]*\) msec.*/\1 \2 \3/p' |
    while read -r row rps p50; do echo "$pair $server $row $rps $p50"; done >>"$dir/results"
}

: >"$dir/results"
for pair in $(seq "$pairs"); do
  for test in ping set get; do
    if [ $((pair % 2)) -eq 1 ]; then
      run weft "$test"; run redis "$test"
    else
      run redis "$test"; run weft "$test"
    fi
  done
done

echo "redis-benchmark -t ping,set,get -c 50 -n $n -P $pipeline -q (weft-redis --threads 2 vs redis-server)"
printf "%-5s %-12s %14s %10s %14s %10s %6s\n" pair test weft-redis p50ms redis-server p50ms ratio
awk '
  { key = $1 " " $3; if ($2 == "weft") { w[key] = $4; wp[key] = $5 } else { r[key] = $4; rp[key] = $5 }
    if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
  END { for (i = 1; i <= k; ++i) { split(order[i], f, " "); key = order[i];
          printf "%-5s %-12s %14.0f %10s %14.0f %10s %6.2f\n", f[1], f[2], w[key], wp[key], r[key], rp[key],
                 (r[key] > 0 ? w[key] / r[key] : 0) } }' "$dir/results"
