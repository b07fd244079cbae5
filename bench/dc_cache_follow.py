#!/usr/bin/env python3
"""Per-data-centre caches that follow their own replica: how long after a write acknowledged in
us-east does us-west — whose Redis and in-process caches hold the old copy — serve it, and what
the change log costs a write.

    python3 bench/dc_cache_follow.py --strata target/release/strata [--users 200] [--writes 400]
        [--rate 20] [--writers 32] [--one-way-ms 30] [--commit quorum|async] [--zipf 1.1]

`strata up` runs two data centres, us-east (the PostgreSQL primary) and us-west (a replica),
[[link]] --one-way-ms apart, each with one balancer, one API server and its own Redis
([cache] engine = "redis", nodes = 1). --users users are created through us-east, then each is
read twice through us-west's balancer, so us-west's L2 and L1 hold every one.

Three phases of --writes writes each, open-loop at --rate/s (Poisson arrivals: each write has
its intended start time, and its latency counts from then): a PUT through us-east's balancer of a user drawn per write
from a Zipf(--zipf) distribution, with a new first name; --writers threads share the schedule. For each acknowledged write a watcher
reads the user through us-west's balancer (no read-after token: what its caches serve) every
2 ms until the answer's ETag version reaches the acknowledged one — the time from the write's
acknowledgement to that answer is its convergence — or 2 s pass (not converged).

  1. following: as deployed;
  2. not logged: the change-log trigger disabled on the primary (ALTER TABLE users DISABLE
     TRIGGER users_logged), so no API server hears of the writes: what us-west serves without
     following, and what a write costs without the log row;
  3. following again: the trigger enabled, to see that the first phase is not an order effect.

Only every 10th write of phase 2 is watched: none converges, and watchers polling for their
whole 2 s would load the machine. What the log costs a write is measured apart, with nothing
watched, at --cost-rate/s: with the trigger, without it, and with it again.

Raw results: bench/results/dc-cache-follow-<commit>-<stamp>.json (every sample) and a CDF plot
bench/results/dc-cache-follow-<commit>-<stamp>.svg. Everything listens on loopback; every loop
is bounded.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from authn import LONG_TOKENS, admin_headers  # noqa: E402
from benchlib import RESULTS, STRATA, build_release, commit_label, psql, say, write_result  # noqa: E402
from dc_failover import EAST_IP, WEST_IP, call, user_body  # noqa: E402
from dns_lb_kill import pctl, strata  # noqa: E402

CONVERGE_LIMIT = 2.0


def version_of(headers):
    tag = headers.get("etag", "").strip('"')
    return int(tag[1:]) if tag.startswith("v") and tag[1:].isdigit() else None


def watch(west_port, path, want, acked_at, out, lock):
    """Polls us-west until it serves version `want` of `path`; records the convergence."""
    deadline = acked_at + CONVERGE_LIMIT
    seen = None
    polls = 0
    while time.monotonic() < deadline and polls < 5000:
        polls += 1
        s, h, _, _ = call(WEST_IP, west_port, "GET", path, {}, timeout=1.0)
        v = version_of(h) if s == 200 else None
        if v is not None and v >= want:
            seen = time.monotonic() - acked_at
            break
        time.sleep(0.002)
    with lock:
        out.append(seen)


def phase(name, a, east_port, west_port, auth, paths, cum, rng, rate, watch_every):
    """--writes writes at `rate`/s; every `watch_every`-th acknowledged one watched in us-west
    (0: none, so that nothing but the writes loads the machine)."""
    say(f"phase {name}: {a.writes} writes at {rate}/s through us-east"
        + (f", every {watch_every}. watched in us-west" if watch_every else ", none watched"))
    writes, converged, lock, watchers = [], [], threading.Lock(), []
    start = time.monotonic() + 0.3
    # Drawn up front from the seeded stream, one per write: the user, and the arrival time — a
    # Poisson process at --rate (exponential gaps), so that arrivals do not fall into step with
    # the followers' 25 ms polls, as a fixed period would.
    targets = [rng.choices(paths, cum_weights=cum)[0] for _ in range(a.writes)]
    arrivals, t = [], start
    for _ in range(a.writes):
        arrivals.append(t)
        t += rng.expovariate(rate)

    def writer(k):
        for i in range(k, a.writes, a.writers):
            intended = arrivals[i]
            delay = intended - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            path = targets[i]
            s, h, _, _ = call(EAST_IP, east_port, "PUT", path, auth, user_body(f"{name}-{i}"), timeout=5.0)
            acked_at = time.monotonic()
            v = version_of(h) if s == 200 else None
            with lock:
                writes.append({"latency_ms": (acked_at - intended) * 1000, "status": s})
                done = len(writes)
            if v is not None and watch_every and i % watch_every == 0:
                t = threading.Thread(target=watch, args=(west_port, path, v, acked_at, converged, lock), daemon=True)
                t.start()
                with lock:
                    watchers.append(t)
            if done % max(1, a.writes // 5) == 0:
                say(f"  {done}/{a.writes} written")

    pool = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(a.writers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(a.writes / rate + 60)
    for t in watchers:
        t.join(CONVERGE_LIMIT + 5)
    ok = [w["latency_ms"] for w in writes if w["status"] == 200]
    seen = [c * 1000 for c in converged if c is not None]
    summary = {
        "writes": len(writes), "acknowledged": len(ok),
        "write_ms": {q: pctl(ok, p) for q, p in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)]},
        "converged": len(seen), "watched": len(converged),
        "converge_ms": {q: pctl(seen, p) for q, p in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)]},
    }
    say(f"  {summary}")
    return {"summary": summary, "writes": writes, "converge_s": converged}


def cdf_svg(path, series):
    """A CDF of convergence per phase: stdlib SVG."""
    w, h, left, bottom = 640, 360, 60, 40
    xmax = max([max(seen, default=0) for _, (seen, _w) in series] + [1.0])
    colors = ["#1f77b4", "#d62728", "#2ca02c"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<text x="{w / 2}" y="16" text-anchor="middle">us-west serving a us-east write: time after its acknowledgement</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - 20}" y2="{h - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="30" x2="{left}" y2="{h - bottom}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">ms (writes not served within {CONVERGE_LIMIT * 1000:.0f} ms never reach 100%)</text>']
    for k in range(5):
        xv = xmax * k / 4
        x = left + (w - 20 - left) * k / 4
        out.append(f'<text x="{x}" y="{h - bottom + 16}" text-anchor="middle">{xv:.0f}</text>')
        y = h - bottom - (h - bottom - 30) * k / 4
        out.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{k * 25}%</text>')
    for n, (label, (seen, watched)) in enumerate(series):
        total = max(1, watched)
        pts = []
        for i, v in enumerate(sorted(seen)):
            x = left + (w - 20 - left) * v / xmax
            y = h - bottom - (h - bottom - 30) * (i + 1) / total
            pts.append(f"{x:.1f},{y:.1f}")
        color = colors[n % len(colors)]
        if pts:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}"/>')
        out.append(f'<text x="{left + 10}" y="{50 + 16 * n}" fill="{color}">{label}: {len(seen)}/{watched} served</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--writes", type=int, default=400, help="writes per phase (at most 5000)")
    ap.add_argument("--rate", type=float, default=20.0, help="writes/s (at most 200)")
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--writers", type=int, default=32, help="threads sharing the write schedule")
    ap.add_argument("--cost-rate", type=float, default=100.0, help="writes/s of the cost phases (at most 500)")
    ap.add_argument("--one-way-ms", type=int, default=30)
    ap.add_argument("--commit", choices=["quorum", "async"], default="quorum")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    ap.add_argument("--strata", default=None, help="a built strata binary (default: build release)")
    ap.add_argument("--out", default=RESULTS)
    a = ap.parse_args()
    if not (1 <= a.users <= 100_000 and 1 <= a.writes <= 5000 and 0 < a.rate <= 200 and 1 <= a.writers <= 64
            and 0 < a.cost_rate <= 500):
        sys.exit("need 1 <= --users <= 100000, 1 <= --writes <= 5000, 0 < --rate <= 200, 1 <= --writers <= 64")
    binary = os.path.abspath(a.strata) if a.strata else (build_release() or STRATA)
    commit = commit_label()
    seed = a.seed if a.seed is not None else time.time_ns()
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="dc-cache-follow-")
    os.chmod(work, 0o755)  # PostgreSQL runs as `postgres` when strata runs as root
    d = os.path.join(work, "deploy")
    topo = os.path.join(work, "topology.toml")
    with open(topo, "w") as f:
        f.write(f'name = "dc-cache"\n[lb]\n[api]\ncount = 1\n'
                f'[data]\nengine = "postgres"\ncommit = "{a.commit}"\n'
                f'[cache]\nengine = "redis"\nnodes = 1\n'
                f'[dns]\nttl_secs = 1\n'
                f'[[datacenter]]\nname = "us-east"\n[[datacenter]]\nname = "us-west"\n'
                f'[[link]]\nbetween = ["us-east", "us-west"]\none_way_ms = {a.one_way_ms}\n')
    say(f"strata up (us-east, us-west {a.one_way_ms} ms apart, a Redis in each) in {d}")
    strata(binary, "up", "-d", "--port", "0", "-f", topo, "--dir", d, env=LONG_TOKENS)
    try:
        status = json.loads(strata(binary, "status", "--json", "--dir", d).stdout)
        roles = {r["name"]: r for r in status["roles"]}
        east_port = int(roles["us-east-lb-1"]["addrs"]["http"].rsplit(":", 1)[1])
        west_port = int(roles["us-west-lb-1"]["addrs"]["http"].rsplit(":", 1)[1])
        primary = roles["pg-1"]["addrs"]["postgres"]
        auth = admin_headers(binary, d, f"{EAST_IP}:{east_port}")
        say(f"creating {a.users} users through us-east")
        paths = []
        for i in range(a.users):
            s, h, _, _ = call(EAST_IP, east_port, "POST", "/users", auth, user_body(f"seed-{i}"))
            if s != 201:
                sys.exit(f"cannot create user {i}: {s}")
            paths.append(h["location"])
            if (i + 1) % max(1, a.users // 4) == 0:
                say(f"  {i + 1}/{a.users}")
        say("warming us-west's caches (every user read twice there)")
        deadline = time.monotonic() + 60
        for p in paths + paths:
            while True:
                s, _, _, _ = call(WEST_IP, west_port, "GET", p, {})
                if s == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        weights = [1.0 / (k + 1) ** a.zipf for k in range(len(paths))]
        cum, acc = [], 0.0
        for wgt in weights:
            acc += wgt
            cum.append(acc)
        phases = {}

        def run(name, rate, watch_every):
            phases[name] = phase(name, a, east_port, west_port, auth, paths, cum, rng, rate, watch_every)

        def log_changes(on):
            psql(primary, f"ALTER TABLE users {'ENABLE' if on else 'DISABLE'} TRIGGER users_logged")

        # Convergence, with and without the log (a tenth watched there: it never converges,
        # and watchers polling for their whole 2 s would load the machine).
        run("following", a.rate, 1)
        log_changes(False)
        run("not-logged", a.rate, 10)
        log_changes(True)
        run("following-again", a.rate, 1)
        # What the log costs a write: nothing watched, --cost-rate/s, on, off, on.
        run("cost-logged", a.cost_rate, 0)
        log_changes(False)
        run("cost-not-logged", a.cost_rate, 0)
        log_changes(True)
        run("cost-logged-again", a.cost_rate, 0)
    finally:
        strata(binary, "down", "--dir", d, check=False)
    result = {
        "commit": commit,
        "command": "python3 bench/dc_cache_follow.py " + " ".join(sys.argv[1:]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {**vars(a), "seed": seed},
        "phases": phases,
    }
    path = write_result(a.out, "dc-cache-follow", commit, result)
    svg = path[:-5] + ".svg"
    cdf_svg(svg, [(k, ([c * 1000 for c in v["converge_s"] if c is not None], len(v["converge_s"])))
                  for k, v in phases.items() if not k.startswith("cost")])
    say(f"raw results: {path}; plot: {svg}")
    print(json.dumps({k: v["summary"] for k, v in phases.items()}, indent=1))


if __name__ == "__main__":
    main()
