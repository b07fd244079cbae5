#!/usr/bin/env python3
"""Cache-tier benchmark: Zipf reads over a million users, a stampede, coherence, a Redis kill.

    cargo build --release -p strata && python3 bench/cache.py [--users 1000000] [--rate 2000]

One deployment directory (temporary) seeded once with --users users (SQLite), then run three
times behind the balancer with 3 API servers:
  off        every read goes to the database (`[cache] engine = "off"`);
  in-process L1 only (moka, 1 s TTL: the embedded default);
  redis      L1 over one Redis (L2), L1s kept coherent by the invalidation bus.
L1 is sized to hold 10% of the users. In each mode:
  1. Zipf(0.99) reads: a closed-loop warm-up (--warm requests), then open-loop load at --rate
     req/s for --duration s (oha, latency-corrected: HDR percentiles). Hit ratio per level and
     database reads per 1,000 requests come from the API servers' /metrics (deltas).
  2. Stampede: 1,000 concurrent requests for one cold user; loads from the database counted.
  3. Coherence: --rounds writes through one API server, each followed at once by reads through
     the other two; stale reads counted.
  4. (redis) Kill -9 the Redis server under open-loop load; failed requests and latency.

Loopback only; every load is bounded in count and time. Needs redis-server and oha (bench/lb.sh
installs oha into target/bench-tools).
"""

import argparse
import bisect
import http.client
import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import authn  # noqa: E402  (bench/authn.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(ROOT, "target", "release", "strata")


def oha_path():
    for p in [shutil.which("oha"), os.path.join(ROOT, "target", "bench-tools", "bin", "oha")]:
        if p and os.path.exists(p):
            return p
    print("==> installing oha (open-loop HTTP load generator) into target/bench-tools", flush=True)
    subprocess.run(["cargo", "install", "oha", "--locked", "--root",
                    os.path.join(ROOT, "target", "bench-tools")], check=True)
    return os.path.join(ROOT, "target", "bench-tools", "bin", "oha")


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check,
                          env={**os.environ, **authn.LONG_TOKENS})


# An admin's Authorization header for the writes (set once the deployment is up).
AUTH = {}


def status(d):
    return json.loads(strata("status", "--dir", d, "--json").stdout)


def role(st, name):
    return next(r for r in st["roles"] if r["name"] == name)


def metrics(apis):
    """Sums every sample of every API server's /metrics by name{labels}."""
    out = {}
    for api in apis:
        host, port = api.split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            try:
                out[key] = out.get(key, 0.0) + float(value)
            except ValueError:
                pass
        c.close()
    return out


def delta(after, before, key):
    return after.get(key, 0.0) - before.get(key, 0.0)


def hits(m, level, result):
    return m.get(f'strata_cache_requests_total{{level="{level}",result="{result}"}}', 0.0)


def oha(oha_bin, *args):
    raw = subprocess.run([oha_bin, "--no-tui", "--output-format", "json", *args],
                         capture_output=True, text=True, check=True).stdout
    d = json.loads(raw)
    p = d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    errors = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
    ok = sum(v for k, v in codes.items() if str(k) in ("200", "404", "304"))
    failed = sum(v for k, v in codes.items() if str(k) not in ("200", "404", "304")) + sum(errors.values())
    return {"ok": ok, "failed": failed, "codes": codes, "errors": errors,
            "p50": p.get("p50", 0) * 1000, "p99": p.get("p99", 0) * 1000,
            "p999": p.get("p99.9", 0) * 1000, "rps": d.get("summary", {}).get("requestsPerSec", 0)}


class Client:
    def __init__(self, addr):
        host, port = addr.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def request(self, method, path, body=None):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        headers.update(AUTH)
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers=headers)
        r = self.conn.getresponse()
        return r.status, r.read()


def zipf_ranks(n, s, count, rng):
    cum, total = [], 0.0
    for r in range(1, n + 1):
        total += 1.0 / (r ** s)
        cum.append(total)
    return [bisect.bisect_left(cum, rng.random() * total) for _ in range(count)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--warm", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=400_000, help="Zipf URL sample size")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    oha_bin = oha_path()
    rng = random.Random(12)
    tmp = tempfile.mkdtemp(prefix="strata-cache-bench-")
    d = os.path.join(tmp, "deploy")
    os.makedirs(os.path.join(d, "data"))
    print(f"==> seeding {args.users:,} users", flush=True)
    subprocess.run([STRATA, "seed", "--users", str(args.users), "--data", os.path.join(d, "data")],
                   check=True)
    db = sqlite3.connect(os.path.join(d, "data", "strata.db"))
    ids = [row[0] for row in db.execute("SELECT id FROM users ORDER BY id")]
    body_len = db.execute("SELECT avg(length(profile)) FROM users").fetchone()[0]
    db.close()
    rng.shuffle(ids)  # popularity independent of creation order
    print(f"==> sampling {args.samples:,} Zipf(0.99) ranks over {len(ids):,} users", flush=True)
    sample = [ids[r] for r in zipf_ranks(len(ids), 0.99, args.samples, rng)]
    distinct = set(sample)
    cold = [i for i in ids[-1000:] if i not in distinct]
    # L1 holds 10% of the users: its byte bound from the entry weight (96 + key + body).
    weight = 96 + len("user:") + 19 + body_len + 20
    l1_mib = max(1, math.ceil(0.10 * len(ids) * weight / 2**20))
    print(f"==> L1 bound {l1_mib} MiB per API server (~{0.10 * len(ids):,.0f} users of ~{weight:.0f} bytes)")

    modes = [("off", '[cache]\nengine = "off"\n'),
             ("in-process", f"[cache]\nl1_mib = {l1_mib}\n"),
             ("redis", f'[cache]\nengine = "redis"\nnodes = 1\nmax_mib = 2048\nl1_mib = {l1_mib}\n')]
    results = {"users": len(ids), "rate": args.rate, "duration": args.duration, "l1_mib": l1_mib,
               "modes": {}}
    for mode, cache_table in modes:
        topo = os.path.join(tmp, f"{mode}.toml")
        with open(topo, "w") as f:
            f.write(f'name = "cache-bench-{mode}"\n[lb]\n[api]\ncount = 3\n{cache_table}')
        print(f"==> {mode}: strata up", flush=True)
        out = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
        if out.returncode != 0:
            print(out.stdout, out.stderr)
            sys.exit(1)
        try:
            st = status(d)
            lb = role(st, "lb-1")["addrs"]["http"]
            apis = [role(st, f"api-{i}")["addrs"]["http"] for i in (1, 2, 3)]
            AUTH.update(authn.admin_headers(STRATA, d, lb))
            urls = os.path.join(tmp, "urls.txt")
            with open(urls, "w") as f:
                for i in sample:
                    f.write(f"http://{lb}/users/{i}\n")
            r = {}
            if mode != "off":  # nothing to warm without a cache
                print(f"==> {mode}: warm-up, {args.warm:,} requests closed-loop", flush=True)
                oha(oha_bin, "-n", str(args.warm), "-c", "32", "--urls-from-file", urls)
            before = metrics(apis)
            print(f"==> {mode}: {args.rate} req/s for {args.duration} s (open loop)", flush=True)
            load = oha(oha_bin, "-z", f"{args.duration}s", "-q", str(args.rate), "-c", "64",
                       "--latency-correction", "--urls-from-file", urls)
            after = metrics(apis)
            reqs = load["ok"] + load["failed"]
            loads = delta(after, before, "strata_cache_loads_total")
            l1h, l1m = (delta(after, before, f'strata_cache_requests_total{{level="l1",result="{x}"}}')
                        for x in ("hit", "miss"))
            l2h, l2m = (delta(after, before, f'strata_cache_requests_total{{level="l2",result="{x}"}}')
                        for x in ("hit", "miss"))
            r["zipf"] = {**load, "requests": reqs, "db_loads": loads,
                         "db_reads_per_1000": 1000 * loads / max(reqs, 1),
                         "l1_hit_ratio": l1h / max(l1h + l1m, 1),
                         "l2_hit_ratio": l2h / max(l2h + l2m, 1) if (l2h + l2m) else None}
            print(f"    {json.dumps(r['zipf'], default=str)}")

            print(f"==> {mode}: stampede, 1,000 concurrent requests for one cold user", flush=True)
            before = metrics(apis)
            st_load = oha(oha_bin, "-n", "1000", "-c", "1000", f"http://{lb}/users/{cold[0]}")
            after = metrics(apis)
            r["stampede"] = {"ok": st_load["ok"], "failed": st_load["failed"],
                             "db_loads": delta(after, before, "strata_cache_loads_total")}
            print(f"    {r['stampede']}")

            print(f"==> {mode}: coherence, {args.rounds} write-then-read rounds", flush=True)
            clients = [Client(a) for a in apis]
            uid = cold[1]
            stale, reads = 0, 0
            profile = {"firstName": "v0", "lastName": "Coherent",
                       "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA",
                                   "postalCode": "02134"}}
            for c in clients:
                c.request("GET", f"/users/{uid}")
            for n in range(1, args.rounds + 1):
                w = n % 3
                profile["firstName"] = f"v{n}"
                code, _ = clients[w].request("PUT", f"/users/{uid}", profile)
                assert code == 200, code
                for k in (1, 2):
                    code, body = clients[(w + k) % 3].request("GET", f"/users/{uid}")
                    reads += 1
                    if code != 200 or json.loads(body)["firstName"] != f"v{n}":
                        stale += 1
            r["coherence"] = {"reads": reads, "stale": stale}
            print(f"    {r['coherence']}")

            if mode == "redis":
                print("==> redis: kill -9 the Redis server under load", flush=True)
                cache_pid = role(st, "cache-1")["pid"]
                with open(f"/proc/{cache_pid}/task/{cache_pid}/children") as f:
                    redis_pid = int(f.read().split()[0])
                killer = threading.Timer(3.0, lambda: os.kill(redis_pid, 9))
                killer.start()
                kill_load = oha(oha_bin, "-z", f"{args.duration}s", "-q", str(args.rate), "-c", "64",
                                "--latency-correction", "--urls-from-file", urls)
                killer.join()
                r["redis_kill"] = kill_load
                print(f"    {json.dumps(kill_load, default=str)}")
            results["modes"][mode] = r
        finally:
            strata("down", "--dir", d, check=False)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(args.out, f"cache-{stamp}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    report(results, os.path.join(args.out, f"cache-{stamp}.svg"))
    print(f"raw: {path}")
    shutil.rmtree(tmp, ignore_errors=True)


def report(res, svg_path):
    modes = res["modes"]
    base = modes.get("off", {}).get("zipf", {}).get("db_reads_per_1000") or 0
    print()
    print("| cache | L1 hit ratio | L2 hit ratio | DB reads / 1,000 requests | vs no cache | p50 ms | p99 ms | p99.9 ms | failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m, r in modes.items():
        z = r["zipf"]
        l2 = f"{z['l2_hit_ratio']:.1%}" if z.get("l2_hit_ratio") is not None else "-"
        fewer = f"{base / z['db_reads_per_1000']:.1f}× fewer" if z["db_reads_per_1000"] and m != "off" else "-"
        l1 = f"{z['l1_hit_ratio']:.1%}" if m != "off" else "-"
        print(f"| {m} | {l1} | {l2} | {z['db_reads_per_1000']:.0f} | {fewer} | {z['p50']:.2f} | {z['p99']:.2f} | {z['p999']:.2f} | {z['failed']} |")
    print()
    print("| cache | stampede: DB loads for 1,000 concurrent cold requests | coherence: stale reads |")
    print("|---|---:|---:|")
    for m, r in modes.items():
        print(f"| {m} | {r['stampede']['db_loads']:.0f} | {r['coherence']['stale']} of {r['coherence']['reads']} |")
    if "redis_kill" in modes.get("redis", {}):
        k = modes["redis"]["redis_kill"]
        z = modes["redis"]["zipf"]
        print()
        print("| Redis | requests | failed | p50 ms | p99 ms | p99.9 ms |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| up | {z['requests']} | {z['failed']} | {z['p50']:.2f} | {z['p99']:.2f} | {z['p999']:.2f} |")
        print(f"| killed at 3 s | {k['ok'] + k['failed']} | {k['failed']} | {k['p50']:.2f} | {k['p99']:.2f} | {k['p999']:.2f} |")
    # SVG: database reads per 1,000 requests per mode (log-free bars, value labels).
    w, h, pad = 560, 300, 50
    names = list(modes)
    vals = [modes[m]["zipf"]["db_reads_per_1000"] for m in names]
    top = max(vals + [1])
    bw = (w - 2 * pad) / max(len(names), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{w/2}" y="20" text-anchor="middle" font-size="14">Database reads per 1,000 requests, Zipf(0.99) over {res["users"]:,} users (lower is better)</text>',
             f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>']
    for i, (m, v) in enumerate(zip(names, vals)):
        bh = (h - 2 * pad - 20) * v / top
        x = pad + i * bw + bw * 0.2
        parts.append(f'<rect x="{x:.0f}" y="{h-pad-bh:.0f}" width="{bw*0.6:.0f}" height="{bh:.0f}" fill="#2b7bb9"/>')
        parts.append(f'<text x="{x + bw*0.3:.0f}" y="{h-pad-bh-5:.0f}" text-anchor="middle">{v:.0f}</text>')
        parts.append(f'<text x="{x + bw*0.3:.0f}" y="{h-pad+16:.0f}" text-anchor="middle">{m}</text>')
    parts.append("</svg>")
    with open(svg_path, "w") as f:
        f.write("\n".join(parts))
    print(f"plot: {svg_path}")


if __name__ == "__main__":
    main()
