#!/usr/bin/env bash
# Many switchboards behind a load balancer, on one machine: network namespaces as hosts on one
# private Ethernet (a bridge in a namespace of its own, a veth pair to each host), HAProxy
# balancing TCP over switchboard instances that speak the PROXY protocol, with health checks,
# every instance recording into one MariaDB. Nothing is reachable from outside the namespaces and
# nothing in them can reach out: no host has a default route.
#
#   scripts/fleet.sh up              create the hosts; start MariaDB, the instances, HAProxy
#   scripts/fleet.sh status          hosts, processes, HAProxy's view of each instance
#   scripts/fleet.sh exec HOST CMD…  run CMD on a host: client, client2, lb, db, sb1, sb2, …
#   scripts/fleet.sh kill N          SIGKILL instance N (a crash: nothing drains)
#   scripts/fleet.sh start N         start instance N again
#   scripts/fleet.sh reload N        SIGHUP instance N; returns once its successor serves
#   scripts/fleet.sh stop N          SIGTERM instance N; returns once it has drained and exited
#   scripts/fleet.sh down            stop every process on the hosts; delete the hosts
#
# The hosts, on 10.77.0.0/24:
#   client  10.77.0.30            where `bench` runs: scripts/fleet.sh exec client switchboard bench tcp://10.77.0.10:8079
#   client2 10.77.0.31            a second load generator's host (runs from many machines, merged)
#   lb      10.77.0.10:8079       HAProxy (admin socket: $FLEET_DIR/haproxy.sock)
#   sbN     10.77.0.1N:8079       `switchboard serve --proxy-protocol --proxy-from LB`, N = 1 … 9
#   db      10.77.0.20:3306       MariaDB (scripts/mariadb.sh); the store URL is in $FLEET_DIR/store
#
# Settings, from the environment:
#   FLEET_DIR        state and logs (default /tmp/switchboard-fleet)
#   FLEET_NAME       prefix of the namespaces' names (default sbf), so fleets can run side by side
#   FLEET_INSTANCES  switchboard instances, 1 to 9 (default 3)
#   FLEET_MODEL      their model (default epoll)
#   FLEET_ARGS       more arguments for each `switchboard serve` (default none)
#   SWITCHBOARD      the switchboard binary (default target/release/switchboard, built if missing)
# Needs root and iproute2; installs HAProxy and MariaDB when missing.
set -euo pipefail
trap 'echo "fleet.sh: line $LINENO failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."

usage="usage: fleet.sh up | status | down | exec HOST CMD... | kill N | start N | reload N | stop N"
dir=${FLEET_DIR:-/tmp/switchboard-fleet}
name=${FLEET_NAME:-sbf}
instances=${FLEET_INSTANCES:-3}
model=${FLEET_MODEL:-epoll}
net=10.77.0
port=8079
lb=$net.10 db=$net.20 client=$net.30 client2=$net.31
# How long a stopped or reloaded instance lets its clients finish: long, so a rolling reload
# under load ends no connection (a real deployment picks what its clients need).
drain=60s

fail() { echo "fleet.sh: $*" >&2; exit 1; }
ns() { echo "$name-$1"; }
hosts() { echo client client2 lb db; for i in $(seq "$instances"); do echo "sb$i"; done; }
address() { case $1 in client) echo "$client" ;; client2) echo "$client2" ;; lb) echo "$lb" ;; db) echo "$db" ;; sb*) echo "$net.1${1#sb}" ;; esac; }
on() { local host=$1; shift; ip netns exec "$(ns "$host")" "$@"; }
exists() { ip netns list | grep -qw "^$(ns "$1")"; }

# Waits up to $1 tenths of a second for the command after it to succeed.
wait_for() {
  local tenths=$1; shift
  for _ in $(seq "$tenths"); do "$@" && return 0; sleep 0.1; done
  "$@"
}

instance_number() {
  [[ ${1:-} =~ ^[1-9]$ ]] && [ "$1" -le "$instances" ] || fail "no instance '${1:-}': give 1 to $instances"
  exists "sb$1" || fail "the fleet is not up: scripts/fleet.sh up"
}

pid_of() { cat "$dir/sb$1.pid" 2>/dev/null; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
gone() { ! alive "$1"; }
handed_over() { [ -s "$dir/sb$1.pid" ] && [ "$(pid_of "$1")" != "$2" ]; }
all_up() { [ "$(balancer_view | grep -c ' UP ')" = "$instances" ]; }

# Asks HAProxy's admin socket; prints its answer.
haproxy_ask() {
  python3 - "$dir/haproxy.sock" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while chunk := s.recv(65536):
    out += chunk
sys.stdout.write(out.decode())
EOF
}

# One line per instance as HAProxy sees it: name, state (UP, DOWN, …), connections now and in all.
balancer_view() {
  haproxy_ask "show stat" | awk -F, '$1 == "switchboards" && $2 != "BACKEND" {
    printf "%s %s now %s in all %s\n", $2, $18, $5, $8 }'
}

start_instance() {
  local i=$1 log="$dir/sb$1.log"
  alive "$(pid_of "$i")" && fail "instance $i is already running (pid $(pid_of "$i"))"
  rm -f "$dir/sb$i.pid"
  # shellcheck disable=SC2086 # FLEET_ARGS is a list of arguments
  on "sb$i" setsid "$bin" serve "tcp://$(address "sb$i"):$port" --model "$model" --proxy-protocol --proxy-from "$lb" \
    --store "$(cat "$dir/store")" --pid-file "$dir/sb$i.pid" --drain "$drain" ${FLEET_ARGS:-} \
    </dev/null >>"$log" 2>&1 &
  # The pid file is written once the instance listens (and has its store).
  wait_for 300 test -s "$dir/sb$i.pid" ||
    { tail -20 "$log" >&2; fail "instance $i did not start; its log is $log"; }
  echo "sb$i: switchboard $model on $(address "sb$i"):$port, pid $(pid_of "$i")"
}

up() {
  [ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
  command -v ip >/dev/null || fail "needs iproute2 (ip)"
  [[ $instances =~ ^[1-9]$ ]] || fail "FLEET_INSTANCES must be 1 to 9, not '$instances'"
  exists client && fail "a fleet named $name is up already: scripts/fleet.sh down first (or another FLEET_NAME)"
  if ! command -v haproxy >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  fi
  if [ ! -x "$bin" ]; then
    cargo build --release --quiet
  fi
  mkdir -p "$dir"
  rm -f "$dir"/*.pid "$dir"/*.log "$dir/store"

  # The Ethernet: a bridge in a namespace of its own; each host a veth pair to it.
  ip netns add "$(ns switch)"
  ip -n "$(ns switch)" link add br0 type bridge
  ip -n "$(ns switch)" link set br0 up
  for host in $(hosts); do
    ip netns add "$(ns "$host")"
    ip -n "$(ns switch)" link add "to-$host" type veth peer name eth0 netns "$(ns "$host")"
    ip -n "$(ns switch)" link set "to-$host" master br0 up
    ip -n "$(ns "$host")" addr add "$(address "$host")/24" dev eth0
    ip -n "$(ns "$host")" link set eth0 up
    ip -n "$(ns "$host")" link set lo up
  done
  echo "hosts: $(hosts | tr '\n' ' ')on $net.0/24 (namespaces $name-*)"

  on db env MARIADB_BIND="$db" MARIADB_CLIENTS="$net.%" scripts/mariadb.sh start "$dir/mariadb" 3306 >"$dir/store"
  echo "db: MariaDB on $db:3306, store $(cat "$dir/store")"

  for i in $(seq "$instances"); do start_instance "$i"; done

  {
    printf 'global\n  stats socket %s mode 600 level admin\n' "$dir/haproxy.sock"
    printf 'defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5m\n  timeout server 5m\n'
    # A connect that fails (an instance just died) is retried on another instance.
    printf '  retries 2\n  option redispatch 1\n'
    printf 'frontend clients\n  bind %s:%s\n  default_backend switchboards\n' "$lb" "$port"
    printf 'backend switchboards\n  balance roundrobin\n'
    # The health checks speak the PROXY protocol too (a LOCAL header: the balancer's own).
    printf '  default-server send-proxy-v2 check inter 500ms fall 2 rise 2\n'
    for i in $(seq "$instances"); do printf '  server sb%s %s:%s\n' "$i" "$(address "sb$i")" "$port"; done
  } >"$dir/haproxy.cfg"
  on lb setsid haproxy -db -f "$dir/haproxy.cfg" </dev/null >"$dir/haproxy.log" 2>&1 &
  echo $! >"$dir/haproxy.pid"
  wait_for 100 test -S "$dir/haproxy.sock" || { cat "$dir/haproxy.log" >&2; fail "HAProxy did not start"; }
  # Every instance UP in HAProxy's checks before the fleet counts as up.
  wait_for 100 all_up ||
    { balancer_view >&2; fail "HAProxy does not see every instance up"; }
  echo "lb: HAProxy on $lb:$port, config $dir/haproxy.cfg"
}

status() {
  exists client || { echo "fleet $name: down"; return 0; }
  echo "fleet $name ($dir):"
  for host in $(hosts); do
    printf '  %-7s %-10s pids %s\n' "$host" "$(address "$host")" "$(ip netns pids "$(ns "$host")" | tr '\n' ' ')"
  done
  echo "HAProxy's view:"
  if [ -S "$dir/haproxy.sock" ] && alive "$(cat "$dir/haproxy.pid" 2>/dev/null)"; then
    balancer_view | sed 's/^/  /'
  else
    echo "  HAProxy is not running (its log: $dir/haproxy.log)"
  fi
  echo "store: $(cat "$dir/store")"
}

down() {
  # Every process on the fleet's hosts was started by this script (or by one it started).
  [ -f "$dir/mariadb/mariadb.pid" ] && scripts/mariadb.sh stop "$dir/mariadb" >/dev/null 2>&1 || true
  local pids=()
  for host in $(hosts) switch; do
    exists "$host" && pids+=($(ip netns pids "$(ns "$host")"))
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      local left=()
      for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
      [ ${#left[@]} -eq 0 ] && break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  for host in $(hosts) switch; do
    exists "$host" && ip netns del "$(ns "$host")"
  done
  rm -f "$dir"/*.pid "$dir/haproxy.sock"
  echo "fleet $name: down"
}

bin=$(realpath -m "${SWITCHBOARD:-target/release/switchboard}")
case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  exec)
    [ $# -ge 3 ] || fail "$usage"
    exists "$2" || fail "no host '$2' in fleet $name (hosts: $(hosts | tr '\n' ' '))"
    host=$2; shift 2
    # `switchboard` on a host is this fleet's binary.
    [ "$1" = switchboard ] && set -- "$bin" "${@:2}"
    on "$host" "$@"
    ;;
  kill)
    instance_number "${2:-}"
    pid=$(pid_of "$2")
    alive "$pid" || fail "instance $2 is not running"
    kill -KILL "$pid"
    wait_for 50 gone "$pid"
    echo "sb$2: pid $pid killed"
    ;;
  start) instance_number "${2:-}"; start_instance "$2" ;;
  reload)
    instance_number "${2:-}"
    old=$(pid_of "$2")
    alive "$old" || fail "instance $2 is not running"
    kill -HUP "$old"
    wait_for 300 handed_over "$2" "$old" ||
      fail "instance $2 did not hand over in 30 s; see $dir/sb$2.log"
    echo "sb$2: pid $old handed over to $(pid_of "$2") (the old one drains its connections, then exits)"
    ;;
  stop)
    instance_number "${2:-}"
    pid=$(pid_of "$2")
    alive "$pid" || fail "instance $2 is not running"
    kill -TERM "$pid"
    wait_for 700 gone "$pid" || fail "instance $2 (pid $pid) did not exit"
    echo "sb$2: pid $pid stopped"
    ;;
  *) fail "$usage" ;;
esac
