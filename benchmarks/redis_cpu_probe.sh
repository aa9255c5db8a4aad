#!/usr/bin/env bash
# redis_cpu_probe.sh: how busy each side of a pinned Redis row is, per
# server. redis_compare.sh gives the rates; this says which side limits
# them.
#
#   benchmarks/redis_cpu_probe.sh [-t TEST] [-n N] [-P P] [-r ROUNDS]
#                                 [-w WEFT_REDIS] [-f RESP_FLOOR_SERVER] [SERVER...]
#
# SERVER is weft, redis or floor (default: all three); every round runs
# each once, in the order given. Defaults: -t get -n 2000000 -P 16 -r 3.
# Each run starts its server afresh on CPU 0 (weft-redis: its default of
# one worker there; redis-server: persistence off; the floor: the
# busy-polling one-thread server of benchmarks/redis_baselines) and runs
#   redis-benchmark -h 127.0.0.1 -p PORT -t TEST -c 50 -n N -P P -q
# on CPU 1, holding /tmp/weft-build.lock as redis_compare.sh does. It
# prints per run:
#   rps         the client's requests per second;
#   server_cpu  CPU the server's threads used over the run, in CPUs (the
#               floor spins, so it always shows about 1);
#   client_cpu  CPU redis-benchmark used, in CPUs;
# and, when perf is installed, per request: the client's epoll_wait calls
# (how many replies one wake-up finds) and its context switches (how often
# it slept waiting for the server).
set -euo pipefail

test=get
n=2000000
pipeline=16
rounds=3
weft=build/release/tools/weft-redis
floor=build/release/benchmarks/resp_floor_server
while getopts "t:n:P:r:w:f:" opt; do
  case $opt in
    t) test=$OPTARG ;;
    n) n=$OPTARG ;;
    P) pipeline=$OPTARG ;;
    r) rounds=$OPTARG ;;
    w) weft=$OPTARG ;;
    f) floor=$OPTARG ;;
    *) sed -n 5,6p "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(weft redis floor)
for s in "${servers[@]}"; do
  case $s in
    weft) [ -x "$weft" ] || { echo "no weft-redis at $weft" >&2; exit 1; } ;;
    floor) [ -x "$floor" ] || { echo "no floor server at $floor" >&2; exit 1; } ;;
    redis) command -v redis-server >/dev/null || { echo "no redis-server" >&2; exit 1; } ;;
    *) echo "unknown server '$s' (weft, redis or floor)" >&2; exit 2 ;;
  esac
done
have_perf=false
perf stat -e context-switches true >/dev/null 2>&1 && have_perf=true

lock=/tmp/weft-build.lock
dir=$(mktemp -d /tmp/redis_cpu_probe.XXXXXX)
spid=""
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# A port nothing listens on, below the ephemeral range (a client whose own
# port happened to equal it would connect to itself).
free_port() {
  python3 -c 'import socket
for p in range(21000, 32000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'
}

# cpu_ticks PID: user + system clock ticks of all of PID's threads so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

printf "%-6s %-6s %12s %11s %11s" round server rps server_cpu client_cpu
$have_perf && printf " %16s %17s" "epoll_wait/req" "ctx_switch/req"
echo
for round in $(seq "$rounds"); do
  for s in "${servers[@]}"; do
    port=$(free_port)
    case $s in
      weft) taskset -c 0 "$weft" --port "$port" >"$dir/server.out" 2>"$dir/server.err" & ;;
      floor) taskset -c 0 "$floor" --port "$port" >"$dir/server.out" 2>"$dir/server.err" & ;;
      redis)
        taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
          --loglevel warning >"$dir/server.out" 2>"$dir/server.err" &
        ;;
    esac
    spid=$!
    up=false
    for _ in $(seq 100); do
      redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && { up=true; break; }
      sleep 0.1
    done
    $up || { echo "$s did not start:" >&2; cat "$dir/server.err" >&2; exit 1; }
    perf_cmd=()
    $have_perf && perf_cmd=(perf stat -x , -o "$dir/perf.csv"
      -e syscalls:sys_enter_epoll_wait,context-switches)
    exec {lockfd}>"$lock"
    flock "$lockfd"
    t0=$(cpu_ticks "$spid")
    s0=$(date +%s.%N)
    # %U %S %e: the client's user and system seconds, and the wall time.
    /usr/bin/time -o "$dir/time.txt" -f '%U %S %e' taskset -c 1 "${perf_cmd[@]}" \
      timeout 120 redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" -c 50 -n "$n" \
      -P "$pipeline" -q >"$dir/bench.out" 2>&1
    s1=$(date +%s.%N)
    t1=$(cpu_ticks "$spid")
    flock -u "$lockfd"
    exec {lockfd}>&-
    kill "$spid"
    wait "$spid" 2>/dev/null || true
    spid=""
    rps=$(tr '\r' '\n' <"$dir/bench.out" | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' |
      tail -1)
    [ -n "$rps" ] || { echo "redis-benchmark against $s failed:" >&2; cat "$dir/bench.out" >&2; exit 1; }
    hz=$(getconf CLK_TCK)
    server_cpu=$(awk -v a="$t0" -v b="$t1" -v s="$s0" -v e="$s1" -v hz="$hz" \
      'BEGIN{printf "%.2f", (b - a) / hz / (e - s)}')
    client_cpu=$(awk '{printf "%.2f", ($1 + $2) / $3}' "$dir/time.txt")
    printf "%-6s %-6s %12.0f %11s %11s" "$round" "$s" "$rps" "$server_cpu" "$client_cpu"
    if $have_perf; then
      awk -F, -v n="$n" '$3 ~ /epoll_wait/ {e = $1 / n} $3 ~ /context-switches/ {c = $1 / n}
        END {printf " %16.4f %17.4f", e, c}' "$dir/perf.csv"
    fi
    echo
  done
done
