"""Sends --count requests with Python `requests` through the proxies named in HTTP_PROXY and
HTTPS_PROXY, trusting the CA bundle given as --ca, and prints a JSON list of {"status", "body"},
or {"error"} for a TLS or connection failure. With --wait-for FILE, every request after the
first waits until FILE exists, so a test can change the world between requests of one process."""

import argparse
import json
import os
import time

import requests


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--wait-for")
    args = parser.parse_args()

    headers = dict(header.split(": ", 1) for header in args.header)
    results = []
    # One session, so several requests share the proxy connection (keep-alive).
    with requests.Session() as session:
        for index in range(args.count):
            if index > 0 and args.wait_for:
                while not os.path.exists(args.wait_for):
                    time.sleep(0.05)
            try:
                response = session.get(args.url, headers=headers, verify=args.ca, timeout=30)
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                results.append({"status": response.status_code, "body": body})
            except requests.exceptions.RequestException as error:
                results.append({"error": f"{type(error).__name__}: {error}"})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
