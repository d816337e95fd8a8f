"""Local token services that accept a Mayfly JWT-SVID, for the federated_token_exchange tests.

Each endpoint validates the presented JWT-SVID as a cloud's federation trust does, with PyJWT and
nothing from Mayfly but its issuer URL: OIDC discovery, then the JWKS from the advertised
jwks_uri, then signature, issuer, audience, expiry and the expected subject.

  POST /rfc8693/token  RFC 8693 token exchange, subject_token_type jwt, audience
                       https://exchange.example
  POST /entra/token    client credentials with the JWT-SVID as client_assertion, audience
                       api://AzureADTokenExchange, client_id reports-app
  POST /sts/           AWS STS AssumeRoleWithWebIdentity, audience sts.amazonaws.com, XML
  GET  /__stats        requests per endpoint and the last validated claims

Usage: exchange_server.py MAYFLY_ISSUER EXPECTED_SUBJECT
It listens on 127.0.0.1 on a free port and prints one JSON line: {"port": ...}.
"""

import json
import secrets
import sys
import threading
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

ISSUER = sys.argv[1]
SUBJECT = sys.argv[2]
LOCK = threading.Lock()
STATS = {"rfc8693": 0, "entra": 0, "sts": 0, "claims": None}


def validate(token: str, audience: str) -> dict:
    """Validate a JWT-SVID through Mayfly's discovery; raise jwt.PyJWTError or ValueError."""
    with urllib.request.urlopen(f"{ISSUER}/.well-known/openid-configuration", timeout=5) as response:
        discovery = json.load(response)
    if discovery.get("issuer") != ISSUER:
        raise ValueError("discovery names another issuer")
    client = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False)
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256", "RS256", "PS256"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
    )
    if claims["sub"] != SUBJECT:
        raise ValueError(f"subject {claims['sub']!r} is not trusted")
    with LOCK:
        STATS["claims"] = claims
    return claims


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status: int, body: bytes, content_type: str):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def json(self, status: int, value: dict):
        self.reply(status, json.dumps(value).encode(), "application/json")

    def do_GET(self):
        if self.path == "/__stats":
            with LOCK:
                self.json(200, STATS)
        else:
            self.json(404, {"error": "not_found"})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
        if self.path == "/rfc8693/token":
            self.count("rfc8693")
            self.token_exchange(form)
        elif self.path == "/entra/token":
            self.count("entra")
            self.client_assertion(form)
        elif self.path == "/sts/":
            self.count("sts")
            self.assume_role(form)
        else:
            self.json(404, {"error": "not_found"})

    def count(self, name: str):
        with LOCK:
            STATS[name] += 1

    def token_exchange(self, form: dict):
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
            return self.json(400, {"error": "unsupported_grant_type"})
        if form.get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt":
            return self.json(400, {"error": "invalid_request"})
        try:
            validate(form.get("subject_token", ""), "https://exchange.example")
        except (jwt.PyJWTError, ValueError) as error:
            return self.json(400, {"error": "invalid_grant", "error_description": str(error)})
        self.json(200, {
            "access_token": "exchanged-" + secrets.token_urlsafe(16),
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 900,
            "scope": form.get("scope"),
        })

    def client_assertion(self, form: dict):
        if form.get("grant_type") != "client_credentials" or form.get("client_id") != "reports-app":
            return self.json(400, {"error": "invalid_request"})
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return self.json(400, {"error": "invalid_request"})
        try:
            validate(form.get("client_assertion", ""), "api://AzureADTokenExchange")
        except (jwt.PyJWTError, ValueError) as error:
            return self.json(401, {"error": "invalid_client", "error_description": str(error)})
        self.json(200, {"access_token": "entra-" + secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 3599})

    def assume_role(self, form: dict):
        if form.get("Action") != "AssumeRoleWithWebIdentity" or not form.get("RoleArn"):
            return self.sts_error("InvalidParameterValue")
        try:
            validate(form.get("WebIdentityToken", ""), "sts.amazonaws.com")
        except (jwt.PyJWTError, ValueError):
            return self.sts_error("InvalidIdentityToken")
        duration = int(form.get("DurationSeconds", "3600"))
        expiration = (datetime.now(timezone.utc) + timedelta(seconds=duration)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = (
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
            "<AssumeRoleWithWebIdentityResult>"
            f"<SubjectFromWebIdentityToken>{SUBJECT}</SubjectFromWebIdentityToken>"
            f"<AssumedRoleUser><Arn>{form['RoleArn']}/{form.get('RoleSessionName', '')}</Arn></AssumedRoleUser>"
            "<Credentials>"
            f"<AccessKeyId>ASIA{secrets.token_hex(8).upper()}</AccessKeyId>"
            f"<SecretAccessKey>{secrets.token_urlsafe(30)}</SecretAccessKey>"
            f"<SessionToken>{secrets.token_urlsafe(48)}</SessionToken>"
            f"<Expiration>{expiration}</Expiration>"
            "</Credentials>"
            "</AssumeRoleWithWebIdentityResult>"
            "</AssumeRoleWithWebIdentityResponse>"
        )
        self.reply(200, body.encode(), "text/xml")

    def sts_error(self, code: str):
        body = f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>validation detail for the operator of STS only</Message></Error></ErrorResponse>"
        self.reply(400, body.encode(), "text/xml")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
