#!/usr/bin/env python3
"""Drill: a replica whose disk fills up, under open-loop writes and reads.

    cargo build --release -p strata && sudo python3 bench/pg_disk_full.py [--rate 50]

Runs deploy/04-replicas.toml (a primary and two streaming replicas, quorum commit ANY 1) with
replica pg-3's data directory on a tmpfs of its own (so this needs root: `mount`). Once the
cluster is healthy, the tmpfs is shrunk to what pg-3 already uses plus --headroom-mib, and an
open-loop writer (creating users, recording every 2xx) and readers (reading just-written users
back with their commit token) run through the balancer, and the primary switches to a new WAL
segment every second (`pg_switch_wal()`), which pg-3 must store as a new 16 MiB file: its disk
is full at once. After
--fault-seconds the tmpfs is grown again (the fault is gone) and the load keeps running until the
cluster is back to full health by itself. Reported: failed writes and reads during the fault,
acknowledged writes missing afterwards and writes applied twice (both must be 0), pg-3's lag and
state over time, and how long after the disk was freed the cluster was fully healthy again.

Loopback only; the load is bounded in time.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import authn  # noqa: E402  (bench/authn.py)
import pg_drill  # noqa: E402  (bench/pg_drill.py: the client and the cluster helpers)

ROOT = pg_drill.ROOT


def du_mib(path):
    out = subprocess.run(["du", "-sm", path], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="writes/s (and as many reads/s)")
    ap.add_argument("--headroom-mib", type=int, default=4)
    ap.add_argument("--fault-seconds", type=float, default=20.0)
    ap.add_argument("--after-seconds", type=float, default=30.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("this drill mounts a tmpfs for the replica: run it as root")
    if not os.path.exists(pg_drill.STRATA):
        sys.exit("build first: cargo build --release -p strata")
    tmp = tempfile.mkdtemp(prefix="strata-diskfull-")
    os.chmod(tmp, 0o755)
    d = os.path.join(tmp, "deploy")
    disk = os.path.join(d, "postgres", "pg-3")
    os.makedirs(disk)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", disk], check=True)
    results = {"rate": args.rate, "headroom_mib": args.headroom_mib, "timeline": []}
    try:
        print("==> strata up -f deploy/04-replicas.toml (pg-3 on its own tmpfs)", flush=True)
        up = pg_drill.run("up", "-d", "--port", "0", "-f", os.path.join(ROOT, "deploy", "04-replicas.toml"),
                          "--dir", d, check=False)
        if up.returncode != 0:
            sys.exit(up.stderr)
        st = pg_drill.wait_healthy(d)
        lb = pg_drill.role(st, "lb-1")["addrs"]["http"]
        pg_drill.AUTH.update(authn.admin_headers(pg_drill.STRATA, d, lb))
        used = du_mib(disk)
        size = used + args.headroom_mib
        subprocess.run(["mount", "-o", f"remount,size={size}m", disk], check=True)
        print(f"==> pg-3 uses {used} MiB; its disk is now {size} MiB", flush=True)

        acked, failed_writes = [], []
        reads = {"ok": 0, "failed": 0, "kinds": {}}
        lock = threading.Lock()
        start = time.time()
        total = args.fault_seconds + args.after_seconds
        stop_at = start + total
        tag = "DiskFull"

        def writer(slot):
            c = pg_drill.Client(lb)
            n = 0
            while True:
                t = start + (n * 4 + slot) / args.rate
                if t >= stop_at:
                    return
                time.sleep(max(0.0, t - time.time()))
                name = "F%d-%d" % (slot, n)
                code, h, _ = c.request("POST", "/users", pg_drill.profile(name, tag))
                with lock:
                    if code == 201:
                        acked.append((time.time() - start, h.get("location"), h.get("strata-commit"), name))
                    else:
                        failed_writes.append((round(time.time() - start, 2), code))
                n += 1

        def reader(slot):
            c = pg_drill.Client(lb)
            n = 0
            while True:
                t = start + (n * 4 + slot) / args.rate
                if t >= stop_at:
                    return
                time.sleep(max(0.0, t - time.time()))
                with lock:
                    target = acked[-1 - (n % max(1, min(len(acked), 50)))] if acked else None
                n += 1
                if not target:
                    continue
                code, _, _ = c.request("GET", target[1], headers={"strata-read-after": target[2]})
                with lock:
                    if code == 200:
                        reads["ok"] += 1
                    else:
                        reads["failed"] += 1
                        reads["kinds"][code] = reads["kinds"].get(code, 0) + 1

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        freed_at, healthy_at = None, None
        primary_port = pg_drill.primary_of(st)["addrs"]["postgres"].rsplit(":", 1)[1]
        while time.time() < stop_at:
            now = time.time() - start
            if freed_at is None:
                # Start a new WAL segment on the primary: the replica must create a new 16 MiB
                # file for it, which its full disk cannot hold (the writes alone would take a
                # long time to fill the segment already allocated).
                subprocess.run(["psql", "-h", "127.0.0.1", "-p", primary_port, "-U", "strata", "-d", "strata",
                                "-tAc", "SELECT pg_switch_wal()"], capture_output=True, text=True)
            if freed_at is None and now >= args.fault_seconds:
                subprocess.run(["mount", "-o", "remount,size=512m", disk], check=True)
                freed_at = now
                print(f"    {now:5.1f} s: pg-3's disk grown back to 512 MiB", flush=True)
            st = pg_drill.status(d)
            r = pg_drill.role(st, "pg-3")
            db = r.get("database") or {}
            point = {"t": round(now, 1), "pg3_state": r["state"], "pg3_healthy": r["healthy"],
                     "pg3_restarts": r["restarts"], "pg3_lag_bytes": db.get("lagBytes"),
                     "disk_free_mib": max(0, (512 if freed_at else size) - du_mib(disk))}
            results["timeline"].append(point)
            if freed_at and healthy_at is None and r["healthy"] and db.get("lagBytes") == 0:
                healthy_at = now
                print(f"    {now:5.1f} s: pg-3 streams again with no lag", flush=True)
            if int(now) % 5 == 0:
                print("    " + json.dumps(point), flush=True)
            time.sleep(1.0)
        for t in threads:
            t.join()

        st = pg_drill.wait_healthy(d, limit=120)
        prim = pg_drill.primary_of(st)
        port = prim["addrs"]["postgres"].rsplit(":", 1)[1]
        rows = subprocess.run(["psql", "-h", "127.0.0.1", "-p", port, "-U", "strata", "-d", "strata", "-tAc",
                               "SELECT id, profile->>'firstName' FROM users WHERE profile->>'lastName' = '%s'" % tag],
                              capture_output=True, text=True, check=True).stdout.split()
        ids = {r.split("|")[0] for r in rows}
        names = [r.split("|")[1] for r in rows]
        missing = [a for a in acked if a[1].rsplit("/", 1)[1] not in ids]
        twice = len(names) - len(set(names))
        pg3_log = os.path.join(d, "logs", "pg-3.log")
        errors = subprocess.run(["grep", "-c", "No space left on device", pg3_log],
                                capture_output=True, text=True).stdout.strip()
        results.update({
            "writes_acked": len(acked), "writes_failed": len(failed_writes),
            "failed_writes": failed_writes[:20],
            "reads_ok": reads["ok"], "reads_failed": reads["failed"], "read_failures": reads["kinds"],
            "acked_missing": len(missing), "applied_twice": twice,
            "disk_full_errors_in_pg3_log": int(errors or 0),
            "disk_freed_at_s": freed_at,
            "full_health_after_freeing_s": round(healthy_at - freed_at, 1) if healthy_at and freed_at else None,
        })
        summary = {k: v for k, v in results.items() if k != "timeline"}
        print(json.dumps(summary, indent=1))
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        out = os.path.join(ROOT, "bench", "results",
                           "pg-disk-full-%s.json" % time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
        print("==> wrote " + out)
    finally:
        pg_drill.run("down", "--dir", d, check=False)
        subprocess.run(["umount", "-l", disk], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
