#!/usr/bin/env python3
"""Fetch an X.509-SVID and the X.509 bundles through a Mayfly agent with py-spiffe, then verify
the certificate chain independently with `cryptography` and with `openssl verify`.

py-spiffe (PyPI package `spiffe`) finds the agent through SPIFFE_ENDPOINT_SOCKET. The script
prints one JSON object with what it observed. Usage: py_spiffe_x509.py
"""

import json
import os
import subprocess
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from spiffe import WorkloadApiClient


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def main() -> None:
    result = {}
    client = WorkloadApiClient(default_timeout=10)
    try:
        svid = client.fetch_x509_svid()
        result["spiffe_id"] = str(svid.spiffe_id)
        leaf = svid.leaf
        result["chain_length"] = len(svid.cert_chain)

        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        result["uri_sans"] = [str(uri) for uri in uris.get_values_for_type(x509.UniformResourceIdentifier)]
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        result["leaf_is_ca"] = constraints.ca
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        result["digital_signature"] = usage.digital_signature
        result["key_cert_sign"] = usage.key_cert_sign
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        result["server_auth"] = ExtendedKeyUsageOID.SERVER_AUTH in extended
        result["client_auth"] = ExtendedKeyUsageOID.CLIENT_AUTH in extended

        # The private key py-spiffe parsed must match the certificate's public key.
        key = svid.private_key
        result["key_matches"] = key.public_key().public_numbers() == leaf.public_key().public_numbers()
        result["key_curve"] = key.curve.name if isinstance(key, ec.EllipticCurvePrivateKey) else None

        bundles = client.fetch_x509_bundles()
        bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        authorities = list(bundle.x509_authorities) if bundle else []
        result["bundle_trust_domain"] = str(bundle.trust_domain) if bundle else None
        result["bundle_authorities"] = len(authorities)

        # Independent check 1: the leaf's signature verifies under a CA of the bundle.
        verified_by = []
        for authority in authorities:
            try:
                leaf.verify_directly_issued_by(authority)
                verified_by.append(authority.subject.rfc4514_string())
            except Exception:  # another CA of the bundle
                pass
        result["cryptography_verified"] = len(verified_by) == 1

        # Independent check 2: openssl builds and verifies the chain against the bundle.
        with tempfile.TemporaryDirectory() as directory:
            ca_file = os.path.join(directory, "bundle.pem")
            leaf_file = os.path.join(directory, "leaf.pem")
            with open(ca_file, "wb") as handle:
                handle.write(b"".join(pem(authority) for authority in authorities))
            with open(leaf_file, "wb") as handle:
                handle.write(pem(leaf))
            verify = subprocess.run(
                ["openssl", "verify", "-CAfile", ca_file, "-purpose", "sslclient", leaf_file],
                capture_output=True,
                text=True,
                check=False,
            )
            result["openssl_verify"] = verify.returncode == 0
            result["openssl_output"] = (verify.stdout + verify.stderr).strip()
    finally:
        client.close()
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
