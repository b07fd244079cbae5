#!/usr/bin/env python3
"""Stampede trials: loads per trial across all API servers, with Redis and with Memcached as L2.

    cargo build --release -p strata && python3 bench/cache_stampede.py [--trials 100] [--concurrency 1000]

One deployment directory (temporary) seeded with --users users (SQLite), run behind the
balancer with 3 API servers, once per L2 engine. Each trial sends --concurrency requests at
once (one connection each) through the balancer for a user nobody has read — a new user per
trial — and counts the database loads as the change in strata_cache_loads_total summed over the
API servers' /metrics (`strata cache-load stampede`). Target: 1 load in every trial.

Loopback only; every load is bounded. Writes bench/results/cache-stampede-<UTC>-<commit>.json.
"""

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.environ.get("STRATA_BIN") or os.path.join(ROOT, "target", "release", "strata")


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--engines", default="redis,memcached")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="strata-stampede-")
    d = os.path.join(tmp, "deploy")
    os.makedirs(os.path.join(d, "data"))
    subprocess.run([STRATA, "seed", "--users", str(a.users), "--data", os.path.join(d, "data")],
                   check=True, capture_output=True)
    db = sqlite3.connect(os.path.join(d, "data", "strata.db"))
    ids = [row[0] for row in db.execute("SELECT id FROM users ORDER BY id")]
    db.close()
    res = {"commit": commit, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "users": len(ids), "trials": a.trials, "concurrency": a.concurrency, "engines": {}}
    for k, engine in enumerate(a.engines.split(",")):
        # A different slice of users per engine: every trial's user is cold everywhere.
        cold = ids[k * a.trials:(k + 1) * a.trials]
        cold_path = os.path.join(tmp, f"cold-{engine}.txt")
        with open(cold_path, "w") as f:
            f.write("\n".join(str(i) for i in cold) + "\n")
        topo = os.path.join(tmp, f"{engine}.toml")
        with open(topo, "w") as f:
            f.write(f'name = "stampede-{engine}"\n[lb]\n[api]\ncount = 3\n[cache]\nengine = "{engine}"\nnodes = 1\n')
        print(f"==> {engine}: strata up", flush=True)
        out = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
        if out.returncode != 0:
            print(out.stdout, out.stderr)
            sys.exit(1)
        try:
            st = json.loads(strata("status", "--dir", d, "--json").stdout)
            roles = {r["name"]: r for r in st["roles"]}
            lb = roles["lb-1"]["addrs"]["http"]
            apis = [roles[f"api-{i}"]["addrs"]["http"] for i in (1, 2, 3)]
            run = subprocess.run([STRATA, "cache-load", "stampede", "--target", lb, "--apis", ",".join(apis),
                                  "--cold", cold_path, "--trials", str(a.trials),
                                  "--concurrency", str(a.concurrency)],
                                 capture_output=True, text=True, check=True)
            sys.stderr.write(run.stderr[-2000:])
            r = json.loads(run.stdout)
            res["engines"][engine] = r
            loads = [t["loads"] for t in r["per_trial"]]
            print(f"    {engine}: {r['trials_with_one_load']} of {r['trials']} trials with exactly 1 load; "
                  f"loads min {min(loads)} max {max(loads)}; {r['failed']} failed requests", flush=True)
        finally:
            strata("down", "--dir", d, check=False)
    os.makedirs(a.out, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(a.out, f"cache-stampede-{stamp}-{commit}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(f"raw: {path}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
