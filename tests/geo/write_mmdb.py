"""Write a small MaxMind DB in the GeoIP2-City layout for the server's location tests.

Usage: write_mmdb.py OUTPUT NETWORK=COUNTRY[-SUBDIVISION] ...
For example 192.0.2.0/24=DE-BE maps that network to Germany, state of Berlin.
"""

import sys

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def record(location: str) -> dict:
    country, _, subdivision = location.partition("-")
    data = {"country": {"iso_code": country}}
    if subdivision:
        data["subdivisions"] = [{"iso_code": subdivision}]
    return data


def main() -> None:
    output, *entries = sys.argv[1:]
    # An IPv6 tree with the IPv4 space mapped in, so lookups of both address families work.
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City", languages=["en"])
    for entry in entries:
        network, _, location = entry.partition("=")
        writer.insert_network(IPSet([network]), record(location))
    writer.to_db_file(output)


if __name__ == "__main__":
    main()
