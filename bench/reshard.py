#!/usr/bin/env python3
"""Online resharding 4 -> 8 shard groups under open-loop load, optionally with the resharder
killed -9 in the middle of its cut-overs and resumed.

    cargo build --release -p strata && python3 bench/reshard.py [--users 1000000] [--rate 100]
                                                               [--chunk-slots 8] [--kill]
                                                               [--engine postgres [--kill-primary]]

1. `strata up -d`: a balancer, 3 API servers, `[data] shards = 4` (embedded: one SQLite file
   per group; with --engine postgres, 4 groups plus 4 spares, each a PostgreSQL primary, a
   streaming replica and a controller);
2. `strata seed --users N --dir` into the deployment's groups;
3. `strata chaos --no-faults`: open-loop authenticated writes (creates) and reads (each carrying
   its write's commit token) at --rate each per second, every acknowledged write read back at
   the end, HDR latency percentiles and a per-second timeline;
4. after --lead seconds, `strata reshard --shards 8`: copy, catch up, cut over chunk by chunk
   (each a short write pause, verified by counts and checksums), clean up. With --kill, the
   resharder is killed -9 after --kill-after cut-overs and `strata reshard --resume` finishes.
   With --kill-primary too (PostgreSQL), while the resharder is down — the second fault during
   the first — the primary of the group whose slots are being moved is killed -9 as well, and
   `strata reshard --resume` is repeated until it finishes (each failed attempt is recorded).

Writes the raw result (reshard report(s), the load's verdict, commit, parameters) to
bench/results/reshard-COMMIT-TIME.json and a plot of latency over the run (SVG) beside it.
Loopback only; the load stops after its duration; the deployment is stopped and deleted.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(ROOT, "target", "release", "strata")


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check)


def commit():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"


def plot(path, timeline, marks, title):
    """Latency per second (p50, p99, max of answered requests) and failures, as SVG."""
    w, h, left, bottom, top = 900, 360, 60, 40, 30
    if not timeline:
        return
    t_max = max(s["t"] for s in timeline) + 1
    y_max = max(max(s["max_ms"] for s in timeline), 1.0)
    x = lambda t: left + (w - left - 20) * t / t_max
    y = lambda v: h - bottom - (h - bottom - top) * min(v, y_max) / y_max
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (w, h),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="%d" y="18" font-size="12">%s</text>' % (left, title)]
    for t in range(0, int(t_max) + 1, 30):
        parts.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#666">%d s</text>' % (x(t), h - bottom + 22, t))
    for i, (label, (t0, t1)) in enumerate(marks.items()):
        parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>' % (
            x(t0), top, max(x(t1) - x(t0), 1.5), h - bottom - top, "#f3e6c8" if i == 0 else "#d9534f"))
        parts.append('<text x="%.1f" y="%d" fill="%s">%s</text>' % (
            x(t0) + 3, top + 14 + 16 * i, "#8a6d1d" if i == 0 else "#b52b27", label))
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        v = y_max * frac
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, w - 20, y(v), y(v)))
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%.0f ms</text>' % (left - 5, y(v) + 4, v))
    for key, color in (("max_ms", "#d9822b"), ("p99_ms", "#2b7bb9"), ("p50_ms", "#3a9d23")):
        pts = " ".join("%.1f,%.1f" % (x(s["t"] + 0.5), y(s[key])) for s in timeline)
        parts.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (color, pts))
    for s in timeline:
        if s["failed"]:
            parts.append('<circle cx="%.1f" cy="%d" r="3" fill="red"><title>%d failed</title></circle>' % (
                x(s["t"] + 0.5), h - bottom + 8, s["failed"]))
    parts.append('<text x="%d" y="%d" text-anchor="middle">seconds of load (red dots: failed requests)</text>' % (w / 2, h - 3))
    for i, (name, color) in enumerate((("max", "#d9822b"), ("p99", "#2b7bb9"), ("p50", "#3a9d23"))):
        parts.append('<text x="%d" y="%d" fill="%s">%s</text>' % (w - 160 + 50 * i, h - 5, color, name))
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def title(users, rate, engine, kill, kill_primary):
    return "%s users on %s groups, %d writes/s + %d reads/s open loop: resharding 4 -> 8%s" % (
        format(users, ","), "PostgreSQL" if engine == "postgres" else "SQLite", rate, rate,
        (", resharder%s killed -9" % (" and a primary" if kill_primary else "")) if kill else "")


def kill_source_primary(d, journal):
    """Kills -9 the postmaster of the current primary of the group the resharding is moving
    slots from (the pending cut-over's move, else the first move not fully cut over)."""
    moves = journal.get("moves", [])
    pending = journal.get("pending")
    index = pending["move_index"] if pending else next(
        (i for i, m in enumerate(moves) if m.get("cut_to") is None), 0)
    group = moves[index]["from"]
    st = json.loads(strata("status", "--dir", d, "--json").stdout)
    view = next(g for g in st.get("databaseGroups", []) if g.get("group") == group)
    server = view["primary"]
    pidfile = os.path.join(d, "postgres", group, server, "postmaster.pid")
    pid = int(open(pidfile).readline().strip())
    os.kill(pid, signal.SIGKILL)
    return {"group": group, "server": server, "postmaster_pid": pid}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1000000)
    ap.add_argument("--rate", type=int, default=100, help="writes/s and reads/s (open loop)")
    ap.add_argument("--duration", type=int, default=120, help="seconds of load (bounded)")
    ap.add_argument("--lead", type=int, default=10, help="seconds of load before the resharding")
    ap.add_argument("--chunk-slots", type=int, default=8)
    ap.add_argument("--kill", action="store_true", help="kill -9 the resharder mid cut-over, then resume")
    ap.add_argument("--kill-after", type=int, default=20, help="cut-overs before the kill")
    ap.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--kill-primary", action="store_true",
                    help="with --kill on PostgreSQL: also kill -9 the source group's primary while the resharder is down")
    args = ap.parse_args()
    if args.kill_primary and not (args.kill and args.engine == "postgres"):
        sys.exit("--kill-primary needs --kill and --engine postgres")
    if not os.path.exists(STRATA):
        sys.exit("build first: cargo build --release -p strata")
    work = tempfile.mkdtemp(prefix="strata-reshard-")
    os.chmod(work, 0o755)
    d = os.path.join(work, "deploy")
    data = os.path.join(d, "data")
    topo = os.path.join(work, "shards.toml")
    with open(topo, "w") as f:
        f.write('name = "reshard-bench"\n[lb]\ncount = 1\n[api]\ncount = 3\n[data]\n')
        if args.engine == "postgres":
            f.write('engine = "postgres"\nshards = 4\nspare_shards = 4\nreplicas = 1\ncommit = "quorum"\n[control]\ncount = 1\n')
        else:
            f.write('engine = "sqlite"\nshards = 4\n')
    result = {"commit": commit(), "engine": args.engine, "users": args.users, "rate": args.rate,
              "duration_s": args.duration, "chunk_slots": args.chunk_slots, "kill": args.kill,
              "kill_primary": args.kill_primary,
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    try:
        print("==> strata up (lb, 3 API servers, 4 shard groups%s)" % (
            " + 4 spares, each a PostgreSQL primary and replica" if args.engine == "postgres" else ""), flush=True)
        up = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
        if up.returncode != 0:
            sys.exit(up.stderr)
        print("==> seeding %d users" % args.users, flush=True)
        t0 = time.time()
        subprocess.run([STRATA, "seed", "--users", str(args.users), "--dir", d], check=True)
        result["seed_s"] = round(time.time() - t0, 1)
        verdict_path = os.path.join(work, "verdict.json")
        print("==> open-loop load: %d writes/s + %d reads/s for %d s" % (args.rate, args.rate, args.duration), flush=True)
        load_started = time.time()
        load = subprocess.Popen([STRATA, "chaos", "--dir", d, "--no-faults", "--json", "--out", verdict_path,
                                 "--duration-secs", str(args.duration), "--rate", str(args.rate)],
                                stdout=subprocess.DEVNULL)
        time.sleep(args.lead)
        reshard_started = time.time()
        cmd = [STRATA, "reshard", "--dir", d, "--shards", "8", "--chunk-slots", str(args.chunk_slots), "--json"]
        reports = []
        if args.kill:
            print("==> strata reshard --shards 8, to be killed -9 after %d cut-overs" % args.kill_after, flush=True)
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
            journal = os.path.join(data, "reshard.json")
            deadline = time.time() + 600
            while time.time() < deadline and p.poll() is None:
                try:
                    j = json.load(open(journal))
                    if len(j.get("pauses_ms", [])) >= args.kill_after:
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.01)
            if p.poll() is not None:
                sys.exit("the resharder finished before the kill: lower --kill-after")
            p.send_signal(signal.SIGKILL)
            p.wait()
            killed_at = time.time()
            killed_journal = json.load(open(journal))
            result["killed"] = {"at_s": round(killed_at - load_started, 2),
                                "cut_overs_before": len(killed_journal.get("pauses_ms", [])),
                                "pending_cut": killed_journal.get("pending")}
            if args.kill_primary:
                result["killed"]["primary"] = kill_source_primary(d, killed_journal)
                print("==> killed the primary %s of group %s too" % (
                    result["killed"]["primary"]["server"], result["killed"]["primary"]["group"]), flush=True)
            print("==> strata reshard --resume", flush=True)
            attempts = []
            deadline = time.time() + 600
            while True:
                resumed = subprocess.run([STRATA, "reshard", "--dir", d, "--resume", "--json"],
                                         capture_output=True, text=True)
                if resumed.returncode == 0:
                    break
                reason = (resumed.stderr.strip().splitlines() or ["(no message)"])[-1]
                attempts.append({"at_s": round(time.time() - load_started, 2), "error": reason[-500:]})
                print("    resume failed (%s); again in 2 s" % reason[-200:], flush=True)
                if not args.kill_primary or time.time() > deadline:
                    load.kill()
                    sys.exit("strata reshard --resume failed:\n" + resumed.stderr[-3000:])
                time.sleep(2)
            result["killed"]["failed_resumes"] = attempts
            reports.append(json.loads(resumed.stdout))
        else:
            print("==> strata reshard --shards 8", flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                load.kill()
                sys.exit("strata reshard failed:\n" + done.stderr[-3000:])
            reports.append(json.loads(done.stdout))
        reshard_ended = time.time()
        result["reshard"] = reports
        result["reshard_window_s"] = [round(reshard_started - load_started, 2), round(reshard_ended - load_started, 2)]
        print("==> waiting for the load to end and its read-back", flush=True)
        load.wait(timeout=args.duration + 600)
        verdict = json.load(open(verdict_path))
        result["load"] = verdict
        st = json.loads(strata("status", "--dir", d, "--json").stdout)
        result["groups_after"] = st.get("shards", {}).get("groups")
        result["database_groups_after"] = st.get("databaseGroups")
    finally:
        strata("down", "--dir", d, check=False)
        shutil.rmtree(work, ignore_errors=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = os.path.join(ROOT, "bench", "results", "reshard%s%s-%s-%s" % (
        "-pg" if args.engine == "postgres" else "", "-kill" if args.kill else "", result["commit"], stamp))
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    r = result["reshard"][-1]
    pauses = sorted(p for rep in result["reshard"] for p in rep["pauses_ms"])
    pct = lambda q: pauses[min(len(pauses) - 1, int(round(q * (len(pauses) - 1))))] if pauses else 0
    lo, hi = result["reshard_window_s"]
    marks = {"resharding 4 -> 8": (lo, hi)}
    if args.kill:
        at = result["killed"]["at_s"]
        marks["killed: resharder" + (" + primary of " + result["killed"]["primary"]["group"] if args.kill_primary else "")] = (at, at + 0.5)
    plot(base + ".svg", verdict["timeline"], marks, title(args.users, args.rate, args.engine, args.kill, args.kill_primary))
    w, rd = verdict["writes"], verdict["reads"]
    total_s = hi - lo
    print("\nresult: %s.json (+ .svg)" % base)
    print("| users | cut-overs | write pause p50 / p99 / p100 (ms) | rows copied | verified users / emails | resharding time | data rate | acknowledged writes lost | failed requests | write p99 / max (ms) | read p99 / max (ms) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|")
    print("| %s | %d | %.1f / %.1f / %.1f | %s | %s / %s | %.1f s | %s rows/s | %d | %d of %d | %.1f / %.1f | %.1f / %.1f |" % (
        format(args.users, ","), len(pauses), pct(0.5), pct(0.99), pct(1.0), format(sum(x["rows_copied"] for x in result["reshard"]), ","),
        format(sum(x["verified_users"] for x in result["reshard"]), ","), format(sum(x["verified_emails"] for x in result["reshard"]), ","),
        total_s, format(int(sum(x["rows_copied"] for x in result["reshard"]) / max(total_s, 1e-9)), ","),
        verdict["lost"], w["failed"] + rd["failed"], w["sent"] + rd["sent"],
        w["p99_ms"], w["max_ms"], rd["p99_ms"], rd["max_ms"]))
    parts = [p for rep in result["reshard"] for p in rep.get("pause_parts_ms", [])]
    if parts:
        med = lambda i: sorted(p[i] for p in parts)[len(parts) // 2]
        top = lambda i: max(p[i] for p in parts)
        print("pause parts, p50 / max (ms): final catch-up %.1f / %.1f, verification %.1f / %.1f, publication %.1f / %.1f" % (
            med(0), top(0), med(1), top(1), med(2), top(2)))
    if verdict["lost"] or r["groups"] != 8:
        sys.exit("FAILED: lost %d acknowledged writes, %d groups" % (verdict["lost"], r["groups"]))


if __name__ == "__main__":
    main()
