#!/usr/bin/env python3
"""Balancer (or edge) kill behind DNS: one of a data centre's two balancers (or edges) killed
and frozen under fixed-rate load from clients that resolve the service name through the
deployment's DNS.

    cargo build --release -p strata && python3 bench/dns_lb_kill.py [--seconds 20] [--rate 200]

`strata up` runs `[lb] count = 2` (lb-1 on 127.0.0.1:PORT, lb-2 on 127.0.10.2:PORT) in front
of two API servers, and `[dns]` (dns-1) answering www.strata.test. with the healthy balancers.
--clients client threads share --rate requests/s, open-loop: each request has its intended
start time, and its latency is counted from then, so a stalled client is not hidden
(coordinated omission). Each client resolves the name through dns-1 over UDP when its last
answer's TTL is over (keeping that answer while DNS does not answer), sends GET /users/12 to
one of the addresses (a different one first each time), and on a connect failure or a
timeout (--timeout) tries the other one.

At --fault-at seconds the victim (--victim, default lb-2) is killed with SIGKILL; the
supervisor restarts it within a moment, and as soon as the new process is ready it is frozen
with SIGSTOP, so that it stays dead (a hung balancer: its kernel still accepts connections,
nothing answers them). With --fault freeze it is only frozen. Measured: requests sent, failed
(no address answered), needing a retry on the other address, the time from the SIGKILL until
dns-1 stops answering the victim (polled every 20 ms), and p50/p99 latency before the fault
and from the fault to the end. The victim is thawed and the deployment stopped at the end.

With --entry edges the public entry is two CDN edges in front of a shield edge
(`[edge] count = 2, shield = true`; edge-1 on 127.0.0.1:PORT, edge-2 on 127.0.9.2:PORT), which
dns-1 hands out instead of the balancer, and the victim is an edge (default edge-2).

Raw results: bench/results/dns-lb-kill-<commit>-<stamp>.json (dns-edge-kill-… with edges) (the commit, with -dirty when
the tree had uncommitted changes). Everything listens on loopback (127.0.0.0/8; Linux only);
every loop is bounded by --seconds.
"""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RESULTS, ROOT, STRATA, build_release, commit_label, say, thaw, write_result  # noqa: E402

NAME = "www.strata.test."


def dns_query(name, qid):
    out = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0" + struct.pack(">HH", 1, 1)


def skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n


def resolve(server, timeout=0.5):
    """The A records dns-1 answers for NAME and their TTL, or None when it does not answer."""
    qid = random.randrange(65536)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(dns_query(NAME, qid), server)
        while True:
            msg, _ = s.recvfrom(1232)
            if struct.unpack(">H", msg[:2])[0] == qid:
                break
    except OSError:
        return None
    finally:
        s.close()
    _, _, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    i = 12
    for _ in range(qd):
        i = skip_name(msg, i) + 4
    ips, ttl = [], 0
    for _ in range(an):
        i = skip_name(msg, i)
        rtype, _, ttl, rdlen = struct.unpack(">HHIH", msg[i:i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            ips.append(socket.inet_ntoa(msg[i:i + 4]))
        i += rdlen
    return sorted(ips), ttl


class TtlAnswers:
    """A client's resolver cache: the name asked of `server` again once the last answer's TTL
    is over (its answer kept while DNS does not answer; asked again 0.2 s later)."""

    def __init__(self, server):
        self.server, self.cached, self.expires = server, [], 0.0

    def addresses(self):
        now = time.monotonic()
        if now >= self.expires or not self.cached:
            answer = resolve(self.server)
            if answer and answer[0]:
                self.cached, ttl = answer
                self.expires = now + max(ttl, 0)
            else:
                self.expires = now + 0.2
        return self.cached


def strata(binary, *args, check=True, env=None):
    r = subprocess.run([binary, *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if check and r.returncode != 0:
        sys.exit(f"strata {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def state(d):
    with open(os.path.join(d, "state.json")) as f:
        return {r["name"]: r for r in json.load(f)["roles"]}


def pctl(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else None


class Client(threading.Thread):
    """One open-loop client: its share of the schedule, resolving through DNS as it goes."""

    def __init__(self, k, server, port, schedule, timeout, connect_timeout, records, lock):
        super().__init__(daemon=True)
        self.k, self.server, self.port, self.schedule = k, server, port, schedule
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.records, self.lock = records, lock
        self.answers, self.conns = TtlAnswers(server), {}

    def conn(self, ip):
        c = self.conns.get(ip)
        if c is None:
            c = http.client.HTTPConnection(ip, self.port, timeout=self.connect_timeout)
            self.conns[ip] = c
        return c

    def attempt(self, ip):
        c = self.conn(ip)
        try:
            if c.sock is None:
                c.connect()
            c.sock.settimeout(self.timeout)
            c.request("GET", "/users/12")
            r = c.getresponse()
            r.read()
            return r.status == 200
        except (OSError, http.client.HTTPException):
            c.close()
            self.conns.pop(ip, None)
            return False

    def run(self):
        n = self.k
        for at in self.schedule:
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            addresses = self.answers.addresses()
            n += 1
            tries, ok = 0, False
            for i in range(len(addresses)):
                ip = addresses[(n + i) % len(addresses)]
                tries += 1
                if self.attempt(ip):
                    ok = True
                    break
            with self.lock:
                self.records.append((at, time.monotonic() - at, ok, tries > 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the load (at most 300)")
    ap.add_argument("--fault-at", type=float, default=6.0, help="seconds into the load")
    ap.add_argument("--rate", type=float, default=200.0, help="requests/s over all clients")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=1.0, help="a request's timeout, s")
    ap.add_argument("--connect-timeout", type=float, default=0.3)
    ap.add_argument("--entry", choices=["balancers", "edges"], default="balancers",
                    help="what dns-1 hands out: two balancers, or two edges before a shield")
    ap.add_argument("--victim", choices=["lb-1", "lb-2", "edge-1", "edge-2"], default=None,
                    help="default: lb-2, or edge-2 with --entry edges")
    ap.add_argument("--fault", choices=["kill+freeze", "freeze"], default="kill+freeze")
    ap.add_argument("--ttl", type=int, default=1, help="[dns] ttl_secs")
    ap.add_argument("--interval-ms", type=int, default=500, help="[dns] interval_ms")
    ap.add_argument("--check-timeout-ms", type=int, default=300, help="[dns] timeout_ms")
    ap.add_argument("--fall", type=int, default=1, help="[dns] fall")
    ap.add_argument("--strata", default=None, help="a built strata binary (default: build release)")
    ap.add_argument("--out", default=RESULTS)
    a = ap.parse_args()
    if not 0 < a.fault_at < a.seconds <= 300:
        sys.exit("need 0 < --fault-at < --seconds <= 300")
    edges = a.entry == "edges"
    a.victim = a.victim or ("edge-2" if edges else "lb-2")
    if a.victim.startswith("edge") != edges:
        sys.exit(f"--victim {a.victim} is not one of the entries {a.entry}: pick "
                 + ("edge-1 or edge-2" if edges else "lb-1 or lb-2"))
    if a.strata:
        binary = a.strata
    else:
        build_release()
        binary = STRATA
    commit = commit_label()
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    work = tempfile.mkdtemp(prefix="dns-lb-kill-")
    d = os.path.join(work, "deploy")
    topo = os.path.join(work, "topology.toml")
    entry = ("[lb]\n[edge]\ncount = 2\nshield = true\ndisk_mib = 0\n" if edges
             else "[lb]\ncount = 2\n")
    with open(topo, "w") as f:
        f.write(f'name = "dns-{a.entry}-kill"\n{entry}[api]\ncount = 2\n'
                f'[dns]\nttl_secs = {a.ttl}\ninterval_ms = {a.interval_ms}\n'
                f'timeout_ms = {a.check_timeout_ms}\nrise = 2\nfall = {a.fall}\n')
    say(f"strata up ({'two edges and a shield' if edges else '[lb] count = 2'}, [dns]) in {d}")
    strata(binary, "up", "-d", "--port", "0", "-f", topo, "--dir", d)
    frozen = []
    try:
        roles = state(d)
        host, port = roles["dns-1"]["addrs"]["dns"].rsplit(":", 1)
        server = (host, int(port))
        victim_ip, public = roles[a.victim]["addrs"]["http"].rsplit(":", 1)
        public = int(public)
        answer = resolve(server)
        say(f"dns-1 {host}:{port} answers {NAME} with {answer}; public port {public}")
        if not answer or len(answer[0]) != 2:
            sys.exit(f"dns-1 does not answer both {a.entry}")

        start = time.monotonic() + 0.5
        per = a.clients / a.rate
        records, lock = [], threading.Lock()
        clients = []
        for k in range(a.clients):
            first = start + k / a.rate
            schedule = [first + i * per for i in range(int((start + a.seconds - first) / per))]
            clients.append(Client(k, server, public, schedule, a.timeout, a.connect_timeout, records, lock))
        for c in clients:
            c.start()

        fault_at = start + a.fault_at
        while time.monotonic() < fault_at:
            time.sleep(min(1.0, max(0.0, fault_at - time.monotonic())))
            with lock:
                say(f"t={time.monotonic() - start:4.1f}s sent={len(records)} "
                    f"failed={sum(1 for r in records if not r[2])}")
        old_pid = state(d)[a.victim]["pid"]
        killed = time.monotonic()
        if a.fault == "kill+freeze":
            os.kill(old_pid, signal.SIGKILL)
            say(f"SIGKILL {a.victim} (pid {old_pid}); freezing its restart as soon as it is ready")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                r = state(d)[a.victim]
                if r.get("pid") and r["pid"] != old_pid and r["state"] == "ready":
                    os.kill(r["pid"], signal.SIGSTOP)
                    frozen.append(r["pid"])
                    say(f"SIGSTOP {a.victim} (pid {r['pid']}) "
                        f"{(time.monotonic() - killed) * 1000:.0f} ms after the kill")
                    break
                time.sleep(0.01)
        else:
            os.kill(old_pid, signal.SIGSTOP)
            frozen.append(old_pid)
            say(f"SIGSTOP {a.victim} (pid {old_pid})")
        gone_after, answers = None, []
        end = start + a.seconds
        last_say = time.monotonic()
        while time.monotonic() < end:
            ans = resolve(server, timeout=0.2)
            t = time.monotonic() - killed
            answers.append((round(t, 3), ans[0] if ans else None))
            if gone_after is None and ans and ans[0] and victim_ip not in ans[0]:
                gone_after = t
                say(f"dns-1 stopped answering {a.victim} ({victim_ip}) {t * 1000:.0f} ms after the kill")
            if time.monotonic() - last_say >= 1.0:
                last_say = time.monotonic()
                with lock:
                    say(f"t={time.monotonic() - start:4.1f}s sent={len(records)} "
                        f"failed={sum(1 for r in records if not r[2])} "
                        f"retried={sum(1 for r in records if r[3])}")
            time.sleep(0.02)
        for c in clients:
            c.join(timeout=a.timeout * 4 + 5)

        before = [r[1] for r in records if r[0] < killed]
        during = [r[1] for r in records if r[0] >= killed]

        def ms(x):
            return None if x is None else round(x * 1000, 2)

        res = {
            "commit": commit,
            "binary": binary,
            "started_utc": started_utc,
            "settings": vars(a),
            "victim_ip": victim_ip,
            "sent": len(records),
            "failed": sum(1 for r in records if not r[2]),
            "retried": sum(1 for r in records if r[3]),
            "dns_stopped_answering_victim_ms": ms(gone_after),
            "p50_before_ms": ms(pctl(before, 0.5)),
            "p99_before_ms": ms(pctl(before, 0.99)),
            "p50_during_ms": ms(pctl(during, 0.5)),
            "p99_during_ms": ms(pctl(during, 0.99)),
            "max_during_ms": ms(max(during) if during else None),
            "answers_after_fault": answers[:: max(1, len(answers) // 200)],
        }
        path = write_result(a.out, "dns-edge-kill" if edges else "dns-lb-kill", commit, res)
        print("| measure | result |")
        print("|---|---|")
        print(f"| requests ({a.rate:.0f}/s open-loop, {a.clients} clients, {a.seconds:.0f} s) | "
              f"{res['sent']} sent, **{res['failed']} failed**, {res['retried']} needed the other address |")
        print(f"| {a.fault} of {a.victim} → dns-1 stops answering it "
              f"(checks every {a.interval_ms} ms, fall {a.fall}) | {res['dns_stopped_answering_victim_ms']} ms |")
        print(f"| p50 / p99 before the fault | {res['p50_before_ms']} / {res['p99_before_ms']} ms |")
        print(f"| p50 / p99 / max from the fault to the end | {res['p50_during_ms']} / "
              f"{res['p99_during_ms']} / {res['max_during_ms']} ms |")
        say(f"raw results: {os.path.relpath(path, ROOT)}")
    finally:
        thaw(frozen)
        strata(binary, "down", "--dir", d, check=False)


if __name__ == "__main__":
    sys.exit(main())
