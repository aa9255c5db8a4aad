#!/usr/bin/env bash
# weft-http against nginx (issue 11, "Benchmarks"): the same wrk command
# against each, one after the other, RUNS interleaved pairs; prints one line
# per run and the median ratio.
#
#   benchmarks/http_compare.sh BUILD_DIR
#   env: DURATION (wrk -d seconds, default 10), RUNS (default 2),
#        CONNS (wrk -c, default 100), LOCK (default /tmp/weft-build.lock;
#        empty: no lock), WEFT_FLAGS (extra weft-http flags)
set -euo pipefail
build="${1:?usage: http_compare.sh BUILD_DIR}"
duration="${DURATION:-10}"
runs="${RUNS:-2}"
conns="${CONNS:-100}"
lock="${LOCK-/tmp/weft-build.lock}"
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cp "$here/http_nginx.conf" "$dir/nginx.conf"

rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p'; }

# one_pair: prints "weft_rps nginx_rps"
one_pair() {
  local out="$dir/weft.out" port="" w n
  # shellcheck disable=SC2086
  "$build/tools/weft-http" --port 0 --threads 2 --builtin_pages=false ${WEFT_FLAGS:-} >"$out" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out" | head -1)
    [ -n "$port" ] && break
    sleep 0.05
  done
  w=$(wrk -t2 -c"$conns" -d"${duration}s" "http://127.0.0.1:$port/" | rps)
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' 2>/dev/null &
  local npid=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null http://127.0.0.1:18080/ && break
    sleep 0.05
  done
  n=$(wrk -t2 -c"$conns" -d"${duration}s" http://127.0.0.1:18080/ | rps)
  kill -QUIT "$npid"; wait "$npid" 2>/dev/null || true
  echo "$w $n"
}

if [ -n "${PAIR:-}" ]; then one_pair; exit 0; fi
results=()
for r in $(seq "$runs"); do
  if [ -n "$lock" ]; then line=$(PAIR=1 flock "$lock" "$0" "$build"); else line=$(PAIR=1 "$0" "$build"); fi
  set -- $line
  ratio=$(awk -v w="$1" -v n="$2" 'BEGIN { printf "%.3f", (n > 0 ? w / n : 0) }')
  printf 'run %d: weft-http %s req/s, nginx %s req/s, ratio %s\n' "$r" "$1" "$2" "$ratio"
  results+=("$ratio")
done
printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median ratio weft-http / nginx: %.2f\n", a[int((NR+1)/2)]}'
