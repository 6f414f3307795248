#!/usr/bin/env python3
"""The store locked by another process while one client sends 400 lines of 1 MiB under
`--record messages`: the server's resident memory while the lock is held (30 s), and what is
recorded once it is let go. Run from the repository after `cargo build --release`:

    python3 docs/trust/store-locked.py uring
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.abspath("target/release/switchboard")
LINES, SIZE = 400, 1 << 20

work = tempfile.mkdtemp(prefix="sb-locked-")
db = os.path.join(work, "locked.db")
server = subprocess.Popen(
    [BIN, "serve", "tcp://127.0.0.1:0", "--model", sys.argv[1] if len(sys.argv) > 1 else "uring",
     "--frame", "line", "--max-frame", "2MiB", "--record", "messages", "--store", f"sqlite://{db}"],
    stdout=subprocess.PIPE, stderr=open(os.path.join(work, "server.log"), "w"))
host, port = server.stdout.readline().decode().split("//")[1].strip().rsplit(":", 1)
lock = subprocess.Popen(
    ["python3", "-c", "import sqlite3, sys\n"
     f"c = sqlite3.connect({db!r}, isolation_level=None, timeout=30)\n"
     "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
lock.stdout.readline()


def rss_mb():
    with open(f"/proc/{server.pid}/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) // 1024


print("before:", rss_mb(), "MB")
client = socket.create_connection((host, int(port)))
line = b"x" * (SIZE - 1) + b"\n"
replies = [0]


def send():
    for _ in range(LINES):
        client.sendall(line)


def read():
    lines = client.makefile("rb")
    for _ in range(LINES):
        lines.readline()
        replies[0] += 1


threading.Thread(target=send, daemon=True).start()
reader = threading.Thread(target=read, daemon=True)
reader.start()
peak = 0
for _ in range(30):
    time.sleep(1)
    peak = max(peak, rss_mb())
print(f"locked for 30 s: peak {peak} MB, {replies[0]} of {LINES} replies")
lock.kill()
lock.wait()
reader.join(120)
print(f"lock let go: {replies[0]} of {LINES} replies")
client.close()
server.terminate()
server.wait()
print(subprocess.run([BIN, "stats", "--store", f"sqlite://{db}"],
                     capture_output=True, text=True).stdout)
