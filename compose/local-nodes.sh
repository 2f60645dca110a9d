#!/usr/bin/env bash
# Start, stop or inspect N independent redis-server masters on 127.0.0.1:7001.. without Docker.
#
#   compose/local-nodes.sh start [N]   # N defaults to 5; prints the `export REDLOCK_NODES=...` line
#   compose/local-nodes.sh status [N]
#   compose/local-nodes.sh stop [N]
#   compose/local-nodes.sh --topologies start|status|stop
#
# --topologies starts the layout of docker-compose.topologies.yml instead (fixed ports; state
# under $REDLOCK_NODES_DIR, default ${TMPDIR:-/tmp}/tower-redlock-topologies):
#   7001, 7002            standalone masters                        (2 votes)
#   7101, 7102, 7103      a Redis Cluster of 3 primaries            (1 vote)
#   7201 (+ replica 7202) Sentinel master lock-a                    (1 vote)
#   7211 (+ replica 7212) Sentinel master lock-b                    (1 vote)
#   26401, 26402, 26403   Sentinels monitoring lock-a and lock-b (quorum 2)
# `start` prints the `export REDLOCK_NODES=...` line for these 5 votes.
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
  echo "       $0 --topologies start|stop|status" >&2
  exit 2
}

if [ "${1:-}" = "--topologies" ]; then
  [ $# -eq 2 ] || usage
  exec "$(dirname "$0")/local-topologies.sh" "$2"
fi

[ $# -ge 1 ] && [ $# -le 2 ] || usage
command_name="$1"
count="${2:-5}"
case "$count" in '' | *[!0-9]*) usage ;; esac
[ "$count" -ge 1 ] || usage

node_dir() { echo "$STATE_DIR/node-$1"; }

# shellcheck source=compose/procs.sh
. "$(dirname "$0")/procs.sh"

node_pid() { pid_in "$(node_dir "$1")"; }

start() {
  need_redis_server
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
    wait_up "$(node_dir "$port")" "$port" "node $port"
  done
  local IFS=,
  echo "export REDLOCK_NODES=${urls[*]}"
}

stop() {
  local i port
  for ((i = 0; i < count; i++)); do
    port=$((BASE_PORT + i))
    stop_in "$(node_dir "$port")" "node $port"
  done
  echo "data kept in $STATE_DIR (remove it for a clean start)"
}

status() {
  local i port down=0
  for ((i = 0; i < count; i++)); do
    port=$((BASE_PORT + i))
    status_in "$(node_dir "$port")" "$port" "node $port" || down=$((down + 1))
  done
  [ "$down" -eq 0 ]
}

case "$command_name" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
