#!/usr/bin/env python3
"""Embedded coherence: stale reads and read latency of the default topology, change log off vs on.

    cargo build --release -p strata && python3 bench/cache_coherence.py [--rounds 10000] [--rate 2000]

The default topology of `strata up` (deploy/03-load-balancer.toml: a balancer, three API servers
on one SQLite database, in-process L1 caches only, no Redis), seeded once with --users users,
then run twice on the same data:
  ttl    `[cache] coherence = "ttl"`: the behaviour before the change log — another server's L1
         may serve a value up to the L1 TTL (1 s) old;
  watch  the default: before serving from L1, each server applies the database's change log.
In each mode:
  1. Coherence: --rounds rounds of (GET through server B to warm its L1; PUT through server A;
     at once GET through server B), A and B rotating over the three servers; no read-your-writes
     token, no cookie. A read that does not show the PUT's value is stale.
  2. Read latency, open loop: GETs of --hot users (uniform) through the balancer at --rate
     req/s for --duration s (oha, latency-corrected: HDR percentiles), after a closed-loop
     warm-up; once with reads only, once with a writer doing --write-rate PUT/s of the same
     users through one API server meanwhile.
  3. Per-read cost: GETs of one user, one at a time (closed loop, one connection), straight to
     one API server: the mean latency difference between the modes is what the check costs.

Writes the raw result to bench/results/cache-coherence-<commit>-<UTC time>.json. Loopback only;
every loop is bounded in count and time. Needs oha (bench/lb.sh installs it into
target/bench-tools). Honours CARGO_TARGET_DIR for the strata binary.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import authn  # noqa: E402  (bench/authn.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
STRATA = os.path.join(TARGET, "release", "strata")
DEFAULT_TOPOLOGY = os.path.join(ROOT, "deploy", "03-load-balancer.toml")


def oha_path():
    for p in [shutil.which("oha"), os.path.join(ROOT, "target", "bench-tools", "bin", "oha"),
              "/work/main/target/bench-tools/bin/oha"]:
        if p and os.path.exists(p):
            return p
    print("==> installing oha (open-loop HTTP load generator) into target/bench-tools", flush=True)
    subprocess.run(["cargo", "install", "oha", "--locked", "--root",
                    os.path.join(ROOT, "target", "bench-tools")], check=True)
    return os.path.join(ROOT, "target", "bench-tools", "bin", "oha")


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check,
                          env={**os.environ, **authn.LONG_TOKENS})


def commit():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"


def dirty():
    out = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                         capture_output=True, text=True).stdout.strip()
    return bool(out)


AUTH = {}


def status(d):
    return json.loads(strata("status", "--dir", d, "--json").stdout)


def role(st, name):
    return next(r for r in st["roles"] if r["name"] == name)


def oha(oha_bin, *args):
    raw = subprocess.run([oha_bin, "--no-tui", "--output-format", "json", *args],
                         capture_output=True, text=True, check=True).stdout
    d = json.loads(raw)
    p = d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    errors = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
    ok = sum(v for k, v in codes.items() if str(k) in ("200", "404", "304"))
    failed = sum(v for k, v in codes.items() if str(k) not in ("200", "404", "304")) + sum(errors.values())
    s = d.get("summary", {})
    return {"ok": ok, "failed": failed, "codes": codes, "errors": errors,
            "mean_ms": s.get("average", 0) * 1000,
            "p50": p.get("p50", 0) * 1000, "p99": p.get("p99", 0) * 1000,
            "p999": p.get("p99.9", 0) * 1000, "rps": s.get("requestsPerSec", 0)}


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


def profile(first):
    return {"firstName": first, "lastName": "Coherent",
            "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA",
                        "postalCode": "02134"}}


def coherence(apis, uid, rounds, budget_s):
    """PUT through one server, then at once GET through another: stale reads of how many."""
    clients = [Client(a) for a in apis]
    stale, reads, lag_versions = 0, 0, []
    deadline = time.monotonic() + budget_s
    for n in range(1, rounds + 1):
        if time.monotonic() > deadline:
            print(f"    stopped after {n - 1} rounds: over the {budget_s} s budget", flush=True)
            break
        w, r = n % 3, (n + 1 + n // 3) % 3
        if r == w:
            r = (w + 1) % 3
        code, _ = clients[r].request("GET", f"/users/{uid}")  # warm the reader's L1
        assert code == 200, code
        code, _ = clients[w].request("PUT", f"/users/{uid}", profile(f"v{n}"))
        assert code == 200, code
        code, body = clients[r].request("GET", f"/users/{uid}")
        reads += 1
        if code != 200 or json.loads(body)["firstName"] != f"v{n}":
            stale += 1
    return {"reads": reads, "stale": stale}


def writer(api, ids, rate, seconds, stop):
    """PUTs of `ids` at `rate` per second for at most `seconds` (bounded)."""
    c = Client(api)
    rng = random.Random(7)
    done, start = 0, time.monotonic()
    while not stop.is_set() and time.monotonic() - start < seconds:
        due = start + done / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        uid = rng.choice(ids)
        c.request("PUT", f"/users/{uid}", profile(f"w{done}"))
        done += 1
    return done


def run_mode(mode, coherence_key, args, d, tmp, ids, hot, oha_bin):
    topo = os.path.join(tmp, f"{mode}.toml")
    with open(DEFAULT_TOPOLOGY) as f:
        base = f.read()
    with open(topo, "w") as f:
        f.write(base + f'\n[cache]\ncoherence = "{coherence_key}"\n')
    print(f"==> {mode}: strata up (default topology, [cache] coherence = \"{coherence_key}\")", flush=True)
    out = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
    if out.returncode != 0:
        print(out.stdout, out.stderr)
        sys.exit(1)
    r = {}
    try:
        st = status(d)
        lb = role(st, "lb-1")["addrs"]["http"]
        apis = [role(st, f"api-{i}")["addrs"]["http"] for i in (1, 2, 3)]
        AUTH.clear()
        AUTH.update(authn.admin_headers(STRATA, d, lb))

        print(f"==> {mode}: coherence, {args.rounds:,} PUT-then-GET rounds", flush=True)
        r["coherence"] = coherence(apis, ids[0], args.rounds, args.rounds_budget)
        print(f"    {r['coherence']}", flush=True)

        urls = os.path.join(tmp, "urls.txt")
        rng = random.Random(12)
        with open(urls, "w") as f:
            for _ in range(50_000):
                f.write(f"http://{lb}/users/{rng.choice(hot)}\n")
        print(f"==> {mode}: warm-up, {args.warm:,} requests closed-loop", flush=True)
        oha(oha_bin, "-n", str(args.warm), "-c", "16", "--urls-from-file", urls)
        print(f"==> {mode}: reads only, {args.rate} req/s for {args.duration} s (open loop)", flush=True)
        r["reads"] = oha(oha_bin, "-z", f"{args.duration}s", "-q", str(args.rate), "-c", "64",
                         "--latency-correction", "--urls-from-file", urls)
        print(f"    {json.dumps(r['reads'], default=str)}", flush=True)

        print(f"==> {mode}: reads with {args.write_rate} PUT/s meanwhile", flush=True)
        stop = threading.Event()
        written = {}
        t = threading.Thread(target=lambda: written.update(
            n=writer(apis[0], hot, args.write_rate, args.duration + 5, stop)))
        t.start()
        r["reads_with_writes"] = oha(oha_bin, "-z", f"{args.duration}s", "-q", str(args.rate),
                                     "-c", "64", "--latency-correction", "--urls-from-file", urls)
        stop.set()
        t.join()
        r["reads_with_writes"]["writes"] = written.get("n", 0)
        print(f"    {json.dumps(r['reads_with_writes'], default=str)}", flush=True)

        print(f"==> {mode}: per-read cost, {args.single:,} GETs of one user, one at a time, to api-2", flush=True)
        one = f"http://{apis[1]}/users/{hot[0]}"
        oha(oha_bin, "-n", "2000", "-c", "1", one)
        r["single"] = oha(oha_bin, "-n", str(args.single), "-c", "1", one)
        print(f"    {json.dumps(r['single'], default=str)}", flush=True)
    finally:
        strata("down", "--dir", d, check=False)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--hot", type=int, default=1_000, help="users the latency loads read")
    ap.add_argument("--rounds", type=int, default=10_000)
    ap.add_argument("--rounds-budget", type=int, default=600, help="seconds, per mode")
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--write-rate", type=int, default=100)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--warm", type=int, default=20_000)
    ap.add_argument("--single", type=int, default=20_000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    if not os.path.exists(STRATA):
        sys.exit(f"{STRATA} is missing: cargo build --release -p strata")
    oha_bin = oha_path()
    tmp = tempfile.mkdtemp(prefix="strata-coherence-bench-")
    d = os.path.join(tmp, "deploy")
    os.makedirs(os.path.join(d, "data"))
    print(f"==> seeding {args.users:,} users", flush=True)
    subprocess.run([STRATA, "seed", "--users", str(args.users), "--data", os.path.join(d, "data")],
                   check=True, capture_output=True)
    import sqlite3
    db = sqlite3.connect(os.path.join(d, "data", "strata.db"))
    ids = [row[0] for row in db.execute("SELECT id FROM users ORDER BY id")]
    db.close()
    rng = random.Random(12)
    rng.shuffle(ids)
    hot = ids[1:1 + args.hot]
    results = {"commit": commit(), "dirty": dirty(), "users": len(ids), "hot": len(hot),
               "rounds": args.rounds, "rate": args.rate, "write_rate": args.write_rate,
               "duration_s": args.duration, "cpus": os.cpu_count(), "modes": {}}
    for mode, key in (("ttl", "ttl"), ("watch", "watch")):
        results["modes"][mode] = run_mode(mode, key, args, d, tmp, ids, hot, oha_bin)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(args.out, f"cache-coherence-{results['commit']}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    report(results)
    print(f"raw: {path}")
    shutil.rmtree(tmp, ignore_errors=True)


def report(res):
    m = res["modes"]
    print()
    print("| L1 coherence | stale reads after a PUT through another server | reads only p50 / p99 ms | with writes p50 / p99 ms | one at a time: mean / p50 ms |")
    print("|---|---:|---:|---:|---:|")
    for mode, r in m.items():
        c, a, b, s = r["coherence"], r["reads"], r["reads_with_writes"], r["single"]
        print(f"| {mode} | {c['stale']:,} of {c['reads']:,} | {a['p50']:.3f} / {a['p99']:.3f} "
              f"| {b['p50']:.3f} / {b['p99']:.3f} | {s['mean_ms']:.3f} / {s['p50']:.3f} |")
    if "ttl" in m and "watch" in m:
        cost = (m["watch"]["single"]["mean_ms"] - m["ttl"]["single"]["mean_ms"]) * 1000
        print(f"\nper-read cost of the check (mean, one at a time): {cost:+.1f} µs")


if __name__ == "__main__":
    main()
