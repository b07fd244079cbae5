#!/usr/bin/env python3
"""Write and read throughput of the users API with 1, 2 and 4 embedded shard groups.

    cargo build --release -p strata && python3 bench/shard_scaling.py [--users 1000000]
        [--write-rate 3000] [--read-rate 6000] [--duration 15]

For each group count: `strata up -d` (a balancer, 3 API servers, `[data] shards = N`; N = 1 is
the unsharded database), `strata seed --users N`, an admin token, then through the balancer:
1. writes: POST /users (a new user each) for --duration s, open loop at --write-rate/s (oha,
   latency-corrected HDR percentiles), then closed loop (64 connections) for the capacity;
2. reads: GET /users/ID of a user drawn uniformly per request from all seeded ids (a fresh
   random stream), open loop at --read-rate/s, then closed loop.
Prints a table with each count's ratio to 1 group and writes the raw oha results to
bench/results/shard-scaling-COMMIT-TIME.json. Loopback only; every load run is bounded by
--duration. Needs oha (installed into target/bench-tools, as bench/cache.py does).
"""

import argparse
import datetime
import glob
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(ROOT, "target", "release", "strata")
OHA = os.path.join(ROOT, "target", "bench-tools", "bin", "oha")


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check)


def commit():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"


def ensure_oha():
    if not os.path.exists(OHA):
        print("==> installing oha (open-loop HTTP load generator) into target/bench-tools", flush=True)
        subprocess.run(["cargo", "install", "oha", "--locked", "--root",
                        os.path.join(ROOT, "target", "bench-tools")], check=True)


def post(url, body, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, None


def admin_token(d, lb):
    email, password = "bench-admin@strata.test", "bench admin password"
    profile = {"firstName": "Bench", "lastName": "Admin", "phoneNumbers": [],
               "address": {"streetAddress": "1 Ops Way", "city": "Testville", "state": "TS", "postalCode": "00501"}}
    post("http://%s/accounts" % lb, {"email": email, "password": password, "profile": profile})
    strata("admin", "grant", email, "--dir", d)
    status, body = post("http://%s/sessions" % lb, {"email": email, "password": password})
    if status != 201 and status != 200:
        sys.exit("cannot log the bench admin in: %s" % status)
    return body["access_token"]


def oha(args):
    out = subprocess.run([OHA, "--no-tui", "--output-format", "json", *args],
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    codes = r.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    pct = r.get("latencyPercentiles", {})
    kinds = r.get("errorDistribution", {})
    # Requests still in flight when the run's time is up are cut off by oha, not failed.
    cut = kinds.get("aborted due to deadline", 0)
    return {"rps": round(r["summary"]["requestsPerSec"]), "ok": ok, "cut_off_at_end": cut,
            "errors": sum(kinds.values()) - cut + sum(v for k, v in codes.items() if not k.startswith("2")),
            "p50_ms": round(pct.get("p50", 0) * 1000, 2), "p99_ms": round(pct.get("p99", 0) * 1000, 2),
            "p999_ms": round(pct.get("p99.9", 0) * 1000, 2),
            "status_codes": codes, "error_kinds": r.get("errorDistribution", {})}


def one(groups, args, work):
    d = os.path.join(work, "g%d" % groups)
    topo = os.path.join(work, "g%d.toml" % groups)
    with open(topo, "w") as f:
        f.write('name = "scaling-%d"\n[lb]\ncount = 1\n[api]\ncount = 3\n[data]\nengine = "sqlite"\n' % groups)
        if groups > 1:
            f.write("shards = %d\n" % groups)
    print("==> %d group(s): strata up, seed %d users" % (groups, args.users), flush=True)
    # The data directory is seeded before the servers start (sharded as the topology says).
    data = os.path.join(d, "data")
    seed = [STRATA, "seed", "--users", str(args.users), "--data", data]
    if groups > 1:
        seed += ["--shards", str(groups)]
    subprocess.run(seed, check=True, stdout=subprocess.DEVNULL)
    up = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
    if up.returncode != 0:
        sys.exit(up.stderr)
    try:
        st = json.loads(strata("status", "--dir", d, "--json").stdout)
        lb = next(r for r in st["roles"] if r["name"] == "lb-1")["addrs"]["http"]
        ids = os.path.join(work, "urls-%d.txt" % groups)
        with open(ids, "w") as f:
            for db in glob.glob(os.path.join(data, "shards", "*", "strata.db")) + glob.glob(os.path.join(data, "strata.db")):
                c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
                for (uid,) in c.execute("SELECT id FROM users"):
                    f.write("http://%s/users/%d\n" % (lb, uid))
                c.close()
        token = admin_token(d, lb)
        body = json.dumps({"firstName": "Scale", "lastName": "Test", "phoneNumbers": [],
                           "address": {"streetAddress": "1 Shard St", "city": "Testville", "state": "TS", "postalCode": "00501"}})
        write = ["-m", "POST", "-H", "authorization: Bearer " + token, "-H", "content-type: application/json",
                 "-d", body, "http://%s/users" % lb]
        row = {"groups": groups}
        print("==> %d group(s): writes open loop %d/s, %d s" % (groups, args.write_rate, args.duration), flush=True)
        row["write_open"] = oha(["-z", "%ds" % args.duration, "-q", str(args.write_rate), "--latency-correction", "-c", "128", *write])
        print("==> %d group(s): writes closed loop" % groups, flush=True)
        row["write_closed"] = oha(["-z", "%ds" % args.duration, "-c", "64", *write])
        print("==> %d group(s): reads open loop %d/s" % (groups, args.read_rate), flush=True)
        row["read_open"] = oha(["-z", "%ds" % args.duration, "-q", str(args.read_rate), "--latency-correction", "-c", "128",
                                "--urls-from-file", ids])
        print("==> %d group(s): reads closed loop" % groups, flush=True)
        row["read_closed"] = oha(["-z", "%ds" % args.duration, "-c", "64", "--urls-from-file", ids])
        return row
    finally:
        strata("down", "--dir", d, check=False)
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1000000)
    ap.add_argument("--write-rate", type=int, default=3000)
    ap.add_argument("--read-rate", type=int, default=6000)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--groups", default="1,2,4")
    args = ap.parse_args()
    if not os.path.exists(STRATA):
        sys.exit("build first: cargo build --release -p strata")
    ensure_oha()
    work = tempfile.mkdtemp(prefix="strata-scaling-")
    os.chmod(work, 0o755)
    try:
        rows = [one(int(g), args, work) for g in args.groups.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"commit": commit(), "users": args.users, "write_rate": args.write_rate,
              "read_rate": args.read_rate, "duration_s": args.duration, "rows": rows,
              "cpus": os.cpu_count()}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(ROOT, "bench", "results", "shard-scaling-%s-%s.json" % (result["commit"], stamp))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("\nresult: %s" % path)
    print("| groups | writes/s open loop at %d/s (p50 / p99 ms, errors) | writes/s closed loop (vs 1) | reads/s open loop at %d/s (p50 / p99 ms, errors) | reads/s closed loop (vs 1) |" % (args.write_rate, args.read_rate))
    print("|---:|---|---|---|---|")
    base_w = rows[0]["write_closed"]["rps"] or 1
    base_r = rows[0]["read_closed"]["rps"] or 1
    for r in rows:
        wo, wc, ro, rc = r["write_open"], r["write_closed"], r["read_open"], r["read_closed"]
        print("| %d | %s (%.1f / %.1f, %d) | %s (%.2fx) | %s (%.1f / %.1f, %d) | %s (%.2fx) |" % (
            r["groups"], format(wo["rps"], ","), wo["p50_ms"], wo["p99_ms"], wo["errors"],
            format(wc["rps"], ","), wc["rps"] / base_w,
            format(ro["rps"], ","), ro["p50_ms"], ro["p99_ms"], ro["errors"],
            format(rc["rps"], ","), rc["rps"] / base_r))


if __name__ == "__main__":
    main()
