#!/usr/bin/env python3
"""How long a scrape of `serve --metrics` takes behind 0, 5 and 150 clients that connect to the
metrics port and send nothing. Run from the repository after `cargo build --release`:

    python3 docs/trust/metrics-scrape.py target/release/switchboard
"""
import socket, subprocess, sys, time, os
bin=sys.argv[1]
srv=subprocess.Popen([bin,"serve","tcp://127.0.0.1:0","--no-store","--metrics","tcp://127.0.0.1:0"],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL)
srv.stdout.readline(); url=srv.stdout.readline().decode().split()[-1]
host,port=url.split("//")[1].split("/")[0].rsplit(":",1)
for silent_n in (0, 5, 150):
    silent=[socket.create_connection((host,int(port))) for _ in range(silent_n)]
    time.sleep(0.2)
    t=time.time()
    c=socket.create_connection((host,int(port))); c.settimeout(400)
    c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data=b""
    while True:
        d=c.recv(65536)
        if not d: break
        data+=d
    print(f"{silent_n} silent connections: scrape took {time.time()-t:.3f} s ({data[:15]!r})")
    for s in silent: s.close()
    time.sleep(2.5)
srv.terminate(); srv.wait()
