#!/usr/bin/env python3
"""The cost of tracing on the request path: the balancer and an API server at trace sampling
0 (no trace recorded; ids still made and passed on), 1 % and 100 %, side by side in one run.

    python3 bench/tracing.py [--seconds 10] [--rounds 3] [--connections 32]

One SQLite database is seeded with 1,000 users by `strata seed`. For each sampling rate a fresh
`strata serve` on it (the API server with its SQLite database and read cache, stage 1) and a
`strata lb` in front of it are started with `--trace-sample RATE`, both under `taskset -c 0`; the load generator, oha, runs under `taskset -c 1` and asks for the
users (`GET /users/ID`, the id drawn per request from the 1,000 — oha's
`--rand-regex-url`), closed loop with --connections connections for --seconds:

  api   oha → API server (the API's own span and its cache and data spans)
  lb    oha → balancer → API server (the balancer's span too, and `traceparent` between them)

The rates run interleaved, --rounds times; medians of requests/s are reported with the ratio
to sampling 0, and the CPU per request of the two processes (utime + stime from /proc over the
window, divided by requests answered). Target: at 1 %, at most 5 % fewer requests/s than at 0.

The raw result goes to bench/results/tracing-COMMIT-TIME.json with an SVG bar chart beside it.
Loopback only, free ports, every run bounded in time; every process started here is stopped at
the end, also on error.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RESULTS, ROOT, STRATA, TARGET, git, require_clean_tree, say  # noqa: E402

OHA = os.environ.get("OHA") or os.path.join(TARGET, "bench-tools", "bin", "oha")
RATES = [("off", "0"), ("1%", "0.01"), ("100%", "1")]
USERS = 1000

procs = []


def spawn(cmd, log):
    p = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.PIPE,
                         stderr=open(log, "ab"), cwd=ROOT, start_new_session=True)
    procs.append(p)
    line = p.stdout.readline().decode()
    try:
        ready = json.loads(line)
    except json.JSONDecodeError:
        stop_all()
        sys.exit(f"{cmd[0]} did not start: {line!r}; see {log}")
    return p, ready["addrs"]


def stop_all():
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    procs.clear()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def seed(data):
    """Loads USERS users into `data` with `strata seed` and returns their ids."""
    import sqlite3
    say(f"seeding {USERS} users")
    subprocess.run([STRATA, "seed", "--users", str(USERS), "--data", data], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = sqlite3.connect(os.path.join(data, "strata.db"))
    ids = [row[0] for row in db.execute("SELECT id FROM users ORDER BY id")]
    db.close()
    return ids


def oha(url_regex, seconds, connections):
    out = subprocess.run(
        ["taskset", "-c", "1", OHA, "--no-tui", "--output-format", "json", "-z", f"{seconds}s",
         "-c", str(connections), "--rand-regex-url", url_regex],
        capture_output=True, text=True, timeout=seconds + 60)
    doc = json.loads(out.stdout)
    codes = doc.get("statusCodeDistribution", {})
    return {
        "rps": doc["summary"]["requestsPerSec"],
        "ok": codes.get("200", 0),
        "other": sum(v for k, v in codes.items() if k != "200"),
        "errors": sum(doc.get("errorDistribution", {}).values()),
        "p50_ms": (doc["latencyPercentiles"]["p50"] or 0) * 1000,
        "p99_ms": (doc["latencyPercentiles"]["p99"] or 0) * 1000,
    }


def measure(work, rate, seconds, connections, ids):
    data = os.path.join(work, "data")  # one database, seeded once, read by every rate
    log = os.path.join(work, "roles.log")
    if ids is None:
        ids = seed(data)
    api_p, api_addrs = spawn([STRATA, "serve", "--addr", "127.0.0.1:0", "--data", data,
                              "--trace-sample", rate], log)
    api = api_addrs["http"]
    lb_p, lb_addrs = spawn([STRATA, "lb", "--listen", "127.0.0.1:0", "--backend",
                            f"api-1={api}", "--trace-sample", rate, "--workers", "1"], log)
    lb = lb_addrs["http"]
    pattern = "(" + "|".join(str(i) for i in ids) + ")"
    result = {}
    for path, target in (("api", api), ("lb", lb)):
        oha(f"http://{target}/users/{pattern}", 2, connections)  # warm: caches, connections
        before = cpu_seconds(api_p.pid) + cpu_seconds(lb_p.pid)
        r = oha(f"http://{target}/users/{pattern}", seconds, connections)
        cpu = cpu_seconds(api_p.pid) + cpu_seconds(lb_p.pid) - before
        r["cpu_us_per_request"] = cpu * 1e6 / max(1, r["ok"] + r["other"])
        result[path] = r
    stop_all()
    return result, ids


def plot(path, med, title):
    w, h, left, top, bar = 640, 300, 80, 40, 36
    paths = ["api", "lb"]
    peak = max(med[p][r] for p in paths for r, _ in RATES) or 1
    colours = {"off": "#888", "1%": "#4a90d9", "100%": "#d9534f"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for pi, p in enumerate(paths):
        x0 = left + pi * 260
        parts.append(f'<text x="{x0 + 60}" y="{h - 10}" text-anchor="middle">{p}</text>')
        for ri, (r, _) in enumerate(RATES):
            v = med[p][r]
            bh = (h - top - 40) * v / peak
            x = x0 + ri * (bar + 8)
            parts.append(f'<rect x="{x}" y="{h - 30 - bh:.0f}" width="{bar}" height="{bh:.0f}" '
                         f'fill="{colours[r]}"/>')
            parts.append(f'<text x="{x + bar / 2}" y="{h - 34 - bh:.0f}" text-anchor="middle" '
                         f'font-size="10">{v:,.0f}</text>')
            parts.append(f'<text x="{x + bar / 2}" y="{h - 18}" text-anchor="middle" '
                         f'font-size="10">{r}</text>')
    parts.append(f'<text x="10" y="{top}" font-size="10">requests/s</text></svg>')
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--allow-dirty", action="store_true")
    args = ap.parse_args()
    if not (1 <= args.seconds <= 120 and 1 <= args.rounds <= 10):
        sys.exit("--seconds must be 1..120 and --rounds 1..10")
    require_clean_tree(args.allow_dirty)
    for tool in (STRATA, OHA):
        if not os.path.exists(tool):
            sys.exit(f"{tool} is missing: build strata with `cargo build --release -p strata`; "
                     "oha is installed by `cargo install oha --root target/bench-tools`")
    if not shutil.which("taskset"):
        sys.exit("taskset is missing (Debian: util-linux)")
    commit = git("rev-parse", "--short=12", "HEAD")
    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(1)))
    work = tempfile.mkdtemp(prefix="strata-tracing-")
    rounds = []
    ids = None
    try:
        for n in range(args.rounds):
            load = os.getloadavg()[0]
            this = {"load_before": load}
            for name, rate in RATES:
                say(f"round {n + 1}/{args.rounds}: sampling {name}")
                this[name], ids = measure(work, rate, args.seconds, args.connections, ids)
                say(f"  api {this[name]['api']['rps']:,.0f}/s, lb {this[name]['lb']['rps']:,.0f}/s")
            rounds.append(this)
    finally:
        stop_all()
    med = {p: {r: statistics.median(x[r][p]["rps"] for x in rounds) for r, _ in RATES}
           for p in ("api", "lb")}
    cpu = {p: {r: statistics.median(x[r][p]["cpu_us_per_request"] for x in rounds)
               for r, _ in RATES} for p in ("api", "lb")}
    print(f"{'path':<5} {'sampling':<9} {'requests/s':>11} {'vs off':>7} {'CPU µs/req':>11}")
    for p in ("api", "lb"):
        for r, _ in RATES:
            print(f"{p:<5} {r:<9} {med[p][r]:>11,.0f} {med[p][r] / med[p]['off']:>7.3f} "
                  f"{cpu[p][r]:>11.1f}")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"tracing-{commit}-{stamp}"
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name + ".json"), "w") as f:
        json.dump({"commit": commit, "args": vars(args), "rates": dict(RATES), "rounds": rounds,
                   "median_rps": med, "median_cpu_us_per_request": cpu,
                   "cores": os.cpu_count()}, f, indent=1)
    plot(os.path.join(RESULTS, name + ".svg"), med,
         f"requests/s by trace sampling (commit {commit})")
    print(f"raw result: bench/results/{name}.json (+ .svg)", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
