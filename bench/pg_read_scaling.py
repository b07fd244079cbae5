#!/usr/bin/env python3
"""Read throughput of the users API on PostgreSQL with 0, 1 and 2 streaming replicas.

    cargo build --release -p strata && python3 bench/pg_read_scaling.py [--users 100000] [--duration 10]

For each replica count: `strata up` (a balancer, 3 API servers, the primary, the replicas),
`strata seed --postgres` of --users users (COPY), then closed-loop `wrk -t2 -c32` of GETs of
random seeded users through the balancer. The API servers' in-process cache (1 s TTL) sees each
user again only every few seconds at these rates, so nearly every read reaches the data tier:
the primary alone with 0 replicas, the replicas in turn otherwise. Prints requests/s, the
ratio to 0 replicas, and where the reads went (the API servers' strata_db_reads_total).

Loopback only; every load run stops after --duration seconds. Needs wrk and PostgreSQL.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(ROOT, "target", "release", "strata")

LUA = """
local ids = {}
init = function(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
request = function()
  return wrk.format("GET", "/users/" .. ids[math.random(#ids)])
end
"""


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check)


def role(st, name):
    return next(r for r in st["roles"] if r["name"] == name)


def reads_by_node(api_addrs):
    total = {"primary": 0, "replica": 0}
    for a in api_addrs:
        text = urllib.request.urlopen("http://%s/metrics" % a, timeout=5).read().decode()
        for node in total:
            m = re.search(r'strata_db_reads_total\{node="%s"\} (\d+)' % node, text)
            if m:
                total[node] += int(m.group(1))
    return total


def one(replicas, users, duration, work):
    d = os.path.join(work, "r%d" % replicas)
    topo = os.path.join(work, "r%d.toml" % replicas)
    with open(topo, "w") as f:
        f.write('name = "reads-%d"\n[lb]\ncount = 1\n[api]\ncount = 3\n[data]\nengine = "postgres"\nreplicas = %d\n'
                % (replicas, replicas))
    print("==> %d replica(s): strata up" % replicas, flush=True)
    up = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
    if up.returncode != 0:
        sys.exit(up.stderr)
    try:
        st = json.loads(strata("status", "--dir", d, "--json").stdout)
        lb = role(st, "lb-1")["addrs"]["http"]
        apis = [role(st, "api-%d" % i)["addrs"]["http"] for i in (1, 2, 3)]
        primary = role(st, "pg-1")["addrs"]["postgres"]
        url = "postgresql://strata@%s/strata" % primary
        t0 = time.time()
        strata("seed", "--users", str(users), "--postgres", url)
        seed_s = time.time() - t0
        ids_file = os.path.join(work, "ids-%d.txt" % replicas)
        host, port = primary.rsplit(":", 1)
        with open(ids_file, "w") as f:
            subprocess.run(["psql", "-h", host, "-p", port, "-U", "strata", "-d", "strata", "-tAc",
                            "SELECT id FROM users"], stdout=f, check=True)
        # Replicas caught up before measuring.
        deadline = time.time() + 60
        while replicas and time.time() < deadline:
            st = json.loads(strata("status", "--dir", d, "--json").stdout)
            lags = [r["database"]["lagBytes"] for r in st["roles"]
                    if r.get("database") and r["database"]["role"] == "replica"]
            if len(lags) == replicas and all(l == 0 for l in lags):
                break
            time.sleep(0.5)
        lua = os.path.join(work, "random.lua")
        with open(lua, "w") as f:
            f.write(LUA)
        before = reads_by_node(apis)
        print("==> %d replica(s): wrk -t2 -c32 -d%ds" % (replicas, duration), flush=True)
        out = subprocess.run(["wrk", "-t2", "-c32", "-d%ds" % duration, "--latency", "-s", lua,
                              "http://%s" % lb, "--", ids_file],
                             capture_output=True, text=True, check=True).stdout
        after = reads_by_node(apis)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return {"replicas": replicas, "rps": round(rps), "p99": p99,
                "non_2xx": int(non2xx.group(1)) if non2xx else 0,
                "db_reads_primary": after["primary"] - before["primary"],
                "db_reads_replica": after["replica"] - before["replica"],
                "seed_users_per_s": round(users / seed_s)}
    finally:
        strata("down", "--dir", d, check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    if not os.path.exists(STRATA):
        sys.exit("build first: cargo build --release -p strata")
    work = tempfile.mkdtemp(prefix="strata-reads-")
    os.chmod(work, 0o755)
    try:
        rows = [one(n, args.users, args.duration, work) for n in (0, 1, 2)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["rps"] or 1
    print("\n| replicas | requests/s | vs 0 replicas | p99 | non-2xx | data-tier reads on primary | on replicas | seed (users/s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        # With no replica there is no read/write split: every read is on the primary.
        on_primary = "all" if r["replicas"] == 0 else format(r["db_reads_primary"], ",")
        print("| %d | %s | %.2fx | %s | %d | %s | %s | %s |" % (
            r["replicas"], format(r["rps"], ","), r["rps"] / base, r["p99"], r["non_2xx"],
            on_primary, format(r["db_reads_replica"], ","),
            format(r["seed_users_per_s"], ",")))


if __name__ == "__main__":
    main()
