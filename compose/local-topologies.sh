#!/usr/bin/env bash
# The layout of docker-compose.topologies.yml as local processes, without Docker: 5 votes from
# 2 standalone masters, a Redis Cluster and 2 Sentinel-managed primaries.
#
#   compose/local-topologies.sh start    # also: compose/local-nodes.sh --topologies start
#   compose/local-topologies.sh status
#   compose/local-topologies.sh stop
#
# Fixed ports on 127.0.0.1 (see compose/README.md, "Topologies"):
#   7001, 7002            standalone masters
#   7101, 7102, 7103      Redis Cluster primaries (cluster bus: port + 10000)
#   7201 / 7202           Sentinel master lock-a: primary / replica
#   7211 / 7212           Sentinel master lock-b: primary / replica
#   26401, 26402, 26403   Sentinels monitoring lock-a and lock-b (quorum 2)
#
# Every process is daemonized with its own directory, config file, pidfile and log under
# $REDLOCK_NODES_DIR (default: ${TMPDIR:-/tmp}/tower-redlock-topologies). The config file is
# written on the first start only: Sentinel rewrites it on a failover, so a restart keeps the
# roles as they are. Data nodes persist with AOF fsync always. `stop` signals the PID from each
# pidfile, and only when that process is still a redis-server.
set -euo pipefail

STATE_DIR="${REDLOCK_NODES_DIR:-${TMPDIR:-/tmp}/tower-redlock-topologies}"
WAIT_STEPS=100 # x 0.1 s: how long start and stop wait for a process
CLUSTER_PORTS=(7101 7102 7103)
SENTINEL_PORTS=(26401 26402 26403)
# name:primary port:replica port
MASTERS=(lock-a:7201:7202 lock-b:7211:7212)

# shellcheck source=compose/procs.sh
. "$(dirname "$0")/procs.sh"

usage() {
  echo "usage: $0 start|stop|status" >&2
  exit 2
}

# Every process as "kind port", in start order (Sentinels last: they need their masters).
processes() {
  local port m name primary replica
  echo "standalone 7001"
  echo "standalone 7002"
  for port in "${CLUSTER_PORTS[@]}"; do echo "cluster $port"; done
  for m in "${MASTERS[@]}"; do
    IFS=: read -r name primary replica <<<"$m"
    echo "primary $primary"
    echo "replica $replica $primary"
  done
  for port in "${SENTINEL_PORTS[@]}"; do echo "sentinel $port"; done
}

dir_of() { echo "$STATE_DIR/$1-$2"; }

# The config file of process KIND on PORT (REPLICA_OF: its primary's port), in DIR.
config() {
  local kind="$1" port="$2" replica_of="$3" dir="$4" m name primary replica
  printf 'port %s\nbind 127.0.0.1\ndaemonize yes\ndir %s\npidfile %s/redis.pid\nlogfile %s/redis.log\n' \
    "$port" "$dir" "$dir" "$dir"
  case "$kind" in
    sentinel)
      for m in "${MASTERS[@]}"; do
        IFS=: read -r name primary replica <<<"$m"
        printf 'sentinel monitor %s 127.0.0.1 %s 2\n' "$name" "$primary"
        printf 'sentinel down-after-milliseconds %s 5000\n' "$name"
        printf 'sentinel failover-timeout %s 30000\n' "$name"
      done
      ;;
    *)
      printf 'appendonly yes\nappendfsync always\nsave ""\n'
      [ "$kind" = cluster ] && printf 'cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 5000\n'
      [ "$kind" = replica ] && printf 'replicaof 127.0.0.1 %s\n' "$replica_of"
      ;;
  esac
  return 0
}

start_one() {
  local kind="$1" port="$2" replica_of="${3:-}" dir pid
  dir="$(dir_of "$kind" "$port")"
  if pid="$(pid_in "$dir")"; then
    echo "$kind $port already running (pid $pid)"
    return 0
  fi
  mkdir -p "$dir"
  [ -f "$dir/redis.conf" ] || config "$kind" "$port" "$replica_of" "$dir" >"$dir/redis.conf"
  rm -f "$dir/redis.pid"
  if [ "$kind" = sentinel ]; then
    redis-server "$dir/redis.conf" --sentinel
  else
    redis-server "$dir/redis.conf"
  fi
}

cluster_ok() {
  redis-cli -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

# Creates the cluster once (3 primaries, no replicas) and waits for cluster_state:ok.
make_cluster() {
  local step=0 addrs=() port
  if ! cluster_ok; then
    for port in "${CLUSTER_PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
    if redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | tr -d '\r' | grep -qx 'cluster_known_nodes:1'; then
      redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    fi
  fi
  until cluster_ok; do
    step=$((step + 1))
    if [ "$step" -ge 300 ]; then
      echo "the cluster did not reach cluster_state:ok" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "cluster ${CLUSTER_PORTS[*]} ok"
}

start() {
  need_redis_server
  command -v redis-cli >/dev/null 2>&1 || { echo "redis-cli not found" >&2; exit 1; }
  mkdir -p "$STATE_DIR"
  local kind port replica_of
  while read -r kind port replica_of; do
    start_one "$kind" "$port" "$replica_of"
  done < <(processes)
  while read -r kind port _; do
    wait_up "$(dir_of "$kind" "$port")" "$port" "$kind $port"
  done < <(processes)
  make_cluster
  local sentinels m name primary replica
  sentinels="$(printf '127.0.0.1:%s,' "${SENTINEL_PORTS[@]}")"
  sentinels="${sentinels%,}"
  local urls="redis://127.0.0.1:7001,redis://127.0.0.1:7002"
  urls+=",redis+cluster://$(printf '127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")"
  urls="${urls%,}"
  for m in "${MASTERS[@]}"; do
    IFS=: read -r name primary replica <<<"$m"
    urls+=",redis+sentinel://$sentinels/$name"
  done
  echo "export REDLOCK_NODES=$urls"
}

stop() {
  local kind port lines=()
  mapfile -t lines < <(processes)
  # Sentinels first (no failover while the rest stops), then the others.
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    read -r kind port _ <<<"${lines[$i]}"
    stop_in "$(dir_of "$kind" "$port")" "$kind $port"
  done
  echo "data kept in $STATE_DIR (remove it for a clean start)"
}

status() {
  local kind port down=0
  while read -r kind port _; do
    status_in "$(dir_of "$kind" "$port")" "$port" "$kind $port" || down=$((down + 1))
  done < <(processes)
  if cluster_ok; then echo "cluster: cluster_state:ok"; else echo "cluster: NOT ok"; down=$((down + 1)); fi
  local m name primary replica
  for m in "${MASTERS[@]}"; do
    IFS=: read -r name primary replica <<<"$m"
    echo "$name: primary $(redis-cli -p "${SENTINEL_PORTS[0]}" sentinel get-master-addr-by-name "$name" 2>/dev/null | paste -sd: -)"
  done
  [ "$down" -eq 0 ]
}

[ $# -eq 1 ] || usage
case "$1" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
