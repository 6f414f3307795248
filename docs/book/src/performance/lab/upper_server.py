"""The plan's own stack, as a reference for `switchboard lab`: Python's
socketserver.ThreadingTCPServer (or, with `fork`, ForkingTCPServer) answering every read with
its bytes upper-cased.

    python3 upper_server.py PORT [fork]
"""
import socketserver
import sys


class Upper(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:  # the client left: the plan's loop would spin here forever
                return
            self.request.sendall(data.upper())


class Threading(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024  # the plan's listen(5) drops connections under load


class Forking(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    request_queue_size = 1024
    max_children = 1024  # socketserver's default of 40 would leave clients waiting


if __name__ == "__main__":
    kind = Forking if sys.argv[2:] == ["fork"] else Threading
    with kind(("127.0.0.1", int(sys.argv[1])), Upper) as server:
        server.serve_forever()
