#!/usr/bin/env python3
"""Every origin down behind the edges: what clients of cached profiles see, through `strata up`.

    cargo build --release -p strata
    python3 bench/edge_origin_down.py [--users 10000] [--hot 2000] [--rate 500] \\
        [--before 10] [--outage 20] [--after 10] [--fault kill|freeze|both]

One deployment (temporary): 2 edges and a shield (`[edge] count = 2, shield = true`, profiles kept
`profile_ttl_secs = --ttl` (5) and served stale `profile_stale_if_error_secs = --stale-if-error`
(86400) while the origin fails; each edge waits `origin_timeout_ms = --origin-timeout-ms` (10000)
for its origin's answer head, and `stale_grace_ms = --stale-grace-ms` (1000) for a revalidation of
a copy stale-if-error allows before that copy is the answer), a balancer and 3 API servers on
SQLite seeded with --users users.

1. **Warm**: the --hot most popular users (a fixed shuffle of the ids: popularity independent of
   creation order) are read once through each edge, so both edges and the shield hold them.
2. **Load**: open loop at --rate requests/s (`strata cache-load run --rate`: latency from each
   request's scheduled time, HDR histogram), profile reads drawn fresh from Zipf(0.99) over the
   hot users, request i to edge i mod 2, every request naming the service `strata.test`; in three
   windows back to back: --before seconds with the origin up, --outage seconds with it down,
   --after seconds once it is back. A request fails if it is not a 200 (or 404) within
   --timeout-ms.
3. **The outage**: the deployment's supervisor is frozen (SIGSTOP: nothing is restarted), then
   every origin — the balancer and all API servers — is `kill`ed (SIGKILL: connections refused),
   or `freeze`d (SIGSTOP: connections accepted, never answered, so the edge's 10 s origin header
   timeout runs out before it knows), or `both` (frozen, then the balancer killed half-way).
   Profiles go stale --ttl seconds into the outage at the latest, and are then served under
   stale-if-error. After the window everything is thawed and the supervisor restarts what died.

Reported per window: requests, failed, p50/p99/p99.9/max latency, and from the edges' /metrics the
stale-if-error answers (`strata_edge_stale_served_total{reason="stale-if-error"}`, and
`reason="stale-grace"`: the origin slower than the grace) and the shield's origin fetches. The target: 0 failed requests during the outage (every object asked for
is cached and within its stale-if-error window).

Raw results: bench/results/edge-origin-down-<commit>-<stamp>.json. Everything listens on
127.0.0.1; every load is bounded in count and time and stops by itself.
"""
import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from edge_tiers import SERVICE, addr, counters, request  # noqa: E402

STALE_IF_ERROR = 'strata_edge_stale_served_total{reason="stale-if-error"}'
STALE_GRACE = 'strata_edge_stale_served_total{reason="stale-grace"}'
EDGES = ("edge-shield", "edge-1", "edge-2")


def strata(*args, check=True):
    return subprocess.run([benchlib.STRATA, *args], capture_output=True, text=True, check=check)


def status(d):
    return json.loads(strata("status", "--dir", d, "--json").stdout)


def role(st, name):
    return next(r for r in st["roles"] if r["name"] == name)


def signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def snapshot(admins):
    return {n: counters(x) for n, x in admins.items()}


def deltas(before, after):
    def d(n, key):
        return after[n].get(key, 0.0) - before[n].get(key, 0.0)
    return {
        "stale_if_error": {n: d(n, STALE_IF_ERROR) for n in EDGES},
        "stale_grace": {n: d(n, STALE_GRACE) for n in EDGES},
        "shield_origin_fetches": d("edge-shield", "strata_edge_origin_fetches_total"),
        "edge_fetches_from_shield": d("edge-1", "strata_edge_origin_fetches_total")
        + d("edge-2", "strata_edge_origin_fetches_total"),
    }


def load(a, ids_path, edges, start, seconds):
    """Open-loop load for `seconds`; returns `strata cache-load run`'s JSON."""
    count = int(a.rate * seconds)
    out = subprocess.run([benchlib.STRATA, "cache-load", "run", "--workload", "zipf", "--exponent", "0.99",
                          "--seed", "1", "--ids", ids_path, "--targets", ",".join(edges), "--host", SERVICE,
                          "--from", str(start), "--count", str(count), "--rate", str(a.rate),
                          "--timeout-ms", str(a.timeout_ms)],
                         stdout=subprocess.PIPE, text=True, check=True, timeout=seconds + 120)
    return json.loads(out.stdout), start + count


def show(name, r, extra):
    sie = sum(extra["stale_if_error"].values())
    grace = sum(extra["stale_grace"].values())
    print(f"    {name:7} {r['count']:>8,} requests, {r['failed']:,} failed; p50 {r['p50_ms']:.2f} ms, "
          f"p99 {r['p99_ms']:.2f} ms, p99.9 {r['p999_ms']:.2f} ms, max {r['max_ms']:.2f} ms; "
          f"{sie:,.0f} answered stale-if-error, {grace:,.0f} after the grace, the shield fetched {extra['shield_origin_fetches']:,.0f} "
          f"from the origin", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--hot", type=int, default=2_000, help="users warmed and then asked for")
    ap.add_argument("--rate", type=int, default=500, help="requests/s, open loop")
    ap.add_argument("--before", type=float, default=10.0, help="seconds of load before the outage")
    ap.add_argument("--outage", type=float, default=20.0, help="seconds every origin is down")
    ap.add_argument("--after", type=float, default=10.0, help="seconds of load once it is back")
    ap.add_argument("--fault", choices=("kill", "freeze", "both"), default="kill")
    ap.add_argument("--ttl", type=int, default=5, help="profile_ttl_secs")
    ap.add_argument("--stale-if-error", type=int, default=86_400, help="profile_stale_if_error_secs")
    ap.add_argument("--timeout-ms", type=int, default=30_000, help="a slower answer counts as failed")
    ap.add_argument("--origin-timeout-ms", type=int, default=10_000,
                    help="[edge] origin_timeout_ms: how long an edge waits for its origin's answer head")
    ap.add_argument("--stale-grace-ms", type=int, default=1_000,
                    help="[edge] stale_grace_ms: how long a revalidation may keep a stale-if-error copy's request")
    ap.add_argument("--allow-dirty", action="store_true")
    ap.add_argument("--out", default=benchlib.RESULTS)
    a = ap.parse_args()
    if not 1 <= a.rate <= 10_000 or a.outage > 300 or a.before > 300 or a.after > 300:
        sys.exit("--rate must be 1 to 10000 and each window at most 300 s")
    if a.outage <= a.ttl:
        sys.exit("--outage must be longer than --ttl, or no profile goes stale during it")
    benchlib.require_clean_tree(a.allow_dirty)
    commit = benchlib.git("rev-parse", "--short=12", "HEAD") or "unknown"
    tmp = tempfile.mkdtemp(prefix="strata-edge-origin-down-")
    os.chmod(tmp, 0o755)
    d = os.path.join(tmp, "deploy")
    res = {"commit": commit, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "args": vars(a)}
    frozen, supervisor = [], None
    try:
        benchlib.say(f"seeding {a.users:,} users")
        subprocess.run([benchlib.STRATA, "seed", "--users", str(a.users), "--data", os.path.join(d, "data")],
                       check=True, stdout=subprocess.DEVNULL)
        db = sqlite3.connect(os.path.join(d, "data", "strata.db"))
        ids = [row[0] for row in db.execute("SELECT id FROM users ORDER BY id")]
        db.close()
        random.Random(12).shuffle(ids)
        hot = ids[:a.hot]
        ids_path = os.path.join(tmp, "hot-ids.txt")
        with open(ids_path, "w") as f:
            f.write("\n".join(str(i) for i in hot) + "\n")
        topo = os.path.join(tmp, "edge.toml")
        with open(topo, "w") as f:
            f.write(f'name = "edge-origin-down"\n[edge]\ncount = 2\nshield = true\nmemory_mib = 256\n'
                    f'disk_mib = 0\nprofile_ttl_secs = {a.ttl}\n'
                    f'profile_stale_if_error_secs = {a.stale_if_error}\n'
                    f'origin_timeout_ms = {a.origin_timeout_ms}\nstale_grace_ms = {a.stale_grace_ms}\n'
                    f'[lb]\n[api]\ncount = 3\n')
        benchlib.say("strata up: 2 edges, a shield, a balancer, 3 API servers")
        strata("up", "-d", "--port", "0", "-f", topo, "--dir", d)
        st = status(d)
        edges = [addr(st, "edge-1", "http"), addr(st, "edge-2", "http")]
        admins = {n: addr(st, n, "admin") for n in EDGES}
        with open(os.path.join(d, "state.json")) as f:
            supervisor = json.load(f)["supervisor_pid"]
        origin = ["lb-1"] + [r["name"] for r in st["roles"] if r["kind"] == "api"]
        pids = {n: role(st, n)["pid"] for n in origin}

        benchlib.say(f"warming {len(hot):,} profiles on both edges")
        started = time.time()

        def warm(uid):
            return sum(request(e, "GET", f"/users/{uid}", headers={"host": SERVICE})[0] != 200 for e in edges)
        with ThreadPoolExecutor(16) as pool:
            cold = sum(pool.map(warm, hot))
        res["warm"] = {"profiles": len(hot), "not_200": cold, "seconds": time.time() - started}
        if cold:
            print(f"    {cold} warming reads were not 200", flush=True)

        position = 0
        windows = {}
        benchlib.say(f"before: {a.before:.0f} s at {a.rate}/s, the origin up")
        c0 = snapshot(admins)
        r, position = load(a, ids_path, edges, position, a.before)
        windows["before"] = {"load": r, **deltas(c0, snapshot(admins))}
        show("before", r, windows["before"])

        benchlib.say(f"outage: every origin ({', '.join(origin)}) {a.fault} for {a.outage:.0f} s, "
                     f"the supervisor frozen")
        c0 = snapshot(admins)
        signal_pid(supervisor, signal.SIGSTOP)
        fault_at = time.time()
        timer = None
        if a.fault == "kill":
            for n in origin:
                signal_pid(pids[n], signal.SIGKILL)
        else:
            for n in origin:
                signal_pid(pids[n], signal.SIGSTOP)
                frozen.append(pids[n])
            if a.fault == "both":
                timer = threading.Timer(a.outage / 2, signal_pid, (pids["lb-1"], signal.SIGKILL))
                timer.start()
        r, position = load(a, ids_path, edges, position, a.outage)
        if timer:
            timer.join()
        for pid in frozen:
            signal_pid(pid, signal.SIGCONT)
        frozen.clear()
        signal_pid(supervisor, signal.SIGCONT)
        windows["outage"] = {"load": r, "fault": a.fault, "down_seconds": time.time() - fault_at,
                             **deltas(c0, snapshot(admins))}
        show("outage", r, windows["outage"])

        benchlib.say("the origin back: waiting for every role to be healthy")
        deadline = time.time() + 120
        while True:
            st = status(d)
            if all(role(st, n)["healthy"] for n in origin):
                break
            if time.time() > deadline:
                sys.exit("the origin did not come back within 120 s")
            time.sleep(0.2)
        windows["recovery_seconds"] = time.time() - fault_at - windows["outage"]["down_seconds"]
        benchlib.say(f"after: {a.after:.0f} s at {a.rate}/s")
        c0 = snapshot(admins)
        r, position = load(a, ids_path, edges, position, a.after)
        windows["after"] = {"load": r, **deltas(c0, snapshot(admins))}
        show("after", r, windows["after"])
        res["windows"] = windows
        failed = windows["outage"]["load"]["failed"]
        print(f"verdict: {failed:,} failed requests for cached profiles while every origin was down "
              f"({'as required' if failed == 0 else 'the target is 0'}); p99 "
              f"{windows['before']['load']['p99_ms']:.2f} ms before, "
              f"{windows['outage']['load']['p99_ms']:.2f} ms during", flush=True)
    finally:
        for pid in frozen:
            signal_pid(pid, signal.SIGCONT)
        if supervisor:
            signal_pid(supervisor, signal.SIGCONT)
        strata("down", "--dir", d, check=False)
        path = benchlib.write_result(a.out, "edge-origin-down", commit, res)
        print(f"raw: {path}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
