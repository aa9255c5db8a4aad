#!/usr/bin/env bash
# weft-http and weft-echo's pages against real clients: curl GET/POST on one
# kept-alive connection and every built-in page; wrk with no socket errors
# or non-2xx; slowloris cut by a small --weft_read_timeout_ms; a header
# flood answered 431; connections past --max_connections closed while the
# others are served; SIGTERM stops the server with 0.
set -u
# Writes to connections the server closed must fail (EPIPE), not kill us.
trap "" PIPE
http_bin="$1"
echo_bin="$2"
. "$(dirname "$0")/../../tools/common/server_script_lib.sh"

curl_() { curl -sS --max-time 10 "$@"; }

start_named http "$http_bin" --port 0 --weft_read_timeout_ms=500
http_pid=$pid
url="http://127.0.0.1:$port"

body=$(curl_ "$url/") || fail "curl GET"
[ "$body" = "Hello, world!" ] || fail "GET / gave '$body'"
[ "$(curl_ -s -o /dev/null -w '%{size_download}' "$url/")" = 13 ] || fail "GET / is not 13 bytes"
# Several URLs on one curl command reuse one kept-alive connection.
conns=$(curl_ -s -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects}\n' \
  "$url/" "$url/health" "$url/vars" | paste -sd+ | bc)
[ "$conns" = 1 ] || fail "3 GETs took $conns connections, not 1 (no keep-alive)"
echo_out=$(curl_ -X POST --data-binary 'hello body' "$url/echo") || fail "curl POST"
[ "$echo_out" = "hello body" ] || fail "POST /echo gave '$echo_out'"
chunked=$(printf 'abc' | curl_ -X POST -H 'Transfer-Encoding: chunked' --data-binary @- "$url/echo") \
  || fail "curl chunked POST"
[ "$chunked" = abc ] || fail "chunked POST /echo gave '$chunked'"
[ "$(curl_ "$url/health")" = OK ] || fail "/health"
curl_ "$url/vars" | grep -Eq '^http_request_count : [0-9]+$' || fail "/vars"
curl_ "$url/metrics" | grep -q '^# TYPE http_request_count counter' || fail "/metrics"
curl_ "$url/fibers" | grep -q 'fiber' || fail "/fibers"
curl_ "$url/connections" | grep -Eq '^127\.0\.0\.1:[0-9]+ protocol=http in=[0-9]+ out=[0-9]+ age=' \
  || fail "/connections: $(curl_ "$url/connections")"
[ "$(curl_ -o /dev/null -w '%{http_code}' "$url/nope")" = 404 ] || fail "404"
[ "$(curl_ -o /dev/null -w '%{http_code}' -X DELETE "$url/")" = 405 ] || fail "405"

# A header flood: 431, and the server goes on.
big=$(head -c 70000 /dev/zero | tr '\0' a)
code=$(curl_ -o /dev/null -w '%{http_code}' -H "X-Big: $big" "$url/" 2>/dev/null)
[ "$code" = 431 ] || fail "header flood answered $code, not 431"
hdrs=()
for i in $(seq 150); do hdrs+=(-H "X-$i: v"); done
code=$(curl_ -o /dev/null -w '%{http_code}' "${hdrs[@]}" "$url/" 2>/dev/null)
[ "$code" = 431 ] || fail "150 headers answered $code, not 431"

# Slowloris: a partial request is closed by the read timeout (500 ms).
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ' >&3
t0=$(date +%s%N)
if timeout 10 cat <&3 >/dev/null; then :; else fail "slowloris connection not closed within 10 s"; fi
t1=$(date +%s%N)
exec 3>&-
[ $(( (t1 - t0) / 1000000 )) -ge 300 ] || fail "slowloris closed after $(( (t1 - t0) / 1000000 )) ms"
[ "$(curl_ "$url/")" = "Hello, world!" ] || fail "served after slowloris"

# wrk: no socket errors, no non-2xx.
if command -v wrk >/dev/null; then
  wrk -t2 -c64 -d"${WRK_DURATION:-3}s" "$url/" >"$work/wrk.out" 2>&1 || fail "wrk: $(cat "$work/wrk.out")"
  grep -q 'Requests/sec' "$work/wrk.out" || fail "wrk: $(cat "$work/wrk.out")"
  ! grep -q 'Socket errors' "$work/wrk.out" || fail "wrk socket errors: $(cat "$work/wrk.out")"
  ! grep -q 'Non-2xx' "$work/wrk.out" || fail "wrk non-2xx: $(cat "$work/wrk.out")"
  grep 'Requests/sec' "$work/wrk.out"
else
  fail "wrk is not installed (tools/install-deps)"
fi
stop_server "$http_pid"

# A flood of connections past --max_connections 8: each held connection
# asks /health; exactly 8 are answered, the others closed, then the cap
# frees up again.
start_named capped "$http_bin" --port 0 --max_connections 8
url="http://127.0.0.1:$port"
answered=0
for i in $(seq 12); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$port" || fail "connect $i"
  fds+=("$fd")
done
sleep 0.3
for fd in "${fds[@]}"; do
  printf 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n' >&"$fd" 2>/dev/null
done
for fd in "${fds[@]}"; do
  line=$(timeout 5 head -c 15 <&"$fd" 2>/dev/null)
  [ "$line" = "HTTP/1.1 200 OK" ] && answered=$((answered + 1))
done
for fd in "${fds[@]}"; do exec {fd}>&-; done
[ "$answered" = 8 ] || fail "$answered of 12 connections answered with --max_connections 8"
ok=0
for _ in $(seq 50); do
  [ "$(curl_ "$url/" 2>/dev/null)" = "Hello, world!" ] && { ok=1; break; }
  sleep 0.1
done
[ "$ok" = 1 ] || fail "not served after the connection flood"
stop_server "$pid"

# weft-echo server exposes the pages on its own port.
start_named echo "$echo_bin" server --port 0
[ "$(curl_ "http://127.0.0.1:$port/health")" = OK ] || fail "weft-echo /health"
curl_ "http://127.0.0.1:$port/metrics" | grep -q '^# TYPE' || fail "weft-echo /metrics"
stop_server "$pid"
echo "weft-http CLI: ok"
