# Helpers for local-nodes.sh and local-topologies.sh (sourced, not run).

# PID from DIR/redis.pid, when that process is alive and is a redis-server (or a Sentinel).
pid_in() {
  local pidfile pid
  pidfile="$1/redis.pid"
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/comm" ]; then
    case "$(cat "/proc/$pid/comm")" in redis-server* | redis-sentinel* | redis-check*) ;; *) return 1 ;; esac
  fi
  echo "$pid"
}

# PING over plain TCP to 127.0.0.1:PORT (no redis-cli needed).
ping_node() {
  local reply
  reply="$(
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 1 line <&3 && printf '%s' "$line"
  )" || return 1
  [ "${reply%$'\r'}" = "+PONG" ]
}

# Stops the process whose pidfile is in DIR (SIGTERM, then SIGKILL after WAIT_STEPS x 0.1 s);
# LABEL names it in messages.
stop_in() {
  local dir="$1" label="$2" pid step=0
  if ! pid="$(pid_in "$dir")"; then
    echo "$label not running"
    return 0
  fi
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do
    step=$((step + 1))
    if [ "$step" -ge "${WAIT_STEPS:-100}" ]; then
      echo "$label (pid $pid) ignored SIGTERM; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  rm -f "$dir/redis.pid"
  echo "$label stopped (pid $pid)"
}

# Waits until the process with its pidfile in DIR answers PING on PORT; exits 1 if it does
# not within WAIT_STEPS x 0.1 s.
wait_up() {
  local dir="$1" port="$2" label="$3" step=0
  until pid_in "$dir" >/dev/null && ping_node "$port"; do
    step=$((step + 1))
    if [ "$step" -ge "${WAIT_STEPS:-100}" ]; then
      echo "$label did not come up; log: $dir/redis.log" >&2
      tail -n 5 "$dir/redis.log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
  echo "$label up (pid $(pid_in "$dir"))"
}

need_redis_server() {
  command -v redis-server >/dev/null 2>&1 || {
    echo "redis-server not found: install it (apt-get install redis-server / brew install redis)" >&2
    exit 1
  }
}

# Reports the process with its pidfile in DIR and whether it answers PING on PORT; returns 1
# when it does not.
status_in() {
  local dir="$1" port="$2" label="$3" pid
  if ! pid="$(pid_in "$dir")"; then
    echo "$label not running"
    return 1
  fi
  if ping_node "$port"; then
    echo "$label running (pid $pid), answers PING"
  else
    echo "$label running (pid $pid), NOT answering PING"
    return 1
  fi
}
