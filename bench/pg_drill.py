#!/usr/bin/env python3
"""Data-tier drills on a replicated deployment (deploy/04-replicas.toml: a balancer, 3 API
servers, a PostgreSQL primary with 2 streaming replicas in a synchronous quorum, strata control).

    cargo build --release -p strata && python3 bench/pg_drill.py [--runs 5] [--pairs 10000]

1. Primary drills, --runs times each, under open-loop load through the balancer (writes create
   users at a fixed rate and record every acknowledgement; reads fetch acknowledged users with
   their commit token): `kill -9` of the primary's postmaster, and a stalled primary (SIGSTOP
   of the postmaster and all its backends, until it has been failed over). Per run: seconds from the fault until writes are
   acknowledged again, failed reads, acknowledged writes missing afterwards (read from the
   primary at the end).
2. Read-your-writes: --pairs write-then-immediately-read pairs, each write through one API
   server and its read through another, with the commit token, then the same without it;
   counts stale reads. Twice: updates of one user (without the token the reading server's
   in-process cache, 1 s TTL, answers), and creations of new users (no cache holds them: a
   stale read is a replica that has not replayed the insert yet).

Everything runs on 127.0.0.1 in a temporary directory; every load loop is bounded in time
and count. Needs PostgreSQL (Debian: postgresql-15) like the test suite.
"""

import argparse
import http.client
import json
import re
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import authn  # noqa: E402  (bench/authn.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(ROOT, "target", "release", "strata")


def run(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check,
                          env={**os.environ, **authn.LONG_TOKENS})


# An admin's Authorization header, sent with every request (set in main()).
AUTH = {}


def status(d):
    return json.loads(run("status", "--dir", d, "--json").stdout)


def role(st, name):
    return next(r for r in st["roles"] if r["name"] == name)


def primary_of(st):
    for r in st["roles"]:
        db = r.get("database")
        if db and db.get("role") == "primary":
            return r
    return None


class Client:
    """One keep-alive HTTP connection per thread and target."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                h = {"content-type": "application/json"} if body is not None else {}
                h.update(AUTH)
                h.update(headers or {})
                self.conn.request(method, path, body, h)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, dict(r.getheaders()), data
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt == 1:
                    return 0, {}, b""
        return 0, {}, b""


def children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def profile(first, last):
    return json.dumps({"firstName": first, "lastName": last,
                       "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA",
                                   "postalCode": "02134"}})


def wait_healthy(d, limit=60):
    """Until every role is healthy and both replicas stream with no lag."""
    deadline = time.time() + limit
    while time.time() < deadline:
        st = status(d)
        dbs = [r for r in st["roles"] if r["kind"] == "postgres"]
        if all(r["healthy"] for r in st["roles"]) and sum(
                1 for r in dbs if r["database"] and r["database"]["role"] == "replica"
                and r["database"]["lagBytes"] == 0) == 2 and primary_of(st):
            return st
        time.sleep(0.5)
    raise SystemExit("the deployment did not return to full health within %d s:\n%s"
                     % (limit, run("status", "--dir", d, check=False).stdout))


def drill(d, lb, fault, tag, rate=50.0, before=2.0, after=10.0):
    """Open-loop writes and token reads through the balancer around one fault."""
    st = wait_healthy(d)
    prim = primary_of(st)
    pid_file = os.path.join(d, "postgres", prim["name"], "postmaster.pid")
    with open(pid_file) as f:
        pid = int(f.readline())
    acked, failed_writes, reads = [], [], {"ok": 0, "failed": 0, "kinds": {}}
    lock = threading.Lock()
    start = time.time()
    stop_at = start + before + after
    fault_at = [None]

    def writer(slot):
        c = Client(lb)
        n = 0
        while True:
            t = start + (n * 4 + slot) / rate  # 4 writer threads share the rate
            if t >= stop_at:
                return
            time.sleep(max(0.0, t - time.time()))
            sent = time.time()
            code, h, _ = c.request("POST", "/users", profile("D%d" % n, tag))
            done = time.time()
            with lock:
                if code == 201:
                    acked.append((sent, done, h.get("location"), h.get("strata-commit")))
                else:
                    failed_writes.append((sent, code))
            n += 1

    def reader(slot):
        c = Client(lb)
        n = 0
        while True:
            t = start + (n * 4 + slot) / rate
            if t >= stop_at:
                return
            time.sleep(max(0.0, t - time.time()))
            with lock:
                target = acked[-1 - (n % max(1, min(len(acked), 50)))] if acked else None
            n += 1
            if not target:
                continue
            code, _, _ = c.request("GET", target[2], headers={"strata-read-after": target[3]})
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
    time.sleep(before)
    fault_at[0] = time.time()
    if fault == "kill":
        os.kill(pid, signal.SIGKILL)
    else:
        # The whole server: the postmaster and every backend and WAL sender.
        for p in [*children(pid), pid]:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
    for t in threads:
        t.join()
    if fault == "stall":
        for p in [*children(pid), pid]:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
    f = fault_at[0]
    if fault == "kill":
        # The supervisor gives up on a role that crashes 5 times within 60 s (as it should);
        # space the kills so that the drill measures restarts, not that policy.
        time.sleep(max(0.0, 16.0 - (time.time() - f)))
    after_fault = [a for a in acked if a[0] > f]
    recovered = min((a[1] for a in after_fault), default=None)
    # Every acknowledged write must be on the primary (wait for the cluster to settle first).
    st = wait_healthy(d)
    prim2 = primary_of(st)
    port = prim2["addrs"]["postgres"].rsplit(":", 1)[1]
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", port, "-U", "strata", "-d", "strata",
                          "-tAc", "SELECT id FROM users WHERE profile->>'lastName' = '%s'" % tag],
                         capture_output=True, text=True, check=True).stdout.split()
    have = set(out)
    missing = [a for a in acked if a[2].rsplit("/", 1)[1] not in have]
    return {
        "fault": fault, "old_primary": prim["name"], "new_primary": prim2["name"],
        "writes_sent": len(acked) + len(failed_writes), "writes_acked": len(acked),
        "writes_failed": len(failed_writes),
        "write_outage_s": round(recovered - f, 2) if recovered else None,
        "reads_ok": reads["ok"], "reads_failed": reads["failed"], "read_failures": reads["kinds"],
        "acked_missing": len(missing),
    }


def ryw(d, apis, pairs, token):
    """Write through one API server, read at once through another; count stale reads."""
    clients = [Client(a) for a in apis]
    code, h, _ = clients[0].request("POST", "/users", profile("R", "Pairs"))
    assert code == 201, code
    loc = h["location"]
    stale = errors = 0
    t0 = time.time()
    for i in range(pairs):
        w, r = clients[i % 3], clients[(i + 1) % 3]
        first = "P%d" % i
        code, h, _ = w.request("PUT", loc, profile(first, "Pairs"))
        if code != 200:
            errors += 1
            continue
        headers = {"strata-read-after": h["strata-commit"]} if token else {}
        code, _, body = r.request("GET", loc, headers=headers)
        if code != 200:
            errors += 1
        elif json.loads(body)["firstName"] != first:
            stale += 1
        if (i + 1) % 2000 == 0:
            print("    %d/%d pairs (%s token), %d stale so far" % (i + 1, pairs, "with" if token else "without", stale), flush=True)
    return {"pairs": pairs, "token": token, "stale": stale, "errors": errors,
            "pairs_per_s": round(pairs / (time.time() - t0))}


def ryw_fresh(d, apis, pairs, token):
    """Create a new user through one API server, read it at once through another: no cache
    holds it yet, so a stale read here is a replica that has not replayed the insert (404)."""
    clients = [Client(a) for a in apis]
    stale = errors = 0
    t0 = time.time()
    for i in range(pairs):
        w, r = clients[i % 3], clients[(i + 1) % 3]
        code, h, _ = w.request("POST", "/users", profile("F%d" % i, "Fresh"))
        if code != 201:
            errors += 1
            continue
        headers = {"strata-read-after": h["strata-commit"]} if token else {}
        code, _, _ = r.request("GET", h["location"], headers=headers)
        if code == 404:
            stale += 1
        elif code != 200:
            errors += 1
    return {"pairs": pairs, "token": token, "fresh_users": True, "stale": stale,
            "errors": errors, "pairs_per_s": round(pairs / (time.time() - t0))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=10000)
    ap.add_argument("--only-ryw", action="store_true", help="skip the primary drills")
    ap.add_argument("--skip-ryw", action="store_true", help="skip the read-your-writes runs")
    ap.add_argument("--commit", choices=["quorum", "async"], default="quorum",
                    help="the topology's commit mode (async: what can a failover lose?)")
    args = ap.parse_args()
    if not os.path.exists(STRATA):
        sys.exit("build first: cargo build --release -p strata")
    tmp = tempfile.mkdtemp(prefix="strata-pgdrill-")
    os.chmod(tmp, 0o755)  # the postgres user must reach the data directories
    d = os.path.join(tmp, "deploy")
    topo = os.path.join(ROOT, "deploy", "04-replicas.toml")
    if args.commit != "quorum":
        with open(topo) as f:
            text = f.read()
        topo = os.path.join(tmp, "replicas-%s.toml" % args.commit)
        with open(topo, "w") as f:
            f.write(re.sub(r'(?m)^commit\s*=.*$', 'commit = "%s"' % args.commit, text))
    print("==> strata up -f deploy/04-replicas.toml (commit = %s)" % args.commit, flush=True)
    up = run("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
    if up.returncode != 0:
        sys.exit(up.stderr)
    results = {"commit": args.commit, "drills": [], "ryw": []}
    try:
        st = wait_healthy(d)
        lb = role(st, "lb-1")["addrs"]["http"]
        apis = [role(st, "api-%d" % i)["addrs"]["http"] for i in (1, 2, 3)]
        AUTH.update(authn.admin_headers(STRATA, d, lb))
        for fault in () if args.only_ryw else ("kill", "stall"):
            for i in range(args.runs):
                print("==> %s drill, run %d/%d" % (fault, i + 1, args.runs), flush=True)
                r = drill(d, lb, fault, "Drill%s%d" % (fault, i))
                print("    " + json.dumps(r), flush=True)
                results["drills"].append(r)
        for token in () if args.skip_ryw else (True, False):
            print("==> read-your-writes, %d pairs, token %s" % (args.pairs, "on" if token else "off"), flush=True)
            r = ryw(d, apis, args.pairs, token)
            print("    " + json.dumps(r), flush=True)
            results["ryw"].append(r)
            print("==> read-your-writes on new users, %d pairs, token %s" % (args.pairs, "on" if token else "off"), flush=True)
            r = ryw_fresh(d, apis, args.pairs, token)
            print("    " + json.dumps(r), flush=True)
            results["ryw"].append(r)
    finally:
        run("down", "--dir", d, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
