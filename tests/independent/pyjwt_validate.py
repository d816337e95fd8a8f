"""Validate a Mayfly JWT-SVID the way an independent relying party would.

The script knows only the issuer URL: it reads OIDC discovery, fetches the JWKS from the
advertised jwks_uri with PyJWT's PyJWKClient, and validates the token's signature, issuer,
audience and expiry. It prints the validated claims as JSON, or exits with status 1 and the
reason on stderr.

Usage: pyjwt_validate.py ISSUER AUDIENCE TOKEN
"""

import json
import sys
import urllib.request

import jwt


def main() -> int:
    issuer, audience, token = sys.argv[1], sys.argv[2], sys.argv[3]
    with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=5) as response:
        discovery = json.load(response)
    if discovery.get("issuer") != issuer:
        print(f"discovery names issuer {discovery.get('issuer')!r}, expected {issuer!r}", file=sys.stderr)
        return 1

    client = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False)
    try:
        signing_key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            signing_key.key,
            algorithms=["ES256", "RS256", "PS256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
            leeway=0,
        )
    except jwt.PyJWTError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"header": jwt.get_unverified_header(token), "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
