#!/usr/bin/env python3
"""Data-centre failover drill: the whole primary data centre (us-east) freezes under fixed-rate
load from clients that resolve the service name through the deployment's DNS.

    python3 bench/dc_failover.py --strata target/release/strata [--commit quorum|async]
        [--cut-link] [--seconds 35] [--fault-at 12] [--rate 100] [--clients 8] [--one-way-ms 30]

`strata up` runs two data centres, us-east (the PostgreSQL primary) and us-west (a replica),
each with one balancer and one API server, [[link]] --one-way-ms apart, behind [dns]
(failover policy, ttl_secs 1, checks every 300 ms, fall 1) and with [data] commit = --commit.
An admin is signed up and granted (bench/authn.py) so that clients can create users.

Before the load, directly at each data centre's balancer: writes (POST /users) and reads
(GET /users/ID) in each, and a read in us-west of a write just made in us-east carrying its
commit token (Strata-Read-After), which the replica there serves or else the primary across the
link.

The load: --clients threads share --rate requests/s, open-loop (each request has its intended
start time and its latency counts from then). Each client resolves www.strata.test. through
dns-1 when its last answer's TTL is over (keeping it while DNS does not answer), and alternates
a write (POST /users with a unique firstName, remembered with its id when acknowledged with 201)
and a read (GET of a user created before the load). On a connect failure, a timeout
(--timeout) or an error status it tries the next answered address, if any; a request fails when
no address answered it with success. Each request records its intended time, the data centre
that answered (by the balancer address reached), status and latency.

At --fault-at seconds every process of us-east (as DIR/datacenters.json lists them: PostgreSQL
servers, relays, API servers, balancers — each with its descendants, gathered first and then
stopped in one loop) is frozen with SIGSTOP, as crates/strata/tests/up_datacenters.rs does; the
supervisor, controller and DNS are not (they are shared, outside the data centres). us-west's
relay to us-east's primary keeps running, so WAL already sent is still delivered a link delay
later, as bytes on a real wire would be; --cut-link freezes that relay too, so the bytes in
flight on the link are lost with the data centre (the worst case for asynchronous commit).
--kill kills us-east outright instead: `strata datacenter kill us-east` holds its roles down
and SIGKILLs every process of it (connections are refused or reset rather than hung), and
`strata datacenter start us-east` brings it back at the end. Measured from the freeze: when dns-1 stops answering
us-east (polled every 20 ms), when the controller publishes another primary (cluster.json),
the first acknowledged write, the time until every client has had a success in us-west, and the
failed requests. After the load, every acknowledged write is read back through us-west's
balancer (us-east still frozen): a missing one is a lost acknowledged write. Under async commit
the loss window is the span from the earliest lost write's acknowledgement to the freeze. Then
us-east is thawed and the deployment stopped.

Raw results: bench/results/dc-failover-<commit>-<stamp>.json (the commit, with -dirty when the
tree had uncommitted changes). Everything listens on loopback (127.0.0.0/8; Linux only); every
loop is bounded.
"""
import argparse
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from authn import LONG_TOKENS, admin_headers  # noqa: E402
from benchlib import RESULTS, ROOT, STRATA, build_release, commit_label, descendants, say, thaw, write_result  # noqa: E402
from dns_lb_kill import TtlAnswers, pctl, resolve, strata  # noqa: E402

EAST_IP, WEST_IP = "127.0.0.1", "127.0.12.1"
DC_OF = {EAST_IP: "us-east", WEST_IP: "us-west"}


def user_body(first):
    return {"firstName": first, "lastName": "Drill",
            "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA",
                        "postalCode": "02134"}}


def call(host, port, method, path, headers, body=None, timeout=5.0):
    """(status, headers, body, seconds); status None when nothing answered."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    t = time.monotonic()
    try:
        h = dict(headers)
        data = None
        if body is not None:
            data = json.dumps(body)
            h["content-type"] = "application/json"
        c.request(method, path, data, h)
        r = c.getresponse()
        b = r.read()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), b, time.monotonic() - t
    except (OSError, http.client.HTTPException):
        return None, {}, b"", time.monotonic() - t
    finally:
        c.close()


class Client(threading.Thread):
    """One open-loop client: alternate writes and reads, resolving through DNS as it goes."""

    def __init__(self, k, server, port, schedule, a, auth, read_path, records, acked, lock):
        super().__init__(daemon=True)
        self.k, self.server, self.port, self.schedule = k, server, port, schedule
        self.timeout, self.connect_timeout = a.timeout, a.connect_timeout
        self.auth, self.read_path = auth, read_path
        self.records, self.acked, self.lock = records, acked, lock
        self.answers, self.conns = TtlAnswers(server), {}

    def conn(self, ip):
        c = self.conns.get(ip)
        if c is None:
            c = http.client.HTTPConnection(ip, self.port, timeout=self.connect_timeout)
            self.conns[ip] = c
        return c

    def attempt(self, ip, method, path, body):
        c = self.conn(ip)
        try:
            if c.sock is None:
                c.connect()
            c.sock.settimeout(self.timeout)
            h = dict(self.auth)
            data = None
            if body is not None:
                data = json.dumps(body)
                h["content-type"] = "application/json"
            c.request(method, path, data, h)
            r = c.getresponse()
            b = r.read()
            if r.getheader("connection", "").lower() == "close":
                c.close()
                self.conns.pop(ip, None)
            return r.status, r.getheader("location"), b
        except (OSError, http.client.HTTPException):
            c.close()
            self.conns.pop(ip, None)
            return None, None, b""

    def run(self):
        for n, at in enumerate(self.schedule):
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            addresses = self.answers.addresses()
            write = n % 2 == 0
            first = f"c{self.k}w{n}"
            method, path, body, want = (("POST", "/users", user_body(first), 201) if write
                                        else ("GET", self.read_path, None, 200))
            status, dc, tries, loc = None, None, 0, None
            for i in range(len(addresses)):
                ip = addresses[(n + i) % len(addresses)]
                tries += 1
                status, loc, _ = self.attempt(ip, method, path, body)
                if status == want:
                    dc = DC_OF.get(ip, ip)
                    break
                dc = DC_OF.get(ip, ip)
            done = time.monotonic()
            ok = status == want
            with self.lock:
                self.records.append({"at": at, "lat": done - at, "write": write, "ok": ok,
                                     "status": status, "dc": dc, "tries": tries,
                                     "client": self.k})
                if write and ok and loc:
                    self.acked.append({"first": first, "location": loc, "acked": done, "dc": dc})


def measure_direct(port, auth, n):
    """Latency of writes and reads at each data centre's balancer, before the fault."""
    out = {}
    ids = {}
    for dc, ip in (("us-east", EAST_IP), ("us-west", WEST_IP)):
        writes, reads = [], []
        for i in range(n):
            s, h, _, t = call(ip, port, "POST", "/users", auth, user_body(f"direct-{dc}-{i}"))
            if s == 201:
                writes.append(t)
                ids[dc] = h.get("location")
        for _ in range(n):
            s, _, _, t = call(ip, port, "GET", ids[dc], auth)
            if s == 200:
                reads.append(t)
        out[dc] = {"writes_ms": [round(x * 1000, 2) for x in writes],
                   "reads_ms": [round(x * 1000, 2) for x in reads]}
    # A write in us-east read at once in us-west with its commit token: the replica there
    # serves it once it has replayed that far, else the primary does, across the link.
    cross = []
    for i in range(n):
        s, h, _, _ = call(EAST_IP, port, "POST", "/users", auth, user_body(f"cross-{i}"))
        if s != 201:
            continue
        hdr = dict(auth)
        hdr["strata-read-after"] = h.get("strata-commit", "")
        s, _, _, t = call(WEST_IP, port, "GET", h["location"], hdr)
        if s == 200:
            cross.append(t)
    out["us-west_read_after_us-east_write_ms"] = [round(x * 1000, 2) for x in cross]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commit", choices=["quorum", "async"], default="quorum")
    ap.add_argument("--seconds", type=float, default=35.0, help="length of the load (at most 300)")
    ap.add_argument("--fault-at", type=float, default=12.0, help="seconds into the load")
    ap.add_argument("--rate", type=float, default=100.0, help="requests/s over all clients")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=1.0, help="a request's timeout, s")
    ap.add_argument("--connect-timeout", type=float, default=0.3)
    ap.add_argument("--one-way-ms", type=int, default=30, help="[[link]] one_way_ms")
    ap.add_argument("--kill", action="store_true",
                    help="kill us-east outright (strata datacenter kill) instead of freezing it")
    ap.add_argument("--cut-link", action="store_true",
                    help="also freeze us-west's relays to us-east's servers (the link's bytes in flight are lost)")
    ap.add_argument("--direct", type=int, default=10, help="direct writes/reads per DC before the load")
    ap.add_argument("--strata", default=None, help="a built strata binary (default: build release)")
    ap.add_argument("--out", default=RESULTS)
    a = ap.parse_args()
    if a.kill and a.cut_link:
        sys.exit("--kill or --cut-link, not both: a killed primary takes the WAL on the link with it")
    if not 0 < a.fault_at < a.seconds <= 300 or a.clients < 1 or not 0 < a.rate <= 2000:
        sys.exit("need 0 < --fault-at < --seconds <= 300, --clients >= 1, 0 < --rate <= 2000")
    if a.strata:
        binary = os.path.abspath(a.strata)
    else:
        build_release()
        binary = STRATA
    commit = commit_label()
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    work = tempfile.mkdtemp(prefix="dc-failover-")
    os.chmod(work, 0o755)  # PostgreSQL runs as `postgres` when strata runs as root
    d = os.path.join(work, "deploy")
    topo = os.path.join(work, "topology.toml")
    commit_line = f'commit = "{a.commit}"\n'
    with open(topo, "w") as f:
        f.write(f'name = "dc-failover"\n[lb]\n[api]\ncount = 1\n'
                f'[data]\nengine = "postgres"\n{commit_line}'
                f'[dns]\nttl_secs = 1\ninterval_ms = 300\ntimeout_ms = 200\nrise = 2\nfall = 1\n'
                f'[[datacenter]]\nname = "us-east"\n[[datacenter]]\nname = "us-west"\n'
                f'[[link]]\nbetween = ["us-east", "us-west"]\none_way_ms = {a.one_way_ms}\n')
    say(f"strata up (us-east, us-west {a.one_way_ms} ms apart, commit = {a.commit}) in {d}")
    strata(binary, "up", "-d", "--port", "0", "-f", topo, "--dir", d, env=LONG_TOKENS)
    frozen = []
    try:
        status = json.loads(strata(binary, "status", "--json", "--dir", d).stdout)
        roles = {r["name"]: r for r in status["roles"]}
        with open(os.path.join(d, "datacenters.json")) as f:
            dcs = {x["name"]: x for x in json.load(f)["datacenters"]}
        host, dport = roles["dns-1"]["addrs"]["dns"].rsplit(":", 1)
        server = (host, int(dport))
        port = int(roles["us-east-lb-1"]["addrs"]["http"].rsplit(":", 1)[1])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ans = resolve(server)
            if ans and ans[0] == [EAST_IP]:
                break
            time.sleep(0.1)
        say(f"dns-1 {host}:{dport} answers {ans}; public port {port}")
        auth = admin_headers(binary, d, f"{EAST_IP}:{port}")
        s, h, _, _ = call(EAST_IP, port, "POST", "/users", auth, user_body("read-target"))
        if s != 201:
            sys.exit(f"cannot create the read target: {s}")
        read_path = h["location"]
        time.sleep(1.0)
        say(f"direct latency at each data centre's balancer ({a.direct} writes, {a.direct} reads each)")
        direct = measure_direct(port, auth, a.direct)
        for k, v in direct.items():
            say(f"  {k}: {v}")

        start = time.monotonic() + 0.5
        per = a.clients / a.rate
        records, acked, lock = [], [], threading.Lock()
        clients = []
        for k in range(a.clients):
            first = start + k / a.rate
            schedule = [first + i * per for i in range(int((start + a.seconds - first) / per))]
            clients.append(Client(k, server, port, schedule, a, auth, read_path, records, acked, lock))
        for c in clients:
            c.start()

        def progress():
            with lock:
                say(f"t={time.monotonic() - start:5.1f}s sent={len(records)} "
                    f"failed={sum(1 for r in records if not r['ok'])} acked_writes={len(acked)} "
                    f"west={sum(1 for r in records if r['ok'] and r['dc'] == 'us-west')}")

        fault_at = start + a.fault_at
        while time.monotonic() < fault_at:
            time.sleep(min(1.0, max(0.0, fault_at - time.monotonic())))
            progress()
        # What `strata status` shows of us-west's replication just before the fault: the loss
        # window a failure of us-east would cost right now (async commit).
        shown_at = time.monotonic()
        shown = None
        st = strata(binary, "status", "--json", "--dir", d, check=False)
        try:
            for dc in json.loads(st.stdout)["path"]["datacenters"]:
                if dc["name"] == "us-west":
                    shown = dc.get("replication")
        except (ValueError, KeyError, TypeError):
            pass
        say(f"strata status shows us-west's replication as {shown}")
        east = dcs["us-east"]
        # Every process first (descendants included), then one tight loop of SIGSTOPs, the
        # databases first: the data centre stops at one instant, not role by role.
        names = east["databases"] + east["relays"] + east["apis"] + east["balancers"]
        if a.cut_link:
            # us-west's relays to us-east's servers: the bytes on the link are lost too.
            names += [r for r in dcs["us-west"]["relays"]
                      if r.rsplit("-relay-", 1)[1] in east["databases"]]
        pids = []
        for nm in names:
            pids += descendants(roles[nm]["pid"]) + [roles[nm]["pid"]]
        fault = time.monotonic()
        if a.kill:
            out = strata(binary, "datacenter", "kill", "us-east", "--dir", d).stdout.strip()
            # The command sends its SIGKILLs last, in one loop: the fault is when it returns
            # (tens of ms after it was started, during which us-east still acknowledged writes).
            froze_ms = (time.monotonic() - fault) * 1000
            fault = time.monotonic()
            say(f"strata datacenter kill us-east took {froze_ms:.2f} ms: {out.splitlines()[0]}")
        else:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    frozen.append(pid)
                except OSError:
                    pass
            froze_ms = (time.monotonic() - fault) * 1000
            say(f"SIGSTOP {len(frozen)} processes in {froze_ms:.2f} ms: {', '.join(names)}")
        cluster_path = os.path.join(d, "postgres", "cluster.json")
        dns_gone, promoted, new_primary = None, None, None
        end = start + a.seconds
        last_say = time.monotonic()
        while time.monotonic() < end:
            t = time.monotonic() - fault
            if dns_gone is None:
                ans = resolve(server, timeout=0.2)
                if ans and ans[0] and EAST_IP not in ans[0]:
                    dns_gone = t
                    say(f"dns-1 stopped answering us-east {t * 1000:.0f} ms after the freeze ({ans[0]})")
            if promoted is None:
                try:
                    with open(cluster_path) as f:
                        p = json.load(f).get("primary")
                    if p and p not in east["databases"]:
                        promoted, new_primary = t, p
                        say(f"the controller published {p} as primary {t * 1000:.0f} ms after the freeze")
                except (OSError, ValueError):
                    pass
            if time.monotonic() - last_say >= 1.0:
                last_say = time.monotonic()
                progress()
            time.sleep(0.02)
        for c in clients:
            c.join(timeout=a.timeout * 4 + 10)

        # Read back every acknowledged write through us-west, us-east still frozen.
        time.sleep(1.0)
        say(f"reading back {len(acked)} acknowledged writes through us-west")
        lost, unknown = [], []
        readback_end = time.monotonic() + 90
        for w in acked:
            got = None
            for _ in range(3):
                if time.monotonic() >= readback_end:
                    break
                s, _, b, _ = call(WEST_IP, port, "GET", w["location"], auth, timeout=3.0)
                if s == 200:
                    got = json.loads(b).get("firstName") == w["first"]
                    break
                if s == 404:
                    got = False
                    break
                time.sleep(0.2)
            if got is None:
                unknown.append(w)
            elif not got:
                lost.append(w)
        thaw(frozen)
        frozen = []
        if a.kill:
            started = time.monotonic()
            strata(binary, "datacenter", "start", "us-east", "--dir", d)
            say(f"us-east started again: every role ready in {time.monotonic() - started:.1f} s")
        else:
            say("us-east thawed")

        def rel(x):
            return None if x is None else round((x - fault) * 1000, 1)

        def ms(x):
            return None if x is None else round(x * 1000, 2)

        after = [r for r in records if r["at"] >= fault]
        first_write = min((r["at"] + r["lat"] for r in after if r["write"] and r["ok"]), default=None)
        first_west = {}
        for r in records:
            if r["at"] >= fault and r["ok"] and r["dc"] == "us-west":
                done = r["at"] + r["lat"]
                first_west[r["client"]] = min(first_west.get(r["client"], done), done)
        all_west = max(first_west.values()) if len(first_west) == a.clients else None
        failed = [r for r in records if not r["ok"]]
        lost_before = [w for w in lost if w["acked"] < fault]
        window = (fault - min(w["acked"] for w in lost_before)) if lost_before else 0.0

        def lat(rs, dc=None, write=None):
            xs = [r["lat"] for r in rs if r["ok"] and (dc is None or r["dc"] == dc)
                  and (write is None or r["write"] == write)]
            return {"n": len(xs), "p50_ms": ms(pctl(xs, 0.5)), "p99_ms": ms(pctl(xs, 0.99))}

        before = [r for r in records if r["at"] < fault]
        settled = [r for r in records if r["at"] >= fault + 5.0]
        res = {
            "commit": commit,
            "fault": "kill" if a.kill else "freeze",
            "binary": binary,
            "started_utc": started_utc,
            "settings": vars(a),
            "direct": direct,
            "frozen": names,
            "frozen_processes": len(pids),
            "freeze_took_ms": round(froze_ms, 3),
            "sent": len(records),
            "writes_sent": sum(1 for r in records if r["write"]),
            "failed": len(failed),
            "failed_writes": sum(1 for r in failed if r["write"]),
            "failed_reads": sum(1 for r in failed if not r["write"]),
            "failed_by_status": {s: sum(1 for r in failed if str(r["status"]) == s)
                                 for s in sorted({str(r["status"]) for r in failed})},
            "acked_writes": len(acked),
            "lost_writes": len(lost),
            "lost_writes_acked_before_fault": len(lost_before),
            "unreadable_writes": len(unknown),
            "loss_window_ms": ms(window),
            "status_replication_before_fault": shown,
            "status_asked_before_fault_ms": round((fault - shown_at) * 1000, 1),
            "lost": [{"first": w["first"], "acked_rel_fault_ms": rel(w["acked"]), "dc": w["dc"]}
                     for w in lost],
            "dns_stopped_answering_east_ms": ms(dns_gone),
            "new_primary": new_primary,
            "primary_published_ms": ms(promoted),
            "first_acked_write_after_fault_ms": rel(first_write),
            "every_client_served_in_west_ms": rel(all_west),
            "clients_served_in_west": len(first_west),
            "latency_before": {"read_us-east": lat(before, "us-east", False),
                               "write_us-east": lat(before, "us-east", True)},
            "latency_from_fault_plus_5s": {"read_us-west": lat(settled, "us-west", False),
                                           "write_us-west": lat(settled, "us-west", True)},
            "max_latency_after_fault_ms": ms(max((r["lat"] for r in after), default=None)),
            "timeline": [{"t_ms": rel(r["at"]), "lat_ms": ms(r["lat"]), "w": r["write"],
                          "ok": r["ok"], "status": r["status"], "dc": r["dc"]}
                         for r in sorted(records, key=lambda r: r["at"])
                         if fault - 2 <= r["at"] <= fault + 8],
        }
        path = write_result(a.out, "dc-failover", commit, res)

        def med(xs):
            return pctl(xs, 0.5)

        dr = direct
        print(f"| measure (commit = {a.commit}, link {a.one_way_ms} ms one way"
              f"{', cut with the freeze' if a.cut_link else ''}"
              f"{', us-east killed outright' if a.kill else ''}) | result |")
        print("|---|---|")
        print(f"| write at us-east's balancer / at us-west's (median of {a.direct}, before) | "
              f"{med(dr['us-east']['writes_ms'])} / {med(dr['us-west']['writes_ms'])} ms |")
        print(f"| read at us-east's balancer / at us-west's (local replica; median) | "
              f"{med(dr['us-east']['reads_ms'])} / {med(dr['us-west']['reads_ms'])} ms |")
        print(f"| read in us-west of a write just made in us-east, with its token (median) | "
              f"{med(dr['us-west_read_after_us-east_write_ms'])} ms |")
        print(f"| requests ({a.rate:.0f}/s open-loop, {a.clients} clients, {a.seconds:.0f} s, "
              f"half writes) | {res['sent']} sent, **{res['failed']} failed** "
              f"({res['failed_writes']} writes, {res['failed_reads']} reads) |")
        print(f"| freeze of us-east → dns-1 stops answering it (checks 300 ms, fall 1) | "
              f"{res['dns_stopped_answering_east_ms']} ms |")
        print(f"| → the controller publishes {new_primary} as primary | {res['primary_published_ms']} ms |")
        print(f"| → first acknowledged write | {res['first_acked_write_after_fault_ms']} ms |")
        print(f"| → every client served in us-west (TTL 1 s) | {res['every_client_served_in_west_ms']} ms "
              f"({len(first_west)}/{a.clients} clients) |")
        print(f"| acknowledged writes read back through us-west | {res['acked_writes']} acknowledged, "
              f"**{res['lost_writes']} lost**, {res['unreadable_writes']} unreadable |")
        print(f"| loss window (earliest lost write's acknowledgement → freeze) | {res['loss_window_ms']} ms |")
        if shown:
            print(f"| `strata status` just before the freeze: us-west behind pg-1 by | "
                  f"{shown.get('behindBytes')} B, write lag {shown.get('lagMs')} ms |")
        b, s_ = res["latency_before"], res["latency_from_fault_plus_5s"]
        print(f"| p50/p99 before: read / write (us-east) | {b['read_us-east']['p50_ms']}/{b['read_us-east']['p99_ms']}"
              f" / {b['write_us-east']['p50_ms']}/{b['write_us-east']['p99_ms']} ms |")
        print(f"| p50/p99 from freeze + 5 s: read / write (us-west) | {s_['read_us-west']['p50_ms']}/"
              f"{s_['read_us-west']['p99_ms']} / {s_['write_us-west']['p50_ms']}/{s_['write_us-west']['p99_ms']} ms |")
        say(f"raw results: {os.path.relpath(path, ROOT)}")
    finally:
        thaw(frozen)
        strata(binary, "down", "--dir", d, check=False)


if __name__ == "__main__":
    sys.exit(main())
