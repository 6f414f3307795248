#!/usr/bin/env bash
# A throwaway MariaDB server on a loopback port, for the store's MySQL tests or by hand.
#
#   scripts/mariadb.sh start DIR [PORT]   # installs MariaDB if missing; prints the store URL
#   scripts/mariadb.sh stop DIR           # stops it (the data stays in DIR/data)
#
# The server keeps everything under DIR (data, socket, pid file, log, its temporary tables'
# files, so nothing that cleans /tmp can pull them away mid-query), listens on 127.0.0.1
# only, and has a database `switchboard` with a user `switchboard` (password `switchboard`), who
# may also create databases named `switchboard_...` (tests that need one of their own).
# Starting again over the same DIR reuses its data and, unless PORT is given, its port.
# MARIADB_BIND=ADDR listens on ADDR instead, and MARIADB_CLIENTS=PATTERN (a MySQL host pattern
# such as 10.77.0.%; default: the listening address) says where the user may connect from:
# scripts/fleet.sh runs it so, on a host of its own.
set -euo pipefail
trap 'echo "mariadb.sh: line $LINENO failed (exit $?)" >&2' ERR
cmd=${1:?usage: mariadb.sh start DIR [PORT] | stop DIR}
dir=$(mkdir -p "${2:?usage: mariadb.sh start DIR [PORT] | stop DIR}" && cd "$2" && pwd)

stop() {
  [ -f "$dir/mariadb.pid" ] || return 0
  local pid
  pid=$(cat "$dir/mariadb.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/mariadb.pid"
}

case $cmd in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "usage: mariadb.sh start DIR [PORT] | stop DIR" >&2; exit 2 ;;
esac

if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
  [ "$(id -u)" = 0 ] || { echo "MariaDB is not installed and installing it needs root" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
fi
export PATH=$PATH:/usr/sbin
bind=${MARIADB_BIND:-127.0.0.1}
clients=${MARIADB_CLIENTS:-$bind}

port=${3:-$(cat "$dir/port" 2>/dev/null || python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
if [ ! -d "$dir/data/mysql" ]; then
  mariadb-install-db --user=root --datadir="$dir/data" --auth-root-authentication-method=socket >"$dir/install.log" 2>&1 ||
    { echo "mariadb-install-db failed:"; tail -20 "$dir/install.log"; exit 1; } >&2
fi
mkdir -p "$dir/tmp"
mariadbd --user=root --datadir="$dir/data" --tmpdir="$dir/tmp" --port="$port" --bind-address="$bind" \
  --socket="$dir/sock" --pid-file="$dir/mariadb.pid" --log-error="$dir/mariadb.log" \
  --skip-name-resolve --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
for _ in $(seq 150); do
  mariadb-admin --socket="$dir/sock" -uroot ping >/dev/null 2>&1 && break
  sleep 0.1
done
mariadb-admin --socket="$dir/sock" -uroot ping >/dev/null 2>&1 || { echo "MariaDB did not start; see $dir/mariadb.log" >&2; exit 1; }
mariadb --socket="$dir/sock" -uroot -e "
  CREATE DATABASE IF NOT EXISTS switchboard;
  CREATE USER IF NOT EXISTS 'switchboard'@'$clients' IDENTIFIED BY 'switchboard';
  GRANT ALL ON \`switchboard%\`.* TO 'switchboard'@'$clients';"
echo "$port" >"$dir/port"
echo "mysql://switchboard:switchboard@$bind:$port/switchboard"
