#!/usr/bin/env bash
# Measures every model side by side with the independent references of ../shared/echo-bench
# (see its README) and prints a Markdown table: one row per model and load.
#
#   scripts/bench.sh                 # every model, 100 connections x 64 bytes
#   scripts/bench.sh epoll uring     # only these models
#   LOADS="1x64 100x64 1000x64 100x4096" SECS=4 ROUNDS=3 scripts/bench.sh epoll
#
# Each row: A is switchboard, B its reference (C epoll for the event loops, the tokio server for
# async, Python's ThreadingTCPServer for the thread and process models); ratio = A's median
# throughput over B's, cpu = B's server CPU per message over A's (above 1: A is cheaper),
# p99 = A's median p99 latency over B's (below 1: A is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${ECHO_BENCH:-../shared/echo-bench}
build=${ECHO_BENCH_BUILD:-/tmp/echo-bench-build}
"$bench/build.sh" >/dev/null
cargo build --release --quiet
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(iterative threads pool fork prefork nonblocking select poll epoll async uring)
loads=${LOADS:-100x64}
secs=${SECS:-4}
rounds=${ROUNDS:-3}
sb="env RUST_LOG=warn target/release/switchboard serve tcp://127.0.0.1:{port}"

reference() {
  case $1 in
    async) echo "tokio $build/tokio-ref {port}" ;;
    iterative|threads|pool|fork) echo "python python3 $build/py-socketserver.py {port}" ;;
    *) echo "c-epoll $build/c-epoll {port}" ;;
  esac
}

echo "| model | load | vs | throughput (A / B msgs/s) | ratio | cpu | p99 (A / B µs) | p99 ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for model in "${models[@]}"; do
  read -r name cmd <<<"$(reference "$model")"
  for load in $loads; do
    conns=${load%x*}; size=${load#*x}
    [ "$model" = iterative ] && [ "$conns" -gt 1 ] && continue # one client at a time: the others time out
    out=$("$bench/compare.py" --conns "$conns" --size "$size" --secs "$secs" --rounds "$rounds" \
      "$sb --model $model" "$cmd")
    python3 -c '
import json, statistics, sys
model, load, name, out = sys.argv[1:5]
p99 = {"A": [], "B": []}
for line in out.splitlines():
    if line.startswith("round "):
        who = line.split()[2].rstrip(":")
        p99[who].append(json.loads(line.split(": ", 1)[1])["p99_us"])
last = out.splitlines()[-1].split()
ratio, cpu = float(last[1]), float(last[3])
a, b = last[4].split("=")[1], last[5].split("=")[1]
pa, pb = statistics.median(p99["A"]), statistics.median(p99["B"])
shown = load.replace("x", " x ")
print(f"| `{model}` | {shown} B | {name} | {int(a):,} / {int(b):,} | {ratio:.2f} | {cpu:.2f} | {pa:,.0f} / {pb:,.0f} | {pa / pb:.2f} |")
' "$model" "$load" "$name" "$out"
  done
done
