"""Destination servers for the agent proxy tests.

Serves several HTTPS listeners (with the test's own CA-issued certificate) and plain HTTP
listeners on 127.0.0.1. Every listener responds to any request with a JSON report of what it
received: method, path, query, headers, and, when an `Authorization: Bearer` token arrived, the
result of checking it with PyJWT against Mayfly's JWKS. Each request is also appended to a log
file as one JSON line, so a test can tell whether a request reached the server at all.

Usage: upstream.py --cert C --key K --jwks URL --https N --http M --ports-file F --log-file L
The ports file gets {"https": [...], "http": [...]} once every listener is bound.
"""

import argparse
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import jwt

LOG_LOCK = threading.Lock()


def make_handler(jwks_client, log_file, listener):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            report = {
                "listener": listener,
                "method": self.command,
                "path": url.path,
                "query": url.query,
                "headers": {name.lower(): value for name, value in self.headers.items()},
                "body_bytes": len(body),
            }
            authorization = self.headers.get("Authorization", "")
            if authorization.startswith("Bearer "):
                report["jwt"] = check_jwt(jwks_client, authorization[len("Bearer "):])
            with LOG_LOCK, open(log_file, "a", encoding="utf-8") as log:
                log.write(json.dumps(report) + "\n")
            payload = json.dumps(report).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = handle_any
        do_POST = handle_any
        do_PUT = handle_any
        do_DELETE = handle_any

        def log_message(self, format, *args):
            pass

    return Handler


def check_jwt(jwks_client, token):
    """Validates a JWT-SVID's signature against the JWKS and returns its claims or the error."""
    try:
        key = jwks_client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["ES256", "ES384", "RS256", "PS256"],
            options={"verify_aud": False},
        )
        return {"valid": True, "sub": claims.get("sub"), "aud": claims.get("aud")}
    except Exception as error:  # the report carries any validation failure to the test
        return {"valid": False, "error": f"{type(error).__name__}: {error}"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--jwks", required=True)
    parser.add_argument("--https", type=int, default=1)
    parser.add_argument("--http", type=int, default=1)
    parser.add_argument("--ports-file", required=True)
    parser.add_argument("--log-file", required=True)
    args = parser.parse_args()

    jwks_client = jwt.PyJWKClient(args.jwks, cache_keys=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)

    servers = []
    ports = {"https": [], "http": []}
    for index in range(args.https):
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(jwks_client, args.log_file, f"https-{index}"))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        ports["https"].append(server.server_address[1])
        servers.append(server)
    for index in range(args.http):
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(jwks_client, args.log_file, f"http-{index}"))
        ports["http"].append(server.server_address[1])
        servers.append(server)

    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(args.ports_file + ".tmp", "w", encoding="utf-8") as file:
        json.dump(ports, file)
    os.rename(args.ports_file + ".tmp", args.ports_file)
    # Runs until the test kills it or closes stdin.
    sys.stdin.read()


if __name__ == "__main__":
    main()
