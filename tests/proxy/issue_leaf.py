"""Issues a leaf certificate for --name signed by the CA in --ca-cert/--ca-key, with the
`cryptography` package, and writes it as PEM to --out. The proxy tests use it to check that the
interception CA's name constraints reject a host outside them."""

import argparse
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca-cert", required=True)
    parser.add_argument("--ca-key", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    with open(args.ca_cert, "rb") as file:
        ca_cert = x509.load_pem_x509_certificate(file.read())
    with open(args.ca_key, "rb") as file:
        ca_key = serialization.load_pem_private_key(file.read(), password=None)

    try:
        san = x509.IPAddress(ipaddress.ip_address(args.name))
    except ValueError:
        san = x509.DNSName(args.name)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    with open(args.out, "wb") as file:
        file.write(certificate.public_bytes(serialization.Encoding.PEM))


if __name__ == "__main__":
    main()
