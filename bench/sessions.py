#!/usr/bin/env python3
"""Web-tier benchmark: a rolling restart under authenticated load, and what a login costs.

    cargo build --release -p strata && python3 bench/sessions.py [--rate 200] [--duration 30]

1. Rolling restart. `strata up` (balancer + 3 API servers, SQLite, sessions in the database).
   One account logs in once. Open-loop load at --rate req/s through the balancer (80% GET
   /sessions, 20% PUT of the account's own profile, every request authenticated by the same
   access token) while each API server in turn is drained at the balancer (POST
   /admin/backends/api-N/drain), waited on until it has no request in flight, stopped with
   SIGTERM (it finishes what it has), restarted by the supervisor on the same port, and put
   back (undrain) once it answers /readyz. Every request is accounted for; latency is measured
   from each request's scheduled send time (no coordinated omission); percentiles are exact,
   over every sample.
2. Login cost. One `strata serve` per argon2id parameter set; 20 logins/s open loop for
   --login-seconds s (latency percentiles), then as many logins as 4 clients can make for 5 s
   (throughput). The default parameters are OWASP's minimum (19 MiB, 2 passes, 1 lane).

Writes bench/results/sessions-<stamp>.json and .svg (latency over time, restarts shaded).
Loopback only; every load is bounded in count and time.
"""

import argparse
import http.client
import json
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
PASSWORD = "rolling restart password"
PROFILE = {"firstName": "Rolling", "lastName": "Restart",
           "address": {"streetAddress": "1 Main St", "city": "Boston", "state": "MA",
                       "postalCode": "02134"}, "phoneNumbers": []}


def run(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check)


def status(d):
    return json.loads(run("status", "--json", "--dir", d).stdout)


def role(st, name):
    return next(r for r in st["roles"] if r["name"] == name)


class Client:
    """One keep-alive connection; reconnects once per request on a broken connection."""

    def __init__(self, addr):
        self.host, self.port = addr.rsplit(":", 1)
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)
                h = {"content-type": "application/json"} if body is not None else {}
                h.update(headers or {})
                self.conn.request(method, path, json.dumps(body) if body is not None else None, h)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt == 1:
                    return 0, b""
        return 0, b""


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values))) - 1))
    return sorted_values[i]


def summarize(samples):
    lat = sorted(s[1] for s in samples)
    return {"requests": len(samples),
            "failed": sum(1 for s in samples if s[2] != 200),
            "p50_ms": round(percentile(lat, 0.50) * 1000, 2),
            "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
            "p999_ms": round(percentile(lat, 0.999) * 1000, 2),
            "max_ms": round((lat[-1] if lat else 0) * 1000, 2)}


def open_loop(lb, rate, duration, auth, uid, threads=8):
    """Runs the load; returns [(scheduled offset s, latency s, status, kind)]."""
    samples, lock = [], threading.Lock()
    start = time.time() + 0.2

    def worker(slot):
        c = Client(lb)
        n = 0
        while True:
            k = n * threads + slot
            t = start + k / rate
            if t >= start + duration:
                return
            time.sleep(max(0.0, t - time.time()))
            if k % 5 == 4:
                body = dict(PROFILE, firstName=f"R{k}")
                code, _ = c.request("PUT", f"/users/{uid}", body, auth)
                kind = "put"
            else:
                code, _ = c.request("GET", "/sessions", None, auth)
                kind = "get"
            done = time.time()
            with lock:
                samples.append((t - start, done - t, code, kind))
            n += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    return ts, samples, start


def rolling_restart(d, lb, admin, apis, start):
    """Drains, stops and brings back each API server in turn; returns the events."""
    events = []
    adm = Client(admin)
    for name in apis:
        t0 = time.time() - start
        code, _ = adm.request("POST", f"/admin/backends/{name}/drain")
        assert code == 200, f"drain {name}: {code}"
        deadline = time.time() + 10
        while time.time() < deadline:
            _, body = adm.request("GET", "/admin/backends")
            b = next(x for x in json.loads(body)["backends"] if x["name"] == name)
            if b["inFlight"] == 0:
                break
            time.sleep(0.02)
        st = status(d)
        old_pid = role(st, name)["pid"]
        addr = role(st, name)["addrs"]["http"]
        os.kill(old_pid, signal.SIGTERM)
        t_stop = time.time() - start
        deadline = time.time() + 30
        while time.time() < deadline:
            r = role(status(d), name)
            if r["pid"] != old_pid and r.get("healthy"):
                code, _ = Client(addr).request("GET", "/readyz")
                if code == 200:
                    break
            time.sleep(0.05)
        else:
            sys.exit(f"{name} did not come back within 30 s")
        t_back = time.time() - start
        code, _ = adm.request("POST", f"/admin/backends/{name}/undrain")
        assert code == 200, f"undrain {name}: {code}"
        events.append({"api": name, "drained_at": round(t0, 2), "stopped_at": round(t_stop, 2),
                       "back_at": round(t_back, 2)})
        print(f"    {name}: drained at {t0:.1f} s, stopped at {t_stop:.1f} s, back at {t_back:.1f} s",
              flush=True)
        time.sleep(2.0)
    return events


def login_cost(params, rate, seconds):
    """One `strata serve` with these argon2 parameters; latency at `rate` logins/s and the most
    logins/s 4 clients get."""
    m, t = params
    tmp = tempfile.mkdtemp(prefix="strata-login-")
    env = {**os.environ, "STRATA_ARGON2_MEMORY_KIB": str(m), "STRATA_ARGON2_ITERATIONS": str(t)}
    p = subprocess.Popen([STRATA, "serve", "--addr", "127.0.0.1:0", "--data", tmp],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = p.stdout.readline()
        addr = json.loads(line)["addrs"]["http"]
        c = Client(addr)
        code, body = c.request("POST", "/accounts", {"email": "login@bench.test", "password": PASSWORD,
                                                     "profile": PROFILE})
        assert code == 201, (code, body)
        creds = {"email": "login@bench.test", "password": PASSWORD}
        # Open loop at `rate`.
        samples, lock = [], threading.Lock()
        start = time.time() + 0.2
        threads = 8

        def worker(slot):
            cl = Client(addr)
            n = 0
            while True:
                k = n * threads + slot
                at = start + k / rate
                if at >= start + seconds:
                    return
                time.sleep(max(0.0, at - time.time()))
                code, _ = cl.request("POST", "/sessions", creds)
                with lock:
                    samples.append((at - start, time.time() - at, 200 if code == 201 else code, "login"))
                n += 1

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        paced = summarize(samples)
        # Closed loop: the most logins/s.
        count, end = [0], time.time() + 5

        def hammer():
            cl = Client(addr)
            while time.time() < end:
                code, _ = cl.request("POST", "/sessions", creds)
                if code == 201:
                    with lock:
                        count[0] += 1

        ts = [threading.Thread(target=hammer) for _ in range(4)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        return {"memory_kib": m, "iterations": t, "rate": rate, **paced,
                "max_logins_per_s": round(count[0] / 5, 1)}
    finally:
        p.terminate()
        p.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def svg(samples, events, path):
    width, height, pad = 760, 320, 50
    if not samples:
        return
    tmax = max(s[0] for s in samples) or 1
    lmax = max(max(s[1] for s in samples) * 1000, 1)
    x = lambda t: pad + (width - 2 * pad) * t / tmax  # noqa: E731
    y = lambda ms: height - pad - (height - 2 * pad) * ms / lmax  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">Authenticated '
             f'requests during a rolling restart (latency per request; shaded: a server drained '
             f'or restarting)</text>']
    for e in events:
        parts.append(f'<rect x="{x(e["drained_at"]):.1f}" y="{pad}" '
                     f'width="{max(1.0, x(e["back_at"]) - x(e["drained_at"])):.1f}" '
                     f'height="{height - 2 * pad}" fill="#f2d7b6"/>')
        parts.append(f'<text x="{x(e["drained_at"]):.1f}" y="{pad - 4}" font-size="10">{e["api"]}</text>')
    for s in samples:
        color = "#2b7bb9" if s[2] == 200 else "#d62728"
        parts.append(f'<circle cx="{x(s[0]):.1f}" cy="{y(s[1] * 1000):.1f}" r="1.2" fill="{color}"/>')
    parts.append(f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>')
    parts.append(f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>')
    parts.append(f'<text x="{width / 2}" y="{height - 15}" text-anchor="middle">seconds</text>')
    parts.append(f'<text x="12" y="{height / 2}" transform="rotate(-90 12 {height / 2})" '
                 f'text-anchor="middle">latency ms (max {lmax:.0f})</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0, help="requests/s during the restart")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--login-rate", type=float, default=20.0)
    ap.add_argument("--login-seconds", type=float, default=15.0)
    ap.add_argument("--skip-login-cost", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(STRATA):
        sys.exit("build first: cargo build --release -p strata")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results = {"rate": args.rate, "duration": args.duration}

    tmp = tempfile.mkdtemp(prefix="strata-sessions-")
    d = os.path.join(tmp, "deploy")
    print("==> strata up (balancer + 3 API servers)", flush=True)
    up = run("up", "-d", "--port", "0", "-f", os.path.join(ROOT, "deploy", "default.toml"),
             "--dir", d, check=False)
    if up.returncode != 0:
        sys.exit(up.stderr)
    try:
        st = status(d)
        lb = role(st, "lb-1")["addrs"]["http"]
        admin = role(st, "lb-1")["addrs"]["admin"]
        apis = sorted(r["name"] for r in st["roles"] if r["name"].startswith("api-"))
        c = Client(lb)
        code, body = c.request("POST", "/accounts", {"email": "rolling@bench.test", "password": PASSWORD,
                                                     "profile": PROFILE})
        assert code == 201, (code, body)
        uid = json.loads(body)["id"]
        code, body = c.request("POST", "/sessions", {"email": "rolling@bench.test", "password": PASSWORD})
        assert code == 201, (code, body)
        auth = {"authorization": "Bearer " + json.loads(body)["access_token"]}
        print(f"==> {args.rate:.0f} req/s for {args.duration:.0f} s; rolling restart of {', '.join(apis)}",
              flush=True)
        threads, samples, start = open_loop(lb, args.rate, args.duration, auth, uid)
        time.sleep(3.0)
        events = rolling_restart(d, lb, admin, apis, start)
        for t in threads:
            t.join()
        results["rolling_restart"] = {"all": summarize(samples),
                                      "get": summarize([s for s in samples if s[3] == "get"]),
                                      "put": summarize([s for s in samples if s[3] == "put"]),
                                      "events": events,
                                      "failed_statuses": sorted({s[2] for s in samples if s[2] != 200})}
        print("    " + json.dumps(results["rolling_restart"]["all"]), flush=True)
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        svg(samples, events, os.path.join(ROOT, "bench", "results", f"sessions-{stamp}.svg"))
    finally:
        run("down", "--dir", d, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    if not args.skip_login_cost:
        results["login_cost"] = []
        for params in [(19 * 1024, 2), (46 * 1024, 1), (64 * 1024, 3)]:
            print(f"==> login cost, argon2id m={params[0]} KiB t={params[1]}: {args.login_rate:.0f} logins/s "
                  f"for {args.login_seconds:.0f} s, then 4 clients closed-loop for 5 s", flush=True)
            r = login_cost(params, args.login_rate, args.login_seconds)
            print("    " + json.dumps(r), flush=True)
            results["login_cost"].append(r)

    out = os.path.join(ROOT, "bench", "results", f"sessions-{stamp}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"==> wrote {out}")


if __name__ == "__main__":
    main()
