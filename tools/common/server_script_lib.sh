# Sourced (bash) by the scripts that drive a server printing "listening on
# 127.0.0.1:PORT": the tools' CLI tests and the benchmark baselines' smoke
# tests. Gives $work, a scratch directory removed at exit together with
# every job still running, and fail, start_named, start_server and
# stop_server. A script may redefine fail after sourcing this.
work="$(mktemp -d)"
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# start_named NAME CMD...: runs CMD in the background (stdout and stderr in
# $work/NAME.out and .err), waits up to 10 s for its "listening on" line,
# and sets $pid and $port.
start_named() {
  local name="$1"
  shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/$name.out")
    [ -n "$port" ] && return 0
    sleep 0.1
  done
  fail "$name: no 'listening on' line: $(cat "$work/$name.out" "$work/$name.err")"
}

# start_server CMD...: start_named server CMD..., and sets $server_pid.
start_server() {
  start_named server "$@"
  server_pid=$pid
}

# stop_server [PID]: SIGTERM to PID (default $server_pid), which must exit
# with 0 within 10 s.
stop_server() {
  local target="${1:-$server_pid}"
  kill -TERM "$target"
  for _ in $(seq 100); do
    kill -0 "$target" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$target" 2>/dev/null && fail "server ignored SIGTERM"
  wait "$target"
  local rc=$?
  [ "$rc" = 0 ] || fail "server exited $rc after SIGTERM"
}
