#!/usr/bin/env bash
# Start, stop or inspect N independent redis-server masters on 127.0.0.1:7001.. without Docker.
#
#   compose/local-nodes.sh start [N]   # N defaults to 5; prints the `export REDLOCK_NODES=...` line
#   compose/local-nodes.sh status [N]
#   compose/local-nodes.sh stop [N]
#
# Each node is daemonized with its own directory, pidfile and log under
# $REDLOCK_NODES_DIR (default: ${TMPDIR:-/tmp}/tower-redlock-nodes) and persists with
# AOF fsync always, so a restarted node keeps the locks it granted. `stop` signals the PID
# from each pidfile, and only when that process is still a redis-server.
# The first port can be changed with REDLOCK_BASE_PORT (default 7001).
set -euo pipefail

STATE_DIR="${REDLOCK_NODES_DIR:-${TMPDIR:-/tmp}/tower-redlock-nodes}"
BASE_PORT="${REDLOCK_BASE_PORT:-7001}"
WAIT_STEPS=100 # x 0.1 s: how long start and stop wait for a node

usage() {
  echo "usage: $0 start|stop|status [N]   (N: number of nodes, default 5)" >&2
  exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
command_name="$1"
count="${2:-5}"
case "$count" in '' | *[!0-9]*) usage ;; esac
[ "$count" -ge 1 ] || usage

node_dir() { echo "$STATE_DIR/node-$1"; }

# PID from the node's pidfile, when that process is alive and is a redis-server.
node_pid() {
  local pidfile pid
  pidfile="$(node_dir "$1")/redis.pid"
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/comm" ]; then
    case "$(cat "/proc/$pid/comm")" in redis-server* | redis-check*) ;; *) return 1 ;; esac
  fi
  echo "$pid"
}

# PING over plain TCP (no redis-cli needed).
ping_node() {
  local reply
  reply="$(
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 1 line <&3 && printf '%s' "$line"
  )" || return 1
  [ "${reply%$'\r'}" = "+PONG" ]
}

start() {
  command -v redis-server >/dev/null 2>&1 || {
    echo "redis-server not found: install it (apt-get install redis-server / brew install redis)" >&2
    exit 1
  }
  mkdir -p "$STATE_DIR"
  local urls=() i port dir
  for ((i = 0; i < count; i++)); do
    port=$((BASE_PORT + i))
    dir="$(node_dir "$port")"
    urls+=("redis://127.0.0.1:$port")
    if pid="$(node_pid "$port")"; then
      echo "node $port already running (pid $pid)"
      continue
    fi
    mkdir -p "$dir"
    rm -f "$dir/redis.pid"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      --appendonly yes --appendfsync always --save ""
  done
  for ((i = 0; i < count; i++)); do
    port=$((BASE_PORT + i))
    local step=0
    until node_pid "$port" >/dev/null && ping_node "$port"; do
      step=$((step + 1))
      if [ "$step" -ge "$WAIT_STEPS" ]; then
        echo "node $port did not come up; log: $(node_dir "$port")/redis.log" >&2
        tail -n 5 "$(node_dir "$port")/redis.log" >&2 2>/dev/null || true
        exit 1
      fi
      sleep 0.1
    done
    echo "node $port up (pid $(node_pid "$port"))"
  done
  local IFS=,
  echo "export REDLOCK_NODES=${urls[*]}"
}

stop() {
  local i port pid step
  for ((i = 0; i < count; i++)); do
    port=$((BASE_PORT + i))
    if ! pid="$(node_pid "$port")"; then
      echo "node $port not running"
      continue
    fi
    kill -TERM "$pid"
    step=0
    while kill -0 "$pid" 2>/dev/null; do
      step=$((step + 1))
      if [ "$step" -ge "$WAIT_STEPS" ]; then
        echo "node $port (pid $pid) ignored SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
    rm -f "$(node_dir "$port")/redis.pid"
    echo "node $port stopped (pid $pid)"
  done
  echo "data kept in $STATE_DIR (remove it for a clean start)"
}

status() {
  local i port pid down=0
  for ((i = 0; i < count; i++)); do
    port=$((BASE_PORT + i))
    if pid="$(node_pid "$port")"; then
      if ping_node "$port"; then
        echo "node $port running (pid $pid), answers PING"
      else
        echo "node $port running (pid $pid), NOT answering PING"
        down=$((down + 1))
      fi
    else
      echo "node $port not running"
      down=$((down + 1))
    fi
  done
  [ "$down" -eq 0 ]
}

case "$command_name" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
