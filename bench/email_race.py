#!/usr/bin/env python3
"""Email uniqueness across shard groups: concurrent sign-ups of one address through two
different API servers, in pairs.

    cargo build --release -p strata && python3 bench/email_race.py [--pairs 10000] [--in-flight 8]

`strata up -d` with two API servers (no balancer: each sign-up of a pair goes to its own server)
and `[data] shards = 4`. For each pair, two threads wait on one barrier and then POST /accounts
with the same new address (and different profiles) at the same moment, one to api-1, one to
api-2; --in-flight pairs run at once. Each pair must end with exactly one 201 and one 409.
Afterwards every group's own accounts table (read directly from its SQLite file) is checked:
each address exactly once across the groups, owned by the user the 201 named. A 503 (password
hashers busy) is retried with the same address, as a client would.

Writes the raw result to bench/results/email-race-COMMIT-TIME.json. Loopback only; bounded by
--pairs.
"""

import argparse
import collections
import concurrent.futures
import datetime
import glob
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(ROOT, "target", "release", "strata")


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check)


def commit():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"


def sign_up(server, email, i, side):
    body = json.dumps({"email": email, "password": "a long enough password %d" % i,
                       "profile": {"firstName": "Race", "lastName": "P%dS%d" % (i, side),
                                   "address": {"streetAddress": "1 Race Way", "city": "Testville",
                                               "state": "TS", "postalCode": "00501"},
                                   "phoneNumbers": []}}).encode()
    for _ in range(50):
        req = urllib.request.Request("http://%s/accounts" % server, data=body, method="POST",
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            if e.code == 503:
                time.sleep(0.05)
                continue
            return e.code, None
    return 503, None


def pair(i, servers):
    email = "race%d@example.com" % i
    barrier = threading.Barrier(2)
    out = [None, None]

    def side(k):
        barrier.wait()
        out[k] = sign_up(servers[k], email, i, k)

    threads = [threading.Thread(target=side, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return i, email, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=10000)
    ap.add_argument("--in-flight", type=int, default=8)
    args = ap.parse_args()
    if not os.path.exists(STRATA):
        sys.exit("build first: cargo build --release -p strata")
    work = tempfile.mkdtemp(prefix="strata-email-race-")
    os.chmod(work, 0o755)
    d = os.path.join(work, "deploy")
    topo = os.path.join(work, "race.toml")
    with open(topo, "w") as f:
        f.write('name = "email-race"\n[api]\ncount = 2\n[data]\nengine = "sqlite"\nshards = 4\n')
    result = {"commit": commit(), "pairs": args.pairs, "in_flight": args.in_flight}
    statuses = collections.Counter()
    winners = {}
    bad_pairs = []
    try:
        up = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
        if up.returncode != 0:
            sys.exit(up.stderr)
        st = json.loads(strata("status", "--dir", d, "--json").stdout)
        servers = [next(r for r in st["roles"] if r["name"] == n)["addrs"]["http"] for n in ("api-1", "api-2")]
        t0 = time.time()
        done = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.in_flight) as pool:
            for i, email, out in pool.map(lambda i: pair(i, servers), range(args.pairs)):
                codes = sorted(o[0] for o in out)
                statuses[tuple(codes)] += 1
                if codes != [201, 409]:
                    bad_pairs.append({"pair": i, "statuses": codes})
                else:
                    winners[email] = next(o[1]["id"] for o in out if o[0] == 201)
                done += 1
                if done % 500 == 0 or done == args.pairs:
                    rate = done / (time.time() - t0)
                    print("pairs: %d/%d (%.0f pairs/s, ETA %.0f s)" % (
                        done, args.pairs, rate, (args.pairs - done) / max(rate, 1e-9)), flush=True)
        result["seconds"] = round(time.time() - t0, 1)
        # Every group's own accounts: each address once, owned by the winner.
        owners = collections.defaultdict(list)
        for db in glob.glob(os.path.join(d, "data", "shards", "*", "strata.db")):
            c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
            for email, uid in c.execute("SELECT email, user_id FROM accounts WHERE email LIKE 'race%@example.com'"):
                owners[email].append(uid)
            c.close()
    finally:
        strata("down", "--dir", d, check=False)
        shutil.rmtree(work, ignore_errors=True)
    duplicates = {e: u for e, u in owners.items() if len(u) > 1}
    missing = [e for e in winners if e not in owners]
    wrong_owner = [e for e, u in owners.items() if e in winners and u != [winners[e]]]
    result.update({
        "statuses": {"+".join(map(str, k)): v for k, v in statuses.items()},
        "pairs_with_exactly_one_winner": args.pairs - len(bad_pairs),
        "bad_pairs": bad_pairs[:20],
        "addresses_in_accounts": len(owners),
        "duplicates": len(duplicates),
        "missing_winners": len(missing),
        "wrong_owner": len(wrong_owner),
    })
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(ROOT, "bench", "results", "email-race-%s-%s.json" % (result["commit"], stamp))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("\nresult: %s" % path)
    print("| pairs | exactly one 201 per pair | addresses stored | duplicates across groups | winners missing | time |")
    print("|---:|---:|---:|---:|---:|---:|")
    print("| %s | %s | %s | %d | %d | %.0f s |" % (
        format(args.pairs, ","), format(result["pairs_with_exactly_one_winner"], ","),
        format(len(owners), ","), len(duplicates), len(missing), result["seconds"]))
    if bad_pairs or duplicates or missing or wrong_owner:
        sys.exit("FAILED")


if __name__ == "__main__":
    main()
