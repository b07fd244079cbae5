#!/usr/bin/env python3
"""Backend kill drill and idle-connection memory for `strata lb` (standard library only).

    cargo build --release -p strata && python3 bench/lb_drill.py

Starts three `strata api` servers and one `strata lb` on free loopback ports (not through
`strata up`, whose supervisor would restart a killed API within 100 ms and hide the active
checks), then:
1. passive detection: steady open-loop GETs through the balancer (200/s), `kill -9` of api-2:
   counts failed GETs and the time until the balancer stops sending to it; restarts api-2 on
   its port and times its re-admission;
2. active detection: no traffic, `kill -9` of api-3: time until health checks mark it down
   (interval 1 s, fall 2);
3. memory: RSS of the balancer before and after 1,000 idle keep-alive client connections.
Every loop is bounded in time; every process is killed at the end.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

STRATA = os.environ.get("STRATA", "target/release/strata")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(args, log):
    p = subprocess.Popen([STRATA] + args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    ready = json.loads(line)
    assert ready["ready"], line
    return p, ready["addrs"]


def get(port, path, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, body
    finally:
        c.close()


def backends(admin_port):
    _, body = get(admin_port, "/admin/backends")
    return {b["name"]: b for b in json.loads(body)["backends"]}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    work = tempfile.mkdtemp()
    log = open(os.path.join(work, "roles.log"), "w")
    procs = {}
    try:
        ports = {f"api-{i}": free_port() for i in (1, 2, 3)}
        for i, (name, port) in enumerate(ports.items(), 1):
            procs[name], _ = start(["api", "--addr", f"127.0.0.1:{port}", "--data", os.path.join(work, "data"),
                                    "--node-id", str(i), "--name", name], log)
        lb_args = ["lb", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        for name, port in ports.items():
            lb_args += ["--backend", f"{name}=127.0.0.1:{port}"]
        env_log = os.environ.copy()
        env_log["STRATA_LOG"] = "warn"
        p = subprocess.Popen([STRATA] + lb_args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.PIPE, text=True, env=env_log)
        addrs = json.loads(p.stdout.readline())["addrs"]
        procs["lb"] = p
        lb_port = int(addrs["http"].rsplit(":", 1)[1])
        admin_port = int(addrs["admin"].rsplit(":", 1)[1])

        # 1. passive detection under open-loop load
        results = {"ok": 0, "failed": 0}
        stop = time.monotonic() + 6.0
        lock = threading.Lock()

        def client(offset):
            conn = http.client.HTTPConnection("127.0.0.1", lb_port, timeout=5)
            next_at = time.monotonic() + offset
            while next_at < stop:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                try:
                    conn.request("GET", "/users/12")
                    r = conn.getresponse()
                    r.read()
                    ok = r.status == 200
                except OSError:
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", lb_port, timeout=5)
                with lock:
                    results["ok" if ok else "failed"] += 1
                next_at += 0.02  # 50/s per client, 4 clients: 200/s

        threads = [threading.Thread(target=client, args=(i * 0.005,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        victim = procs["api-2"]
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        out_after = None
        while time.monotonic() - killed_at < 3.0:
            b = backends(admin_port)["api-2"]
            if not b["eligible"]:
                out_after = time.monotonic() - killed_at
                break
            time.sleep(0.005)
        for t in threads:
            t.join()
        procs["api-2"], _ = start(["api", "--addr", f"127.0.0.1:{ports['api-2']}", "--data", os.path.join(work, "data"),
                                   "--node-id", "2", "--name", "api-2"], log)
        restarted_at = time.monotonic()
        readmit_after = None
        while time.monotonic() - restarted_at < 40.0:
            if backends(admin_port)["api-2"]["eligible"]:
                readmit_after = time.monotonic() - restarted_at
                break
            time.sleep(0.01)

        # 2. active detection without traffic
        victim = procs["api-3"]
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        down_after = None
        while time.monotonic() - killed_at < 5.0:
            if not backends(admin_port)["api-3"]["healthy"]:
                down_after = time.monotonic() - killed_at
                break
            time.sleep(0.005)

        # 3. memory per idle keep-alive connection
        lb_pid = procs["lb"].pid
        before = rss_kib(lb_pid)
        conns = []
        for _ in range(1000):
            c = http.client.HTTPConnection("127.0.0.1", lb_port, timeout=5)
            c.request("GET", "/healthz")
            c.getresponse().read()
            conns.append(c)
        time.sleep(0.5)
        after = rss_kib(lb_pid)
        for c in conns:
            c.close()

        def fmt(x):
            return "not seen" if x is None else f"{x * 1000:.0f} ms"

        print("| measure | result |")
        print("|---|---|")
        print(f"| GETs during the passive drill (200/s, api-2 killed) | {results['ok'] + results['failed']} sent, **{results['failed']} failed** |")
        print(f"| kill -9 → api-2 out of rotation (passive, under load) | {fmt(out_after)} |")
        print(f"| restart → api-2 re-admitted (probe after ejection back-off) | {fmt(readmit_after)} |")
        print(f"| kill -9 → api-3 marked down by active checks (1 s interval, fall 2, no traffic) | {fmt(down_after)} |")
        print(f"| balancer RSS before / after 1,000 idle keep-alive connections | {before} KiB / {after} KiB = **{(after - before) / 1000:.1f} KiB per connection** |")
    finally:
        for p in procs.values():
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
