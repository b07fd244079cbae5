#!/usr/bin/env python3
"""The live dashboard's own cost: the CPU one open page adds to a deployment under load.

    CARGO_TARGET_DIR=... cargo build --release -p strata
    STRATA_BIN=$CARGO_TARGET_DIR/release/strata python3 bench/dashboard_cost.py \\
        [--rounds 3] [--seconds 30] [--rate 100]

`strata up -d` starts a balancer, 3 API servers, a worker and the dashboard (`[observe]
dashboard = true`); `strata chaos --no-faults` puts a steady open-loop load through the
balancer (--rate authenticated writes/s and as many reads/s, bounded by its duration). The
CPU seconds of every process of the deployment — each role's pid and its descendants (an
engine under a role counts), and the supervisor (its own, not its roles' again) — are read from /proc/PID/stat (utime +
stime) over equal windows of --seconds:

  a  no page open: the dashboard's scrape loop runs (once a second, whatever the number of
     pages), but no client reads `GET /events`;
  b  one page open: one client reads `GET /events` (the stream the page's EventSource
     reads: a snapshot a second) for the whole window.

Each round measures a and b, in the order a b, then b a the next round (and so on), each
window after --settle seconds, so that a drift of the load or of the machine falls on both
alike. The dashboard's cost is (b − a) / a of the deployment's CPU, per round and over all
rounds; the dashboard role's own CPU share in a (its scrape loop, paid with or without a page)
is reported beside it. Target (the issue's): one open page adds < 1 %.

The load generator and the client are not part of the deployment and are not counted; a real
browser's rendering is the browser's cost, not the deployment's. The raw result goes to
bench/results/dashboard-cost-COMMIT-STAMP.json. Loopback only; the load stops after its
duration; the deployment is stopped and deleted at the end, also on error.
"""

import argparse
import datetime
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RESULTS, STRATA, git, require_clean_tree, say  # noqa: E402

TOPOLOGY = """name = "dashboard-cost"
[lb]
[api]
count = 3
[workers]
count = 1
[observe]
dashboard = true
"""
TICK = os.sysconf("SC_CLK_TCK")


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check,
                          timeout=120)


def children_of():
    """Every process's children, from /proc."""
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def own_cpu(pid):
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu(pid, kids, apart=()):
    """A process's CPU seconds and its descendants', leaving out the trees rooted at `apart`
    (the supervisor's children are the roles, counted on their own)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen or (p != pid and p in apart):
            continue
        seen.add(p)
        total += own_cpu(p)
        todo.extend(kids.get(p, []))
    return total


def sample(pids):
    """CPU seconds so far of each named process tree, each process counted once."""
    kids = children_of()
    roots = set(pids.values())
    return {name: tree_cpu(pid, kids, roots) for name, pid in pids.items()}


class Page:
    """One client of the dashboard's `GET /events`, reading every event until stopped."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)
        self.conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise RuntimeError(f"GET /events answered {self.response.status}")
        self.events = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while not self.stopped.is_set():
            try:
                line = self.response.fp.readline(1 << 20)
            except OSError:
                return
            if not line:
                return
            if line.startswith(b"data: "):
                self.events += 1

    def close(self):
        self.stopped.set()
        self.conn.close()
        self.thread.join(timeout=5)
        return self.events


def window(pids, seconds, dashboard, with_page, settle):
    page = Page(dashboard) if with_page else None
    time.sleep(settle)
    before, t0 = sample(pids), time.monotonic()
    time.sleep(seconds)
    after, elapsed = sample(pids), time.monotonic() - t0
    events = page.close() if page else 0
    cpu = {name: round(after[name] - before[name], 3) for name in pids}
    return {"page": with_page, "seconds": round(elapsed, 3), "events": events, "cpu_s": cpu,
            "total_cpu_s": round(sum(cpu.values()), 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30, help="length of each measured window")
    ap.add_argument("--settle", type=int, default=3, help="seconds before each window")
    ap.add_argument("--rate", type=int, default=100, help="writes/s and reads/s (open loop)")
    ap.add_argument("--lead", type=int, default=10, help="seconds of load before measuring")
    ap.add_argument("--allow-dirty", action="store_true")
    args = ap.parse_args()
    if not (1 <= args.rounds <= 20 and 5 <= args.seconds <= 300 and 1 <= args.rate <= 5000):
        sys.exit("--rounds 1..20, --seconds 5..300, --rate 1..5000")
    require_clean_tree(args.allow_dirty)
    if not os.path.exists(STRATA):
        sys.exit(f"no {STRATA}: build first (cargo build --release -p strata), or set STRATA_BIN")
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    work = tempfile.mkdtemp(prefix="strata-dashboard-cost-")
    d = os.path.join(work, "deploy")
    topo = os.path.join(work, "strata.toml")
    with open(topo, "w") as f:
        f.write(TOPOLOGY)
    measured = args.rounds * 2 * (args.seconds + args.settle + 1)
    duration = args.lead + measured + 15
    result = {"commit": commit, "strata": STRATA, "rounds": args.rounds,
              "seconds": args.seconds, "settle": args.settle, "rate": args.rate,
              "load_duration_s": duration, "topology": TOPOLOGY,
              "cpus": os.cpu_count(),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    load = None
    try:
        say("strata up -d (lb, 3 API servers, a worker, the dashboard)")
        up = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
        if up.returncode != 0:
            sys.exit(up.stderr)
        st = json.loads(strata("status", "--dir", d, "--json").stdout)
        pids = {r["name"]: r["pid"] for r in st["roles"] if r.get("pid")}
        pids["supervisor"] = st["supervisor"]["pid"]
        dashboard = next(r["addrs"]["http"] for r in st["roles"] if r["kind"] == "dashboard")
        result["roles"] = sorted(pids)
        say(f"open-loop load: {args.rate} writes/s + {args.rate} reads/s for {duration} s")
        verdict_path = os.path.join(work, "verdict.json")
        load = subprocess.Popen([STRATA, "chaos", "--dir", d, "--no-faults", "--json",
                                 "--out", verdict_path, "--duration-secs", str(duration),
                                 "--rate", str(args.rate)], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(work, "chaos.log"), "wb"))
        time.sleep(args.lead)
        rounds = []
        for i in range(args.rounds):
            order = [False, True] if i % 2 == 0 else [True, False]
            got = {}
            for with_page in order:
                say(f"round {i + 1}/{args.rounds}: {'one page open' if with_page else 'no page'}"
                    f" for {args.seconds} s")
                got["b" if with_page else "a"] = window(pids, args.seconds, dashboard,
                                                       with_page, args.settle)
            a, b = got["a"]["total_cpu_s"], got["b"]["total_cpu_s"]
            got["extra_share"] = round((b - a) / a, 5) if a else None
            got["dashboard_share_a"] = round(got["a"]["cpu_s"]["dashboard-1"] / a, 5) if a else None
            rounds.append(got)
            say(f"  a {a:.2f} CPU s, b {b:.2f} CPU s: {100 * (b - a) / a:+.2f} %; "
                f"dashboard-1 {got['a']['cpu_s']['dashboard-1']:.2f} / "
                f"{got['b']['cpu_s']['dashboard-1']:.2f} CPU s; {got['b']['events']} events")
        result["rounds_measured"] = rounds
        total_a = sum(r["a"]["total_cpu_s"] for r in rounds)
        total_b = sum(r["b"]["total_cpu_s"] for r in rounds)
        dash_a = sum(r["a"]["cpu_s"]["dashboard-1"] for r in rounds)
        dash_b = sum(r["b"]["cpu_s"]["dashboard-1"] for r in rounds)
        result["summary"] = {
            "deployment_cpu_s_a": round(total_a, 3), "deployment_cpu_s_b": round(total_b, 3),
            "extra_share_pooled": round((total_b - total_a) / total_a, 5),
            "extra_share_median": statistics.median(r["extra_share"] for r in rounds),
            "dashboard_cpu_s_a": round(dash_a, 3), "dashboard_cpu_s_b": round(dash_b, 3),
            "dashboard_extra_share": round((dash_b - dash_a) / total_a, 5),
            "dashboard_share_a": round(dash_a / total_a, 5),
        }
        load.wait(timeout=duration + 120)
        if os.path.exists(verdict_path):
            with open(verdict_path) as f:
                result["load_verdict"] = json.load(f)
    finally:
        if load and load.poll() is None:
            load.terminate()
            load.wait(timeout=30)
        strata("down", "--dir", d, check=False)
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = os.path.join(RESULTS, f"dashboard-cost-{commit}-{stamp}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    s = result["summary"]
    print(json.dumps(s, indent=2))
    say(f"one open page: {100 * s['extra_share_pooled']:+.2f} % of the deployment's CPU "
        f"(median of rounds {100 * s['extra_share_median']:+.2f} %); the dashboard role's own "
        f"share without a page {100 * s['dashboard_share_a']:.2f} %; raw result {out}")


if __name__ == "__main__":
    main()
