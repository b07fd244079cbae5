#!/usr/bin/env python3
"""Login limits under concurrency, through the balancer: how many of N simultaneous wrong
guesses for one account are checked against its password.

    python3 bench/login_limits.py [--guesses 200] [--bin target/debug/strata]

Starts `deploy/03-load-balancer.toml` (a balancer in front of three API servers sharing one
session store) on a free port in a temporary directory, signs up one account, then opens N
connections to the balancer and sends one wrong-password login on each at the same moment (a
barrier releases them together). Counts the answers: 401 means the password was checked, 429
that the attempt was refused by the limit (5 per account by default) before any check. Prints a
JSON line with the counts and the commit, and stops the deployment. A count of 401 above the
limit would mean concurrent guesses got past the limit. Only loopback addresses are used.
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMAIL = "target@strata.test"
PROFILE = {"firstName": "Tess", "lastName": "Target",
           "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA",
                       "postalCode": "02134"}, "phoneNumbers": []}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--guesses", type=int, default=200)
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "strata"))
    args = p.parse_args()
    if not 1 <= args.guesses <= 1000:
        sys.exit("--guesses must be from 1 to 1000")
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} does not exist: build it with `cargo build -p strata` or pass --bin")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="strata-login-limits-") as tmp:
        d = os.path.join(tmp, "deploy")
        run = lambda *a, check=True: subprocess.run([args.bin, *a, "--dir", d],
                                                     capture_output=True, text=True, check=check)
        topo = os.path.join(ROOT, "deploy", "03-load-balancer.toml")
        up = run("up", "-d", "--port", "0", "-f", topo, check=False)
        if up.returncode != 0:
            sys.exit(f"strata up failed:\n{up.stdout}\n{up.stderr}")
        try:
            status = json.loads(run("status", "--json").stdout)
            lb = next(r for r in status["roles"] if r["name"] == "lb-1")["addrs"]["http"]
            host, port = lb.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("POST", "/accounts", json.dumps(
                {"email": EMAIL, "password": "the right password", "profile": PROFILE}),
                {"content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 201:
                sys.exit(f"sign-up answered {r.status}")
            print(f"==> {args.guesses} wrong guesses at once through {lb}", flush=True)
            conns = [http.client.HTTPConnection(host, int(port), timeout=60)
                     for _ in range(args.guesses)]
            for c in conns:
                c.connect()
            barrier = threading.Barrier(args.guesses)
            statuses = [None] * args.guesses

            def guess(i):
                body = json.dumps({"email": EMAIL, "password": f"wrong guess {i}"})
                barrier.wait(timeout=60)
                try:
                    conns[i].request("POST", "/sessions", body,
                                     {"content-type": "application/json"})
                    resp = conns[i].getresponse()
                    resp.read()
                    statuses[i] = resp.status
                except OSError as e:
                    statuses[i] = f"error: {e}"

            threads = [threading.Thread(target=guess, args=(i,)) for i in range(args.guesses)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            counts = {}
            for s in statuses:
                counts[str(s)] = counts.get(str(s), 0) + 1
            result = {"commit": commit, "topology": "deploy/03-load-balancer.toml",
                      "api_servers": 3, "guesses": args.guesses, "limit": 5,
                      "checked_401": counts.get("401", 0), "refused_429": counts.get("429", 0),
                      "answers": counts}
            print(json.dumps(result), flush=True)
        finally:
            run("down", check=False)
    if result["checked_401"] > result["limit"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
