#!/usr/bin/env bash
# 100,000 connections against one server on this machine, all exchanging messages: the figure
# the README's Performance section quotes. Starts `switchboard serve` (prefork by default: a
# process per worker, each with its own open files), loads it with one `switchboard bench` that
# spreads itself over processes and loopback source addresses, and reads the server's CPU time
# and memory from /proc at both edges of the measured window.
#
#   scripts/c100k.sh [CONNS] [RATE]       # defaults: 100000 connections, 20000 msgs/s in all
#
# Settings, from the environment: MODEL (prefork), WORKERS (10), WARMUP (10s, after every
# connection is made), DURATION (10s), PORT (9400), SWITCHBOARD (target/release/switchboard).
# Prints one line of figures and the bench's JSON report.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-100000}
rate=${2:-20000}
model=${MODEL:-prefork}
workers=${WORKERS:-10}
warmup=${WARMUP:-10s}
duration=${DURATION:-10s}
port=${PORT:-9400}
bin=${SWITCHBOARD:-target/release/switchboard}
[ -x "$bin" ] || cargo build --release --quiet
seconds() { case $1 in *ms) echo "0.${1%ms}" ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac; }

work=$(mktemp -d /tmp/switchboard-c100k.XXXXXX)
"$bin" serve "tcp://127.0.0.1:$port" --model "$model" --workers "$workers" --no-store \
  --max-conns $((conns + 100)) --backlog 4096 --idle-timeout 0 >"$work/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
grep -q "listening on" "$work/serve.log" || { cat "$work/serve.log" >&2; exit 1; }

# The server: its master and every process it forked.
server_pids() { echo "$server"; pgrep -P "$server" || true; }
# Summed CPU seconds (user + system) of the server's processes, in clock ticks.
cpu_ticks() { for p in $(server_pids); do awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null; done | awk '{ t += $1 } END { print t }'; }
# Summed proportional set size of the server's processes, in KiB.
pss_kib() { for p in $(server_pids); do awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null; done | awk '{ t += $1 } END { print t }'; }
sleep 1
pss_idle=$(pss_kib)

"$bin" bench "tcp://127.0.0.1:$port" --conns "$conns" --rate "$rate" --warmup "$warmup" \
  --duration "$duration" --json --no-store >"$work/bench.json" 2>"$work/bench.err" &
bench=$!
# The bench makes every connection first, then warms up, then measures: wait for them all.
established() { ss -Htn state established "( sport = :$port )" | wc -l; }
for _ in $(seq 600); do [ "$(established)" -ge "$conns" ] && break; sleep 0.5; done
# Read inside the window, a second clear of each edge (the bench closes everything at its end):
# CPU over the middle, connections and memory halfway.
window=$(seconds "$duration")
sleep "$(seconds "$warmup")"
sleep 1
cpu_start=$(cpu_ticks) t_start=$(date +%s.%N)
sleep "$(awk "BEGIN { print $window / 2 - 1 }")"
pss_held=$(pss_kib)
held=$(established)
sleep "$(awk "BEGIN { print $window / 2 - 1 }")"
cpu_end=$(cpu_ticks) t_end=$(date +%s.%N)
wait "$bench" || true
grep -v '^$' "$work/bench.err" >&2 || true

python3 - "$work/bench.json" "$held" "$pss_idle" "$pss_held" "$((cpu_end - cpu_start))" "$(getconf CLK_TCK)" "$model" "$workers" "$(awk "BEGIN { print $t_end - $t_start }")" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
held, idle, full, ticks, hz = (int(v) for v in sys.argv[2:7])
model, workers, secs = sys.argv[7], sys.argv[8], float(sys.argv[9])
# CPU over the middle of the window, per message answered at the rate measured over it all.
print(f"{model} ({workers} workers): {held:,} connections held in the window "
      f"({r['connected']:,} made by {r['processes']} bench processes in {r['connect_secs']:.1f} s), "
      f"{r['msgs_per_s']:,.0f} msgs/s (asked {r['rate']:,.0f}), p50 {r['p50_us']:,} µs, "
      f"p99 {r['p99_us']:,} µs, errors {r['errors']}, wrong {r['mismatches']}; "
      f"server memory {full / 1024:,.1f} MiB Pss ({(full - idle) * 1024 / max(held, 1):,.0f} bytes "
      f"per connection over idle), CPU {ticks / hz * 1e6 / max(r['msgs_per_s'] * secs, 1):,.1f} µs per message")
print(json.dumps(r))
EOF
