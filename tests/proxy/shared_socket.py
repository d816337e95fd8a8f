"""Sends one plain HTTP request through the proxy on a socket that, with --share, a child process
running another executable (`sleep`) also holds, and prints {"status", "body"} as JSON.

The child inherits the socket before it connects, so both processes hold it when the proxy
accepts the connection and attests its caller."""

import argparse
import json
import socket
import subprocess


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy-port", type=int, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--share", action="store_true")
    args = parser.parse_args()

    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    child = None
    if args.share:
        child = subprocess.Popen(["sleep", "30"], pass_fds=[connection.fileno()])
    try:
        connection.connect(("127.0.0.1", args.proxy_port))
        host = args.url.split("/")[2]
        request = f"GET {args.url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        connection.sendall(request.encode())
        response = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            response += chunk
    finally:
        connection.close()
        if child is not None:
            child.kill()
            child.wait()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    print(json.dumps({"status": status, "body": json.loads(body) if body else None}))


if __name__ == "__main__":
    main()
