"""The plan's own stack, as a reference for `switchboard lab`: Python's
socketserver.ThreadingTCPServer answering every read with its bytes upper-cased.

    python3 upper_server.py PORT
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


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024  # the plan's listen(5) drops connections under load


if __name__ == "__main__":
    with Server(("127.0.0.1", int(sys.argv[1])), Upper) as server:
        server.serve_forever()
