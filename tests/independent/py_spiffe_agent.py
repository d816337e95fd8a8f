#!/usr/bin/env python3
"""Fetch and validate JWT-SVIDs and JWT bundles through a Mayfly agent with py-spiffe.

py-spiffe (PyPI package `spiffe`) is an independent SPIFFE Workload API client. This script
finds the agent through SPIFFE_ENDPOINT_SOCKET, as any SPIFFE workload does, and prints one
JSON object with what it observed. Usage: py_spiffe_agent.py AUDIENCE DENIED_AUDIENCE
"""

import json
import sys

from spiffe import JwtSvid, WorkloadApiClient


def main() -> None:
    audience, denied_audience = sys.argv[1], sys.argv[2]
    result = {}
    client = WorkloadApiClient(default_timeout=10)
    try:
        svid = client.fetch_jwt_svid(audience={audience})
        result["spiffe_id"] = str(svid.spiffe_id)
        result["audience"] = sorted(svid.audience)

        bundles = client.fetch_jwt_bundles()
        bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        result["bundle_trust_domain"] = str(bundle.trust_domain) if bundle else None
        result["bundle_keys"] = len(bundle.jwt_authorities) if bundle else 0

        # Validated locally by py-spiffe against the bundle from the agent.
        local = JwtSvid.parse_and_validate(svid.token, bundle, {audience})
        result["locally_validated"] = str(local.spiffe_id)

        # Validated by the agent through the ValidateJWTSVID RPC.
        remote = client.validate_jwt_svid(svid.token, audience)
        result["agent_validated"] = str(remote.spiffe_id)

        try:
            JwtSvid.parse_and_validate(svid.token, bundle, {denied_audience})
            result["wrong_audience_rejected"] = False
        except Exception:  # py-spiffe raises its own error classes here
            result["wrong_audience_rejected"] = True

        try:
            client.fetch_jwt_svid(audience={denied_audience})
            result["denied_audience_error"] = None
        except Exception as error:  # FetchJwtSvidError wraps the gRPC status
            result["denied_audience_error"] = str(error)
    finally:
        client.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
