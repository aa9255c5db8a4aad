#!/usr/bin/env bash
# weft-echo client against three weft_std echo servers, same client, same
# placement for every row of a table (issue 10, "Benchmarks"):
#   weft   weft-echo server             (weft::rpc, default worker count)
#   asio   asio_echo_server --threads 2 (Boost.Asio, one io_context, 2 threads)
#   epoll  epoll_echo_server            (one thread, edge-triggered: the floor)
# Configurations (64-byte payloads): single connection at concurrency 1, 8,
# 64; pooled at 64; short at 8. Each (placement, configuration, server) runs
# RUNS times, interleaved (rep-major: every configuration and server runs
# once, in both placements, before any runs again), and the median QPS and median p99 of the
# client's summary lines are reported.
# Placements: unpinned, and pinned (server on CPU 0, client on CPU 1).
#
#   benchmarks/rpc_echo_compare.sh BUILD_DIR [placement...]
#     placement: unpinned | pinned (default: both)
#   env: DURATION (s per run, default 3), RUNS (default 3), OUT (raw CSV,
#        default $BUILD_DIR/rpc_echo_compare.csv), LOCK (a file: each block
#        of 15 runs, one placement and rep, holds `flock LOCK`; default
#        /tmp/weft-build.lock, empty: no lock), SUMMARY_ONLY=1 (no runs:
#        print the tables of an existing OUT).
set -euo pipefail
build="${1:?usage: rpc_echo_compare.sh BUILD_DIR [unpinned|pinned ...]}"
shift
placements=("$@")
[ "${#placements[@]}" -gt 0 ] || placements=(unpinned pinned)
duration="${DURATION:-3}"
runs="${RUNS:-3}"
out="${OUT:-$build/rpc_echo_compare.csv}"
lock="${LOCK-/tmp/weft-build.lock}"
echo_bin="$build/tools/weft-echo"
declare -A server_cmd=(
  [weft]="$echo_bin server --port 0"
  [asio]="$build/benchmarks/asio_echo_server --port 0 --threads 2"
  [epoll]="$build/benchmarks/epoll_echo_server --port 0"
)
servers=(weft asio epoll)
configs=("single 1" "single 8" "single 64" "pooled 64" "short 8")
for b in "$echo_bin" "$build/benchmarks/asio_echo_server" "$build/benchmarks/epoll_echo_server"; do
  [ -x "$b" ] || { echo "missing $b (build weft-echo asio_echo_server epoll_echo_server)"; exit 1; }
done

# one_run PLACEMENT SERVER TYPE CONCURRENCY: prints the client's summary
# line. The server lives only for this run.
one_run() {
  local placement="$1" server="$2" type="$3" conc="$4" spin=() cpin=()
  if [ "$placement" = pinned ]; then spin=(taskset -c 0); cpin=(taskset -c 1); fi
  local tmp
  tmp="$(mktemp)"
  # shellcheck disable=SC2086  # the command line is split on purpose
  "${spin[@]}" ${server_cmd[$server]} >"$tmp" 2>/dev/null &
  local pid=$! port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp")
    [ -n "$port" ] && break
    sleep 0.05
  done
  if [ -z "$port" ]; then kill -9 "$pid" 2>/dev/null; rm -f "$tmp"; echo "summary: none"; return; fi
  "${cpin[@]}" "$echo_bin" client --server "127.0.0.1:$port" --connection_type "$type" \
    --concurrency "$conc" --payload 64 --duration "$duration" | grep '^summary: ' || echo "summary: none"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$tmp"
}

# One block: every configuration and server once, for one placement and
# rep, appended to $out. 15 runs of DURATION s: about 50 s at the default,
# the longest one benchmark may hold the shared machine.
run_block() {
  local placement="$1" rep="$2" cfg server line qps p50 p99 err
  for cfg in "${configs[@]}"; do
    set -- $cfg
    for server in "${servers[@]}"; do
      line=$(one_run "$placement" "$server" "$1" "$2")
      qps=$(sed -n 's/.*qps=\([0-9.]*\).*/\1/p' <<<"$line")
      p50=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' <<<"$line")
      p99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$line")
      err=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$line")
      echo "$placement,$1,$2,$server,$rep,${qps:-0},${p50:-0},${p99:-0},${err:-0}" | tee -a "$out" >&2
    done
  done
}

if [ -n "${BLOCK:-}" ]; then
  # Re-invoked under the lock by the loop below.
  run_block $BLOCK
  exit 0
fi

if [ -z "${SUMMARY_ONLY:-}" ]; then
  echo "placement,connection_type,concurrency,server,rep,qps,p50_us,p99_us,errors" >"$out"
  # Rep-major, so a slow patch of the machine hits every server alike.
  for rep in $(seq "$runs"); do
    for placement in "${placements[@]}"; do
      if [ -n "$lock" ]; then
        BLOCK="$placement $rep" OUT="$out" flock "$lock" "$0" "$build" "${placements[@]}"
      else
        BLOCK="$placement $rep" OUT="$out" "$0" "$build" "${placements[@]}"
      fi
    done
  done
fi

# Medians: one table per placement, a row per configuration, QPS and p99
# per server, and the ratios weft/asio and weft/epoll.
awk -F, '
  function median(key,   n, i, j, t, a) {
    n = split(vals[key], a, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n ? a[int((n + 1) / 2)] : 0
  }
  NR > 1 {
    if ($5 + 0 > runs) runs = $5 + 0
    k = $1 SUBSEP $2 " " $3 SUBSEP $4
    vals[k "q"] = vals[k "q"] " " $6; vals[k "p"] = vals[k "p"] " " $8; errs[k] += $9
    if (!(($1, $2 " " $3) in seen)) { seen[$1, $2 " " $3] = 1; order[$1] = order[$1] "|" $2 " " $3 }
    if (!($1 in pseen)) { pseen[$1] = 1; porder[++np] = $1 }
  }
  END {
    for (p = 1; p <= np; p++) {
      pl = porder[p]
      printf "\n### %s (median of %s runs)\n\n", pl, runs
      print "| connection, callers | weft QPS | weft p99 µs | Asio QPS | Asio p99 µs | epoll floor QPS | floor p99 µs | weft / Asio | weft / floor | errors |"
      print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
      n = split(substr(order[pl], 2), cfgs, "|")
      for (c = 1; c <= n; c++) {
        cf = cfgs[c]; e = 0
        split("weft asio epoll", names, " ")
        for (s = 1; s <= 3; s++) {
          k = pl SUBSEP cf SUBSEP names[s]
          Q[names[s]] = median(k "q"); P[names[s]] = median(k "p"); e += errs[k]
        }
        printf "| %s | %.0f | %d | %.0f | %d | %.0f | %d | %.2f | %.2f | %d |\n", cf,
          Q["weft"], P["weft"], Q["asio"], P["asio"], Q["epoll"], P["epoll"],
          (Q["asio"] > 0 ? Q["weft"] / Q["asio"] : 0), (Q["epoll"] > 0 ? Q["weft"] / Q["epoll"] : 0), e
      }
    }
  }' "$out"
