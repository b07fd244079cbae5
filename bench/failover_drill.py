#!/usr/bin/env python3
"""Failover drills: does a failover ever lose an acknowledged write, even with a second fault?

    cargo build --release -p strata && python3 bench/failover_drill.py [--runs 5] [--store etcd]

One replicated deployment (a balancer, 3 API servers, a PostgreSQL primary with 2 streaming
replicas in a synchronous quorum `ANY 1 (…)`), its control plane on a file (one controller) or on
etcd (`--store etcd`: a 3-member etcd cluster and 3 controllers, one leading by a lease). Under
open-loop load through the balancer (writes creating users, reads of acknowledged users with
their commit token), --runs of each drill:

  a  kill      kill -9 of the primary's postmaster
  b  stall     the primary frozen (SIGSTOP of the postmaster and every backend)
  c  double    one replica stopped while --lag-mb MB of WAL (and then users) are committed with
               the other replica alone; then the lagging replica resumes just as the primary and
               the up-to-date replica freeze, for --hold s: nothing may be promoted until the
               up-to-date replica answers again
  d  control   the double fault, with the leading controller killed with SIGKILL while the
               failover waits, and (next run) frozen with SIGSTOP, thawed after the failover
  e  etcd      the primary frozen and, at the same moment, one etcd member killed (etcd only)

Per run: seconds from the fault until writes are acknowledged again (for c and d the hold is
included, as it should be: writes wait for a safe candidate), failed writes and reads, the
acknowledged writes missing from the new primary afterwards (must be 0), who was promoted, and
seconds until full health (every role healthy, both replicas streaming with no lag, nothing
fenced). The raw results go to bench/results/failover-<time>.json with the commit they ran on.

Everything runs on 127.0.0.1 in a temporary directory; every load loop is bounded in time and
count. Needs PostgreSQL (and etcd-server for --store etcd) like the test suite.
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
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import authn  # noqa: E402
import pg_drill  # noqa: E402
from benchlib import psql  # noqa: E402
from pg_drill import Client, children, primary_of, profile, role, run, status  # noqa: E402

ROOT = pg_drill.ROOT
STRATA = pg_drill.STRATA


def tree(pid):
    out = []
    for c in children(pid):
        out.extend(tree(c))
    return out + [pid]


def signal_tree(pid, sig):
    # The whole tree first (reading /proc takes a while), then the signals at once.
    for p in tree(pid):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def signal_trees(pids, sig):
    """Signals several process trees as nearly at once as possible."""
    every = [p for pid in pids for p in tree(pid)]
    for p in every:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def server_pid(d, node):
    with open(os.path.join(d, "postgres", node, "postmaster.pid")) as f:
        return int(f.readline())


def controllers(d):
    """(name, pid, http address) of every controller role."""
    return [(r["name"], r.get("pid"), r["addrs"]["http"]) for r in status(d)["roles"]
            if r["kind"] == "control" and "http" in r["addrs"]]


def control_view(d, known=None, timeout=0.3):
    """GET /cluster of the leading controller (any controller answers with what it sees). With
    `known` (from controllers()) no `strata status` is run: the drill's own timing matters."""
    views = []
    for name, _, addr in (known if known is not None else controllers(d)):
        try:
            with urllib.request.urlopen("http://%s/cluster" % addr, timeout=timeout) as f:
                views.append((name, json.loads(f.read())))
        except OSError:
            pass
    for name, v in views:
        if v.get("leading"):
            return name, v
    return views[0] if views else (None, {})


def healthy(d):
    st = status(d)
    dbs = [r for r in st["roles"] if r["kind"] == "postgres"]
    cluster = (st.get("control") or {}).get("cluster") or {}
    return (all(r["healthy"] for r in st["roles"])
            and sum(1 for r in dbs if r["database"] and r["database"]["role"] == "replica"
                    and r["database"]["lagBytes"] == 0) == 2
            and primary_of(st) is not None
            and not cluster.get("failover") and not cluster.get("fenced")
            and not cluster.get("rewind")), st


def wait_healthy(d, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        ok, st = healthy(d)
        if ok:
            return st
        time.sleep(0.25)
    raise SystemExit("not back to full health within %d s:\n%s"
                     % (limit, run("status", "--dir", d, check=False).stdout))


class Load:
    """Open-loop writes and token reads through the balancer until stopped (bounded)."""

    def __init__(self, lb, tag, rate=50.0, limit=180.0):
        self.lb, self.tag, self.rate = lb, tag, rate
        self.acked, self.failed, self.reads = [], [], {"ok": 0, "failed": 0, "kinds": {}}
        self.lock = threading.Lock()
        self.start = time.time()
        self.stop_at = self.start + limit
        self.threads = [threading.Thread(target=self.writer, args=(i,)) for i in range(4)]
        self.threads += [threading.Thread(target=self.reader, args=(i,)) for i in range(4)]
        for t in self.threads:
            t.start()

    def writer(self, slot):
        c, n = Client(self.lb), 0
        while True:
            t = self.start + (n * 4 + slot) / self.rate
            if t >= self.stop_at:
                return
            time.sleep(max(0.0, t - time.time()))
            sent = time.time()
            code, h, _ = c.request("POST", "/users", profile("D%d-%d" % (slot, n), self.tag))
            with self.lock:
                if code == 201:
                    self.acked.append((sent, time.time(), h.get("location"), h.get("strata-commit")))
                else:
                    self.failed.append((sent, code))
            n += 1

    def reader(self, slot):
        c, n = Client(self.lb), 0
        while True:
            t = self.start + (n * 4 + slot) / self.rate
            if t >= self.stop_at:
                return
            time.sleep(max(0.0, t - time.time()))
            with self.lock:
                target = self.acked[-1 - (n % max(1, min(len(self.acked), 50)))] if self.acked else None
            n += 1
            if not target:
                continue
            code, _, _ = c.request("GET", target[2], headers={"strata-read-after": target[3]})
            with self.lock:
                if code == 200:
                    self.reads["ok"] += 1
                else:
                    self.reads["failed"] += 1
                    self.reads["kinds"][code] = self.reads["kinds"].get(code, 0) + 1

    def finish(self):
        self.stop_at = time.time()
        for t in self.threads:
            t.join()


def missing_on_primary(st, tag, acked):
    prim = primary_of(st)
    port = prim["addrs"]["postgres"].rsplit(":", 1)[1]
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", port, "-U", "strata", "-d", "strata",
                          "-tAc", "SELECT id FROM users WHERE profile->>'lastName' = '%s'" % tag],
                         capture_output=True, text=True, check=True).stdout.split()
    have = set(out)
    return [a for a in acked if a[2].rsplit("/", 1)[1] not in have]


def settle_after(fault_at, load, st_before, d, tag, extra):
    load.finish()
    after = [a for a in load.acked if a[0] > fault_at]
    recovered = min((a[1] for a in after), default=None)
    healthy_from = time.time()
    st = wait_healthy(d)
    missing = missing_on_primary(st, tag, load.acked)
    r = {
        "old_primary": primary_of(st_before)["name"], "new_primary": primary_of(st)["name"],
        "writes_sent": len(load.acked) + len(load.failed), "writes_acked": len(load.acked),
        "writes_failed": len(load.failed),
        "write_outage_s": round(recovered - fault_at, 2) if recovered else None,
        "reads_ok": load.reads["ok"], "reads_failed": load.reads["failed"],
        "read_failures": load.reads["kinds"], "acked_missing": len(missing),
        "full_health_s": round(time.time() - healthy_from + max(0.0, healthy_from - (recovered or healthy_from)), 2),
    }
    r.update(extra)
    return r


def drill_simple(d, lb, kind, tag, run_index=0):
    """a (kill) and b (stall) of the primary; e adds an etcd member killed at the same moment."""
    st = wait_healthy(d)
    prim = primary_of(st)["name"]
    pid = server_pid(d, prim)
    load = Load(lb, tag)
    time.sleep(2)
    extra = {"drill": kind}
    if kind == "kill":
        os.kill(pid, signal.SIGKILL)
    elif kind == "etcd":
        # A different member each run: the supervisor rightly gives up on a role that crashes
        # 5 times within 60 s.
        members = [r for r in st["roles"] if r["kind"] == "etcd" and r.get("pid")]
        member = members[run_index % len(members)]
        frozen, killed = tree(pid), tree(member["pid"])
        for p in frozen:
            os.kill(p, signal.SIGSTOP)
        for p in killed:
            os.kill(p, signal.SIGKILL)
        extra["etcd_killed"] = member["name"]
    else:
        signal_tree(pid, signal.SIGSTOP)
    # From when the fault is complete.
    fault_at = time.time()
    # Until writes are acknowledged again (at most 60 s), then a little more load.
    deadline = fault_at + 60
    while time.time() < deadline and not any(a[0] > fault_at for a in load.acked):
        time.sleep(0.1)
    time.sleep(3)
    if kind != "kill":
        signal_tree(pid, signal.SIGCONT)
    return settle_after(fault_at, load, st, d, tag, extra)


def drill_double(d, lb, tag, lag_mb, hold, controller=None, store="file"):
    """c (and d with controller = "kill" | "stop")."""
    st = wait_healthy(d)
    prim = primary_of(st)
    replicas = sorted(r["name"] for r in st["roles"]
                      if r["kind"] == "postgres" and r["name"] != prim["name"])
    lagging, current = replicas
    pids = {n: server_pid(d, n) for n in (prim["name"], lagging, current)}
    load = Load(lb, tag)
    time.sleep(1)
    signal_tree(pids[lagging], signal.SIGSTOP)
    addr = prim["addrs"]["postgres"]
    rows = max(1, lag_mb * 1024 * 1024 // 2048)
    table = "wal_filler_%d" % int(time.time() * 1000)
    psql(addr, "CREATE TABLE %s (id int, pad text); ALTER TABLE %s ALTER COLUMN pad SET STORAGE EXTERNAL;"
         " INSERT INTO %s SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 64) i)"
         " FROM generate_series(1, %d) g" % (table, table, table, rows))
    time.sleep(1)  # users acknowledged with the up-to-date replica alone
    lag = int(psql(addr, "SELECT pg_current_wal_lsn() - flush_lsn FROM pg_stat_replication"
                         " WHERE application_name = '%s'" % lagging) or 0)
    signal_trees([pids[prim["name"]], pids[current]], signal.SIGSTOP)
    signal_tree(pids[lagging], signal.SIGCONT)
    fault_at = time.time()
    extra = {"drill": "double" if not controller else "control-" + controller,
             "lag_bytes": lag, "lagging": lagging, "up_to_date": current, "hold_s": hold}
    waited, promoted_early, frozen_leader = False, None, None
    hold_until = time.time() + hold
    acted = False
    known = controllers(d)
    while time.time() < hold_until - 0.1:
        leader, v = control_view(d, known)
        w = v.get("waiting") or {}
        if w.get("reachable") == 1 and w.get("needed") == 2:
            waited = True
            if controller and not acted and leader:
                pid = next(p for n, p, _ in known if n == leader)
                signal_tree(pid, signal.SIGKILL if controller == "kill" else signal.SIGSTOP)
                frozen_leader = pid if controller == "stop" else None
                extra["controller_fault_at_s"] = round(time.time() - fault_at, 2)
                extra["controller"] = leader
                acted = True
                # Its address answers no more (killed: the restarted one comes back on it).
                known = [k for k in known if k[0] != leader] if controller == "stop" else known
        c = (v.get("cluster") or {})
        if c.get("primary") and c.get("primary") != prim["name"]:
            promoted_early = c["primary"]
        time.sleep(0.1)
    time.sleep(max(0.0, hold_until - time.time()))
    extra["waited"] = waited
    extra["promoted_during_hold"] = promoted_early
    if frozen_leader and store == "file":
        # One controller: nothing can fail over while it is frozen; thaw it with the replica.
        signal_tree(frozen_leader, signal.SIGCONT)
        frozen_leader = None
    signal_tree(pids[current], signal.SIGCONT)
    deadline = time.time() + 60
    while time.time() < deadline and not any(a[0] > fault_at for a in load.acked):
        time.sleep(0.1)
    time.sleep(2)
    if frozen_leader:
        signal_tree(frozen_leader, signal.SIGCONT)
    signal_tree(pids[prim["name"]], signal.SIGCONT)
    r = settle_after(fault_at, load, st, d, tag, extra)
    psql(primary_of(status(d))["addrs"]["postgres"], "DROP TABLE IF EXISTS %s" % table)
    return r


def topology(store):
    base = ('name = "failover-drill"\n[lb]\ncount = 1\n[api]\ncount = 3\n'
            '[data]\nengine = "postgres"\nreplicas = 2\ncommit = "quorum"\n')
    if store == "etcd":
        base += '[control]\ncount = 3\nstore = "etcd"\n'
    return base


def commit_id():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--store", choices=["file", "etcd"], default="file")
    ap.add_argument("--drills", default=None, help="comma-separated: kill,stall,double,control,etcd")
    ap.add_argument("--lag-mb", type=int, default=60)
    ap.add_argument("--hold", type=float, default=5.0, help="seconds the double fault is held")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    if not os.path.exists(STRATA):
        sys.exit("build first: cargo build --release -p strata")
    drills = (args.drills.split(",") if args.drills else
              ["kill", "stall", "double", "control"] + (["etcd"] if args.store == "etcd" else []))
    tmp = tempfile.mkdtemp(prefix="strata-failover-")
    os.chmod(tmp, 0o755)  # the postgres user must reach the data directories
    d = os.path.join(tmp, "deploy")
    topo = os.path.join(tmp, "topology.toml")
    with open(topo, "w") as f:
        f.write(topology(args.store))
    print("==> strata up (store = %s)" % args.store, flush=True)
    up = run("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
    if up.returncode != 0:
        sys.exit(up.stderr)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = {"commit": commit_id(), "started": started, "store": args.store,
               "lag_mb": args.lag_mb, "hold_s": args.hold, "runs": []}
    try:
        st = wait_healthy(d)
        lb = role(st, "lb-1")["addrs"]["http"]
        pg_drill.AUTH.update(authn.admin_headers(STRATA, d, lb))
        for drill in drills:
            for i in range(args.runs):
                print("==> %s, run %d/%d" % (drill, i + 1, args.runs), flush=True)
                tag = "F%s%d" % (drill.capitalize(), i)
                if drill in ("kill", "stall", "etcd"):
                    r = drill_simple(d, lb, drill, tag, i)
                elif drill == "double":
                    r = drill_double(d, lb, tag, args.lag_mb, args.hold)
                else:
                    r = drill_double(d, lb, tag, args.lag_mb, args.hold,
                                     controller="kill" if i % 2 == 0 else "stop",
                                     store=args.store)
                r["run"] = i + 1
                print("    " + json.dumps(r), flush=True)
                results["runs"].append(r)
                if drill in ("kill", "etcd"):
                    # The supervisor gives up on a role that crashes 5 times within 60 s.
                    time.sleep(12)
    finally:
        run("down", "--dir", d, check=False)
        # The deployment's data (gigabytes of WAL after a few drills) goes with it.
        shutil.rmtree(tmp, ignore_errors=True)
        # Whatever ran is kept, even when a run did not come back.
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "failover-%s-%s.json" % (args.store, started))
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        print("raw: %s" % path)
    lost = sum(r["acked_missing"] for r in results["runs"])
    print("acknowledged writes missing in all runs: %d" % lost)
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
