#!/usr/bin/env python3
"""Cache hit ratios on a fresh request stream, side by side with ideal caches on the same trace.

    cargo build --release -p strata && python3 bench/cache_trace.py \
        [--modes off,redis] [--workload zipf --exponent 0.99] [--checkpoints 1000000,10000000]

One deployment directory (temporary) seeded with --users users (SQLite), run behind 3 API
servers per mode (`off`: every read goes to the database; `in-process`: L1 only; `redis` /
`memcached`: L1 over one shared L2 node of --l2-mib MiB). L1 is bounded to hold --l1-share of
the users per server.

The requests are one stream drawn fresh from the workload (`strata cache-load`: Zipf(s) over
ALL users, uniform, or a Zipf hot set that moves), seeded, so the exact trace is regenerated
for the offline replay instead of stored. Request i goes to API server i mod 3 (directly, not
through the balancer, so each server's share of the trace is known). For each checkpoint C the
stream is sent closed loop up to C (warm-up), then requests [C, C + --window) open loop at
--rate req/s (the measured window): hit ratios per level and database reads come from the API
servers' /metrics over that window. Then the whole trace is replayed offline through Belady's
MIN, perfect LFU and LRU with the capacity of the shared cache (whole trace) and of one L1 (each
server's share), and first touches (misses no cache avoids) are counted.

Loopback only; every load is bounded in count and time. Writes bench/results/cache-trace-<UTC>-<commit>.{json,svg}.
"""

import argparse
import http.client
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import shutil

import authn  # noqa: E402  (bench/authn.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.environ.get("STRATA_BIN") or os.path.join(ROOT, "target", "release", "strata")


def strata(*args, check=True, capture=True):
    return subprocess.run([STRATA, *args], capture_output=capture, text=True, check=check,
                          env={**os.environ, **authn.LONG_TOKENS})


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


def level(after, before, lvl):
    h = delta(after, before, f'strata_cache_requests_total{{level="{lvl}",result="hit"}}')
    m = delta(after, before, f'strata_cache_requests_total{{level="{lvl}",result="miss"}}')
    e = delta(after, before, f'strata_cache_requests_total{{level="{lvl}",result="error"}}')
    return {"hits": h, "misses": m, "errors": e, "ratio": h / (h + m + e) if h + m + e else None}


def trace_args(a):
    return ["--workload", a.workload, "--exponent", str(a.exponent), "--period", str(a.period),
            "--shift", str(a.shift), "--seed", str(a.seed)]


def load(a, ids, apis, start, count, rate=None):
    cmd = [STRATA, "cache-load", "run", *trace_args(a), "--ids", ids, "--targets", ",".join(apis),
           "--from", str(start), "--count", str(count)]
    cmd += ["--rate", str(rate)] if rate else ["--concurrency", str(a.concurrency)]
    # Progress lines (stderr) pass straight through.
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout)


def git_commit():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--modes", default="off,redis")
    ap.add_argument("--workload", default="zipf", choices=["zipf", "uniform", "moving"])
    ap.add_argument("--exponent", type=float, default=0.99)
    ap.add_argument("--period", type=int, default=1_000_000, help="moving: requests between moves")
    ap.add_argument("--shift", type=int, default=50_000, help="moving: users moved per move")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--checkpoints", default="1000000,10000000",
                    help="stream positions after which a window is measured")
    ap.add_argument("--window", type=int, default=40_000, help="measured requests per checkpoint")
    ap.add_argument("--rate", type=int, default=2000, help="open-loop rate of the measured windows")
    ap.add_argument("--concurrency", type=int, default=48, help="closed-loop warm-up workers")
    ap.add_argument("--l1-share", type=float, default=0.10, help="share of users one L1 holds")
    ap.add_argument("--l2-mib", type=int, default=2048)
    ap.add_argument("--l1-ttl-ms", type=int, help="[cache] l1_ttl_ms (default: the topology's)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the API servers")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    for kv in a.env:
        k, _, v = kv.partition("=")
        os.environ[k] = v
    commit = git_commit()
    checkpoints = [int(x) for x in a.checkpoints.split(",")]
    tmp = tempfile.mkdtemp(prefix="strata-cache-trace-")
    d = os.path.join(tmp, "deploy")
    os.makedirs(os.path.join(d, "data"))
    print(f"==> seeding {a.users:,} users", flush=True)
    subprocess.run([STRATA, "seed", "--users", str(a.users), "--data", os.path.join(d, "data")],
                   check=True, capture_output=True)
    db = sqlite3.connect(os.path.join(d, "data", "strata.db"))
    ids = [row[0] for row in db.execute("SELECT id FROM users ORDER BY id")]
    body_len = db.execute("SELECT avg(length(profile)) FROM users").fetchone()[0]
    db.close()
    random.Random(12).shuffle(ids)  # popularity rank independent of creation order
    ids_path = os.path.join(tmp, "ids.txt")
    with open(ids_path, "w") as f:
        f.write("\n".join(str(i) for i in ids) + "\n")
    weight = 96 + len("user:") + 19 + body_len + 20
    l1_entries = int(a.l1_share * len(ids))
    l1_mib = max(1, math.ceil(l1_entries * weight / 2**20))
    print(f"==> L1 bound {l1_mib} MiB per API server (~{l1_entries:,} users of ~{weight:.0f} bytes)")
    ttl = f"l1_ttl_ms = {a.l1_ttl_ms}\n" if a.l1_ttl_ms else ""
    tables = {"off": '[cache]\nengine = "off"\n',
              "in-process": f"[cache]\nl1_mib = {l1_mib}\n{ttl}",
              "redis": f'[cache]\nengine = "redis"\nnodes = 1\nmax_mib = {a.l2_mib}\nl1_mib = {l1_mib}\n{ttl}',
              "memcached": f'[cache]\nengine = "memcached"\nnodes = 1\nmax_mib = {a.l2_mib}\nl1_mib = {l1_mib}\n{ttl}'}
    res = {"commit": commit, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "users": len(ids), "l1_mib": l1_mib, "l1_entries": l1_entries, "l2_mib": a.l2_mib,
           "label": a.label, "env": a.env, "args": vars(a), "modes": {}}
    for mode in a.modes.split(","):
        topo = os.path.join(tmp, f"{mode}.toml")
        with open(topo, "w") as f:
            f.write(f'name = "cache-trace-{mode}"\n[lb]\n[api]\ncount = 3\n{tables[mode]}')
        print(f"==> {mode}: strata up", flush=True)
        out = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
        if out.returncode != 0:
            print(out.stdout, out.stderr)
            sys.exit(1)
        windows = []
        try:
            st = status(d)
            apis = [role(st, f"api-{i}")["addrs"]["http"] for i in (1, 2, 3)]
            pos = 0
            for cp in (checkpoints if mode != "off" else checkpoints[:1]):
                if mode != "off" and cp > pos:
                    print(f"==> {mode}: warm-up, requests {pos:,}..{cp:,} closed loop", flush=True)
                    t = time.time()
                    warm = load(a, ids_path, apis, pos, cp - pos)
                    print(f"    {warm['rps']:.0f} req/s, {warm['failed']} failed, {time.time() - t:.0f} s", flush=True)
                before = metrics(apis)
                print(f"==> {mode}: measured window {cp:,}..{cp + a.window:,} at {a.rate} req/s", flush=True)
                m = load(a, ids_path, apis, cp, a.window, rate=a.rate)
                after = metrics(apis)
                reqs = m["ok"] + m["failed"]
                loads = delta(after, before, "strata_cache_loads_total")
                w = {"checkpoint": cp, **m, "requests": reqs, "db_loads": loads,
                     "db_reads_per_1000": 1000 * loads / max(reqs, 1),
                     "early_refreshes": delta(after, before, "strata_cache_early_refreshes_total"),
                     "l1": level(after, before, "l1"), "l2": level(after, before, "l2"),
                     "l1_evictions": delta(after, before, 'strata_cache_evictions_total{level="l1"}')}
                print(f"    {json.dumps({k: w[k] for k in ('db_reads_per_1000', 'failed', 'p99_ms')})} "
                      f"L1 {w['l1']['ratio']} L2 {w['l2']['ratio']}", flush=True)
                windows.append(w)
                pos = cp + a.window
        finally:
            strata("down", "--dir", d, check=False)
        res["modes"][mode] = windows
    print("==> offline replay of the same trace (Belady, perfect LFU, LRU)", flush=True)
    wins = ",".join(f"{cp}:{a.window}" for cp in checkpoints)
    sim = subprocess.run([STRATA, "cache-load", "simulate", *trace_args(a), "--users", str(len(ids)),
                          "--windows", wins, "--capacity", f"{len(ids)},{l1_entries}",
                          "--servers", "3", "--server-capacity", str(l1_entries)],
                         capture_output=True, text=True, check=True)
    sys.stderr.write(sim.stderr)
    res["ideal"] = json.loads(sim.stdout)
    os.makedirs(a.out, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join(a.out, f"cache-trace-{stamp}-{commit}")
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1)
    report(res, base + ".svg")
    print(f"raw: {base}.json")
    shutil.rmtree(tmp, ignore_errors=True)


def ideal_rows(res):
    """Per checkpoint: ideal hit ratios of the whole trace at L2 capacity and of one L1."""
    out = {}
    whole = {w["capacity"]: w["windows"] for w in res["ideal"]["whole"]}
    l2 = whole[res["users"]]
    for k, cp in enumerate(c[0] for c in res["ideal"]["windows"]):
        c = l2[k]
        n = max(c["requests"], 1)
        servers = [s["windows"][k] for s in res["ideal"]["per_server"]]
        sn = max(sum(s["requests"] for s in servers), 1)
        out[cp] = {"first_touch_per_1000": 1000 * c["first_touches"] / n,
                   "belady": c["belady_hits"] / n, "lfu": c["lfu_hits"] / n, "lru": c["lru_hits"] / n,
                   "l1_belady": sum(s["belady_hits"] for s in servers) / sn,
                   "l1_lfu": sum(s["lfu_hits"] for s in servers) / sn,
                   "l1_lru": sum(s["lru_hits"] for s in servers) / sn}
    return out


def pct(x):
    return "—" if x is None else f"{100 * x:.1f}%"


def report(res, svg_path):
    ideal = ideal_rows(res)
    off = res["modes"].get("off", [{}])[0].get("db_reads_per_1000") or 1000
    print()
    print("| cache | warm-up | L1 hit | L1 ideal (LFU / MIN) | L2 hit | all levels hit | ideal, L2 capacity (LFU / MIN) | first touches / 1,000 | DB reads / 1,000 | vs no cache | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    bars = []
    for mode, windows in res["modes"].items():
        for w in windows:
            i = ideal[w["checkpoint"]]
            allh = 1 - w["db_reads_per_1000"] / 1000
            fewer = f"{off / w['db_reads_per_1000']:.1f}× fewer" if mode != "off" and w["db_reads_per_1000"] else "—"
            print(f"| {mode} | {w['checkpoint']:,} | {pct(w['l1']['ratio'])} | {pct(i['l1_lfu'])} / {pct(i['l1_belady'])} | "
                  f"{pct(w['l2']['ratio'])} | {pct(allh)} | {pct(i['lfu'])} / {pct(i['belady'])} | "
                  f"{i['first_touch_per_1000']:.0f} | {w['db_reads_per_1000']:.0f} | {fewer} | {w['p99_ms']:.2f} |")
            if mode != "off":
                bars.append((f"{mode} @{w['checkpoint'] / 1e6:g}M", w["db_reads_per_1000"],
                             1000 * (1 - i["lfu"]), i["first_touch_per_1000"]))
    # SVG: DB reads per 1,000 requests (Strata) against perfect LFU's misses and first touches.
    wdt, h, pad = 640, 320, 50
    top = max([b[1] for b in bars] + [b[2] for b in bars] + [1])
    bw = (wdt - 2 * pad) / max(len(bars), 1)
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{wdt}" height="{h}" font-family="sans-serif" font-size="12">',
         f'<text x="{wdt / 2}" y="18" text-anchor="middle" font-size="13">Misses per 1,000 requests, {res["ideal"]["workload"]["shape"]} over {res["users"]:,} users: Strata (blue), perfect LFU (orange), first touches (grey)</text>',
         f'<line x1="{pad}" y1="{h - pad}" x2="{wdt - pad}" y2="{h - pad}" stroke="black"/>']
    for k, (name, strata_v, lfu_v, ft) in enumerate(bars):
        x0 = pad + k * bw + bw * 0.1
        for j, (v, colour) in enumerate([(strata_v, "#2b7bb9"), (lfu_v, "#e08a2c"), (ft, "#999")]):
            bh = (h - 2 * pad - 20) * v / top
            x = x0 + j * bw * 0.27
            p.append(f'<rect x="{x:.0f}" y="{h - pad - bh:.0f}" width="{bw * 0.25:.0f}" height="{bh:.0f}" fill="{colour}"/>')
            p.append(f'<text x="{x + bw * 0.125:.0f}" y="{h - pad - bh - 4:.0f}" text-anchor="middle" font-size="10">{v:.0f}</text>')
        p.append(f'<text x="{x0 + bw * 0.4:.0f}" y="{h - pad + 16:.0f}" text-anchor="middle">{name}</text>')
    p.append("</svg>")
    with open(svg_path, "w") as f:
        f.write("\n".join(p))
    print(f"plot: {svg_path}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--report":
        with open(sys.argv[2]) as f:
            r = json.load(f)
        report(r, sys.argv[2].replace(".json", ".svg"))
    else:
        main()
