#!/usr/bin/env python3
"""The queue tier under photo uploads: a burst at 5x the workers' throughput, and 10,000 uploads
through real faults.

    cargo build --release -p strata && python3 bench/queue_uploads.py burst  [--preset deploy/11-queue-at-scale.toml]
    cargo build --release -p strata && python3 bench/queue_uploads.py faults [--count 10000]

Both run a deployment of the preset (default: RabbitMQ + SeaweedFS, 3 API servers behind the
balancer, 2 workers) in a temporary directory on free loopback ports, and load it with
`strata upload-load`: one user per upload, photos sent open loop at a fixed rate (each drawn
afresh from --photos, or made on the spot), every job followed until it is settled, every done
photo checked to be served, the dead letters counted.

burst:  1. the workers' throughput: --measure uploads sent far faster than the workers go;
           throughput = uploads / (first upload .. last job done);
        2. uploads at --factor x that throughput for --seconds: each must be answered 202 within
           its latency budget (p99 reported); the queue's depth over time is plotted; the queue
           must drain completely afterwards.
faults: --count uploads at --rate with one poison file in every --poison-every; meanwhile
        worker-1 is killed -9, then the RabbitMQ VM is killed -9 and, while it is down, worker-2
        too; then api-2; then worker-1 again. The supervisor restarts each. Nothing accepted may
        be lost, every photo is processed once visibly (duplicates absorbed by the workers),
        every poison ends in the dead-letter queue and nothing else does. Every upload not
        answered 202 is put under the fault that began within 30 s before it was due.

The raw result goes to bench/results/queue-<mode>-COMMIT-TIME.json with an SVG of the queue's
depth beside it. Loopback only; the load is bounded in count and time; the deployment is
stopped and deleted.
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
import threading
import time

from benchlib import RESULTS, ROOT, STRATA, descendants, git


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check)


def commit():
    sha = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return sha + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def status(d):
    return json.loads(strata("status", "--dir", d, "--json").stdout)


def role(st, name):
    return next(r for r in st["roles"] if r["name"] == name)


def wait_back(d, name, old_pid, within=120):
    deadline = time.time() + within
    while time.time() < deadline:
        r = role(status(d), name)
        if r.get("pid") and r["pid"] != old_pid and r.get("healthy"):
            return time.time()
        time.sleep(0.2)
    raise SystemExit(f"{name} did not come back within {within} s")


def beam_of(role_pid):
    for p in descendants(role_pid):
        try:
            if open(f"/proc/{p}/comm").read().startswith("beam"):
                return p
        except OSError:
            pass
    raise SystemExit("no RabbitMQ VM under rabbitmq-1")


def load(d, out, rate, count, poison_every, photos, drain, sizes=None):
    args = ["upload-load", "--dir", d, "--rate", str(rate), "--count", str(count),
            "--poison-every", str(poison_every), "--drain-secs", str(drain), "--out", out]
    if photos:
        args += ["--photos", photos]
    if sizes:
        args += ["--sizes", sizes]
    p = subprocess.Popen([STRATA, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.uploading = threading.Event()

    def relay():
        # The load says "uploading …" when its first upload leaves (after creating the users).
        for line in p.stderr:
            sys.stderr.write(line)
            if line.startswith("uploading"):
                p.uploading.t0 = time.time()
                p.uploading.set()
    p.relay = threading.Thread(target=relay, daemon=True)
    p.relay.start()
    return p


def finish(p, out):
    stdout = p.stdout.read()
    p.wait()
    p.relay.join()
    print(stdout)
    if p.returncode != 0:
        raise SystemExit(f"strata upload-load failed ({p.returncode})")
    return json.load(open(out))


def failures_by_fault(timeline, marks, window=30):
    """Every upload not answered 202, under the last fault that began at most `window` seconds
    before it was due ("before any fault" otherwise): which fault each failure met."""
    out = {}
    for row in timeline:
        bad = {k: v for k, v in row["answers"].items() if k != "202"}
        if not bad:
            continue
        under = [name for name, t in marks if t <= row["second"] + 1 and row["second"] - t <= window]
        key = under[-1] if under else "no fault within %d s" % window
        acc = out.setdefault(key, {})
        for k, v in bad.items():
            acc[k] = acc.get(k, 0) + v
    return out


def plot(path, depth, marks, title):
    """Queue depth (ready + delayed + in flight) and dead letters over time, as SVG."""
    if not depth:
        return
    w, h, left, bottom, top = 900, 340, 70, 40, 30
    total = [(r["t"], r.get("ready", 0) + r.get("delayed", 0) + r.get("in_flight", 0), r.get("dead", 0)) for r in depth]
    t_max = max(t for t, _, _ in total) + 1
    y_max = max(max(v for _, v, _ in total), 1)
    x = lambda t: left + (w - left - 20) * t / t_max
    y = lambda v: h - bottom - (h - bottom - top) * v / y_max
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="18" font-size="14">{title}</text>']
    for label, t in marks:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{h - bottom}" stroke="#c0392b" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x(t) + 3:.1f}" y="{top + 12}" fill="#c0392b" font-size="10">{label}</text>')
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        v = y_max * frac
        parts.append(f'<line x1="{left}" x2="{w - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _ in total)
    parts.append(f'<polyline fill="none" stroke="#2b7bb9" stroke-width="1.5" points="{pts}"/>')
    pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, _, v in total)
    parts.append(f'<polyline fill="none" stroke="#8e44ad" stroke-width="1.5" points="{pts}"/>')
    parts.append(f'<text x="{w / 2}" y="{h - 5}" text-anchor="middle">seconds from the first upload</text>')
    parts.append(f'<text x="{w - 300}" y="18" fill="#2b7bb9">jobs waiting or in progress</text>')
    parts.append(f'<text x="{w - 110}" y="18" fill="#8e44ad">dead letters</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    # A SIGTERM (e.g. from `timeout`) still stops the deployment: the `finally` below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["burst", "faults"])
    ap.add_argument("--preset", default=os.path.join(ROOT, "deploy", "11-queue-at-scale.toml"))
    ap.add_argument("--photos", help="directory of photos to upload (default: made on the spot)")
    ap.add_argument("--sizes", help="sizes of the photos made on the spot (default: burst 320x240 to 1600x1200, faults 320x240,480x360)")
    ap.add_argument("--measure", type=int, default=300, help="burst: uploads to measure the workers' throughput")
    ap.add_argument("--factor", type=float, default=5.0, help="burst: the burst's rate over the throughput")
    ap.add_argument("--seconds", type=int, default=60, help="burst: its length")
    ap.add_argument("--count", type=int, default=10000, help="faults: uploads")
    ap.add_argument("--rate", type=float, default=40.0, help="faults: uploads per second")
    ap.add_argument("--poison-every", type=int, default=500)
    args = ap.parse_args()
    if not os.path.exists(STRATA):
        sys.exit("build first: cargo build --release -p strata")
    sha = commit()
    if sha.endswith("-dirty"):
        print("warning: the working tree has changes: the figures will not name a commit", file=sys.stderr)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = tempfile.mkdtemp(prefix="strata-queue-")
    d = os.path.join(work, "deploy")
    out = os.path.join(work, "load.json")
    result = {"mode": args.mode, "commit": sha, "preset": os.path.relpath(args.preset, ROOT),
              "started": stamp, "machine": f"{os.cpu_count()} cores"}
    try:
        print(f"==> strata up -f {args.preset}", file=sys.stderr)
        strata("up", "-d", "--dir", d, "--port", "0", "-f", args.preset)
        if args.mode == "burst":
            print(f"==> the workers' throughput: {args.measure} uploads at 200/s", file=sys.stderr)
            m = finish(load(d, out, 200, args.measure, 0, args.photos, 600, args.sizes), out)
            throughput = m["done"] / (m["load_secs"] + m["drain_secs"])
            rate = round(throughput * args.factor, 1)
            count = int(rate * args.seconds)
            print(f"==> throughput {throughput:.1f} photos/s: burst of {count} at {rate}/s", file=sys.stderr)
            b = finish(load(d, out, rate, count, 0, args.photos, 1800, args.sizes), out)
            result.update(measure=m, throughput=throughput, burst=b)
            marks = [("burst ends", b["load_secs"])]
            depth = b["queue_depth"]
            title = f"{count} uploads at {rate}/s ({args.factor:g}x the workers' {throughput:.1f}/s)"
        else:
            p = load(d, out, args.rate, args.count, args.poison_every, args.photos, 1800,
                     args.sizes or "320x240,480x360")
            if not p.uploading.wait(timeout=1200):
                raise SystemExit("the load never started uploading")
            marks, t0 = [], p.uploading.t0
            expected = args.count / args.rate

            def at(frac):
                time.sleep(max(0.0, t0 + frac * expected - time.time()))

            def kill_and_wait(name):
                pid = role(status(d), name)["pid"]
                os.kill(pid, signal.SIGKILL)
                marks.append((f"{name} -9", time.time()))
                wait_back(d, name, pid)

            def faults():
                at(0.2)
                kill_and_wait("worker-1")
                at(0.35)
                # The second fault during the first: worker-2 dies while RabbitMQ is down.
                st = status(d)
                broker, w2 = role(st, "rabbitmq-1")["pid"], role(st, "worker-2")["pid"]
                os.kill(beam_of(broker), signal.SIGKILL)
                marks.append(("RabbitMQ -9", time.time()))
                os.kill(w2, signal.SIGKILL)
                marks.append(("worker-2 -9", time.time()))
                wait_back(d, "rabbitmq-1", broker)
                marks.append(("RabbitMQ back", time.time()))
                wait_back(d, "worker-2", w2)
                at(0.6)
                kill_and_wait("api-2")
                at(0.8)
                kill_and_wait("worker-1")

            th = threading.Thread(target=faults)
            th.start()
            f = finish(p, out)
            th.join()
            result.update(faults=f)
            marks = [(n, round(t - t0, 2)) for n, t in marks]
            result["fault_marks_secs"] = marks
            result["failures_by_fault"] = failures_by_fault(f.get("timeline", []), marks)
            print(f"failures by the fault they met: {result['failures_by_fault']}", file=sys.stderr)
            depth = f["queue_depth"]
            title = f"{args.count} uploads at {args.rate}/s through kill -9 of workers, RabbitMQ and an API server"
        result["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name = f"queue-{args.mode}-{sha}-{stamp}"
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, name + ".json"), "w") as fh:
            json.dump(result, fh, indent=1)
        plot(os.path.join(RESULTS, name + ".svg"), depth, marks, title)
        print(f"raw result: bench/results/{name}.json (+ .svg)", file=sys.stderr)
    finally:
        strata("down", "--dir", d, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
