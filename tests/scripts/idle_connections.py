#!/usr/bin/env python3
"""Measures how long a new client waits while many idle connections are
open (issue 29: 4,200 idle connections used to delay a new client by
23.8 s at the server's 4,096-connection cap).

Usage: idle_connections.py URL [IDLE]   (default 5000 idle connections)

Opens IDLE TCP connections that never send a byte, then sends ListTables
on a fresh connection and prints the time to its answer, three times.
Needs a file-descriptor limit above IDLE (raised here when allowed).
"""
import resource
import socket
import sys
import time
from urllib.parse import urlparse

AUTH = ("AWS4-HMAC-SHA256 Credential=AKID/20261124/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=host, Signature=00")


def list_tables(host, port):
    body = b"{}"
    req = (f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
           f"X-Amz-Target: DynamoDB_20120810.ListTables\r\n"
           f"Content-Type: application/x-amz-json-1.0\r\nAuthorization: {AUTH}\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(req)
        head = s.recv(64)
    elapsed = time.monotonic() - started
    status = head.split(b" ")[1].decode() if head.startswith(b"HTTP/1.1") else "none"
    return status, elapsed


def main():
    url = urlparse(sys.argv[1])
    idle_count = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = idle_count + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    host, port = url.hostname, url.port or 80
    idle = [socket.create_connection((host, port)) for _ in range(idle_count)]
    print(f"{len(idle)} idle connections open")
    for _ in range(3):
        status, elapsed = list_tables(host, port)
        print(f"ListTables on a new connection: HTTP {status} in {elapsed * 1000:.1f} ms")
    closed = 0
    for s in idle:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    print(f"{closed} of the idle connections had been closed by the server")


if __name__ == "__main__":
    main()
