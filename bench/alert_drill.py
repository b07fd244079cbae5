#!/usr/bin/env python3
"""The SLO alert drill: API servers killed under load, the fast-burn page in Prometheus.

    cargo build --release -p strata
    python3 bench/alert_drill.py [--kill 2] [--mode kill|freeze] [--warm 120] [--fault 240] [--rate 50]

1. `strata up -d`: a balancer, 3 API servers (SQLite), and Prometheus (`[observe] prometheus =
   true`: the generated SLO rules, default objectives, 15 s scrapes and evaluations);
2. `strata chaos --no-faults`: open-loop authenticated writes and reads through the balancer at
   --rate each per second for the whole drill, every acknowledged write read back at the end;
3. after --warm seconds, --kill of the 3 API servers (api-3, api-2, ...) are killed with SIGKILL
   every time they come back (their supervisor restarts them, and gives up on a role after 5
   crashes in 60 s), for --fault seconds: servers that crash again and again, the way a bad
   release or a poison request kills them; or, with --mode freeze, stopped (SIGSTOP: hung,
   neither answering nor dead) for --fault seconds and continued after;
4. then --settle seconds of load without faults (the page should resolve in them), and the
   load's read-back of every acknowledged write.

Prometheus's `/api/v1/alerts` and the recorded `slo:error_ratio:rate5m` / `rate1h` of every
objective are read every 5 s. The result says when each alert fired and resolved, against what
the windows imply (docs/observability.md, "Detection time"), and keeps the load's verdict.

Raw result: bench/results/alert-drill-COMMIT-STAMP.json, and a plot (SVG) of the balancer's
error ratio over the 5m and 1h windows beside it. Loopback only; every load is bounded in time.
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
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.environ.get("STRATA_BIN") or os.path.join(ROOT, "target", "release", "strata")


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check)


def commit():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"


def status(d):
    return json.loads(strata("status", "--dir", d, "--json").stdout)


def role(st, name):
    return next((r for r in st["roles"] if r["name"] == name), None)


def prom_get(prom, path, params=None):
    url = "http://%s%s" % (prom, path)
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]


def alerts(prom):
    """Every active alert: (alertname, slo, sli, state)."""
    out = []
    for a in prom_get(prom, "/api/v1/alerts")["alerts"]:
        labels = a.get("labels", {})
        out.append((labels.get("alertname"), labels.get("slo"), labels.get("sli"), a.get("state")))
    return sorted(out)


def ratios(prom):
    """slo:error_ratio:rate5m and rate1h of every objective, as {"lb/availability/5m": value}."""
    out = {}
    for window in ("5m", "1h"):
        for s in prom_get(prom, "/api/v1/query", {"query": "slo:error_ratio:rate%s" % window})["result"]:
            m = s["metric"]
            out["%s/%s/%s" % (m.get("slo"), m.get("sli"), window)] = float(s["value"][1])
    return out


def plot(path, samples, marks, threshold, title):
    """The balancer's availability error ratio over 5m and 1h, the page's threshold, as SVG."""
    w, h, left, bottom, top = 900, 360, 70, 40, 30
    pts = [(s["t"], s["ratios"].get("lb/availability/5m"), s["ratios"].get("lb/availability/1h")) for s in samples]
    if not pts:
        return
    t_max = max(p[0] for p in pts) + 1
    y_max = max([threshold * 1.5] + [v for p in pts for v in p[1:] if v is not None])
    x = lambda t: left + (w - left - 20) * t / t_max
    y = lambda v: h - bottom - (h - bottom - top) * min(v, y_max) / y_max
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (w, h),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="%d" y="18">%s</text>' % (left, title)]
    colors = ["#f3e6c8", "#f2c4c4"]
    for i, (label, (t0, t1)) in enumerate(marks.items()):
        parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" opacity="0.6"/>' % (
            x(t0), top, max(x(t1) - x(t0), 1.5), h - bottom - top, colors[i % 2]))
    for i, (label, (t0, t1)) in enumerate(marks.items()):
        parts.append('<text x="%.1f" y="%d" fill="#7a4a10">%s</text>' % (x(t0) + 3, top + 14 + 16 * i, label))
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        v = y_max * frac
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, w - 20, y(v), y(v)))
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%.2f %%</text>' % (left - 5, y(v) + 4, v * 100))
    for t in range(0, int(t_max) + 1, 60):
        parts.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#666">%d min</text>' % (x(t), h - bottom + 16, t // 60))
    parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="5,4"/>' % (
        left, w - 20, y(threshold), y(threshold)))
    parts.append('<text x="%d" y="%.1f" fill="#c00">14.4 x budget</text>' % (w - 120, y(threshold) - 4))
    for i, (color, name) in enumerate((("#2b7bb9", "5m"), ("#3a9d23", "1h"))):
        line = " ".join("%.1f,%.1f" % (x(p[0]), y(p[1 + i])) for p in pts if p[1 + i] is not None)
        parts.append('<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>' % (color, line))
        parts.append('<text x="%d" y="%d" fill="%s">error ratio over %s</text>' % (w - 330 + 150 * i, h - 4, color, name))
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def replot(base, result):
    """The plot of a drill's raw result (`base`.json's content) as `base`.svg."""
    victims, (fault_start, fault_end) = result["victims"], result["fault_window_s"]
    kill = result["mode"] == "kill"
    samples, fired, resolved = result["samples"], result["fired_at_s"], result["resolved_at_s"]
    marks = {"%s %s" % (" and ".join(victims), "killed again and again" if kill else "frozen"): (fault_start, fault_end)}
    page = next((k for k in fired if k.startswith("SloFastBurn")), None)
    if page:
        marks["%s firing" % page] = (fired[page], resolved.get(page, samples[-1]["t"] if samples else fired[page]))
    plot(base + ".svg", samples, marks, 14.4 * 0.001,
         "Balancer availability error ratio, %d of 3 API servers %s under %d+%d req/s" % (
             len(victims), "killed" if kill else "frozen", result["rate"], result["rate"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kill", type=int, default=2, choices=(1, 2, 3), help="API servers to hit (of 3)")
    ap.add_argument("--mode", choices=("kill", "freeze"), default="kill",
                    help="kill: SIGKILL whenever they run; freeze: SIGSTOP for the fault window, SIGCONT after")
    ap.add_argument("--warm", type=int, default=120, help="seconds of healthy load first")
    ap.add_argument("--fault", type=int, default=240, help="seconds the servers keep being killed")
    ap.add_argument("--settle", type=int, default=480, help="seconds of load after the faults (the alerts should resolve in them)")
    ap.add_argument("--rate", type=int, default=50, help="writes/s and reads/s (open loop)")
    args = ap.parse_args()
    if not os.path.exists(STRATA):
        sys.exit("build first: cargo build --release -p strata")
    work = tempfile.mkdtemp(prefix="strata-alert-drill-")
    os.chmod(work, 0o755)
    d = os.path.join(work, "deploy")
    topo = os.path.join(work, "drill.toml")
    with open(topo, "w") as f:
        f.write('name = "alert-drill"\n[lb]\ncount = 1\n[api]\ncount = 3\n[observe]\nprometheus = true\n')
    victims = ["api-%d" % i for i in range(3, 3 - args.kill, -1)]
    duration = args.warm + args.fault + args.settle
    frozen = []
    result = {"commit": commit(), "mode": args.mode, "victims": victims, "warm_s": args.warm, "fault_s": args.fault,
              "rate": args.rate, "started": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    samples, kills, fired, resolved = [], [], {}, {}
    load = None
    try:
        print("==> strata up (lb, 3 API servers, Prometheus)", flush=True)
        up = strata("up", "-d", "--port", "0", "-f", topo, "--dir", d, check=False)
        if up.returncode != 0:
            sys.exit(up.stderr)
        prom = role(status(d), "prometheus-1")["addrs"]["http"]
        verdict_path = os.path.join(work, "verdict.json")
        print("==> open-loop load: %d writes/s + %d reads/s (at most %d s)" % (args.rate, args.rate, duration), flush=True)
        t0 = time.time()
        load = subprocess.Popen([STRATA, "chaos", "--dir", d, "--no-faults", "--json", "--out", verdict_path,
                                 "--duration-secs", str(duration), "--rate", str(args.rate)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fault_start, fault_end = args.warm, args.warm + args.fault
        next_sample = 0.0
        phase = "warm"
        while True:
            now = time.time() - t0
            if phase == "warm" and now >= fault_start:
                phase = "fault"
                if args.mode == "freeze":
                    st = status(d)
                    frozen = [role(st, v)["pid"] for v in victims]
                    for pid in frozen:
                        os.kill(pid, signal.SIGSTOP)
                        kills.append({"t": round(now, 2), "pid": pid, "signal": "SIGSTOP"})
                    print("==> froze %s (SIGSTOP) for %d s" % (", ".join(victims), args.fault), flush=True)
                else:
                    print("==> killing %s with SIGKILL whenever they run, for %d s" % (", ".join(victims), args.fault), flush=True)
            if phase == "fault" and now >= fault_end:
                phase = "settle"
                if args.mode == "freeze":
                    for pid in frozen:
                        os.kill(pid, signal.SIGCONT)
                        kills.append({"t": round(now, 2), "pid": pid, "signal": "SIGCONT"})
                print("==> faults over; waiting for the alerts to resolve", flush=True)
            if phase == "fault" and args.mode == "kill":
                st = status(d)
                for v in victims:
                    r = role(st, v)
                    pid = r and r.get("pid")
                    if pid and r.get("state") in ("ready", "starting"):
                        try:
                            os.kill(pid, signal.SIGKILL)
                            kills.append({"t": round(now, 2), "role": v, "pid": pid})
                        except ProcessLookupError:
                            pass
            if now >= next_sample:
                next_sample = now + 5
                try:
                    active = alerts(prom)
                    rs = ratios(prom)
                except OSError as e:
                    active, rs = None, {}
                    print("    prometheus: %s" % e, flush=True)
                if active is not None:
                    firing = {"%s %s/%s" % (a, s, i) for a, s, i, state in active if state == "firing"}
                    for k in firing:
                        if k not in fired:
                            fired[k] = round(now, 1)
                            print("    %5.0f s: %s fires" % (now, k), flush=True)
                    for k in list(fired):
                        if k not in firing and k not in resolved:
                            resolved[k] = round(now, 1)
                            print("    %5.0f s: %s resolved" % (now, k), flush=True)
                        elif k in firing and k in resolved:
                            resolved.pop(k)
                    samples.append({"t": round(now, 1), "firing": sorted(firing), "ratios": rs})
            if load.poll() is not None or now > duration + 600:
                break  # the load ended (its read-back done)
            time.sleep(0.2)
        result["fault_window_s"] = [fault_start, fault_end]
        result["kills"] = kills
        result["fired_at_s"] = fired
        result["resolved_at_s"] = resolved
        result["samples"] = samples
        if os.path.exists(verdict_path):
            result["load"] = json.load(open(verdict_path))
    finally:
        if load and load.poll() is None:
            load.kill()
        strata("down", "--dir", d, check=False)
        shutil.rmtree(work, ignore_errors=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = os.path.join(ROOT, "bench", "results", "alert-drill-%s-%s" % (result["commit"], stamp))
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    replot(base, result)
    print("\nresult: %s.json (+ .svg)" % base)
    print("kills: %d; fired: %s; resolved: %s" % (len(kills), fired, resolved))
    if "load" in result:
        v = result["load"]
        print("load: %s; writes failed %d of %d, reads failed %d of %d, lost %d" % (
            v["verdict"], v["writes"]["failed"], v["writes"]["sent"], v["reads"]["failed"], v["reads"]["sent"], v["lost"]))


if __name__ == "__main__":
    main()
