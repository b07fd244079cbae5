#!/usr/bin/env python3
"""What a zero-copy send would save a cache on loopback: the kernel's cost of sending one
100 KB answer over a loopback TCP connection, copied (one `sendmsg` of head and body, as strata
and Varnish send a stored object) against zero-copy (`sendfile` of the body from the page cache
after the head sent with MSG_MORE, as nginx serves a file; `splice` from a pipe the body was
`vmsplice`d into is the same path).

  python3 bench/zero_copy.py                 # defaults: 100 KB, 20,000 answers a run, 5 rounds
  python3 bench/zero_copy.py --size 2048 --answers 100000

The sender is pinned to core 1 (where bench/edge.sh pins the caches) and a reader process to
core 0, which drains the connection as wrk would. Each round runs each way once, alternating;
the system time each answer cost the sender (getrusage, the time the kernel spent for it) and
the reader is reported, with the median over the rounds. Only loopback, bounded in count.
Writes bench/results/zero-copy-<commit>-<stamp>.json.
"""

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"


def reader(port: int, total: int, report) -> None:
    os.sched_setaffinity(0, {0})
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    while got < total:
        n = s.recv_into(view)
        if n == 0:
            break
        got += n
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.write(report, json.dumps({"bytes": got, "sys": after.ru_stime - before.ru_stime}).encode())
    os._exit(0)


def run(way: str, size: int, answers: int) -> dict:
    head = HEAD % size
    body = os.urandom(size)
    memfd = os.memfd_create("body")
    os.write(memfd, body)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    total = answers * (len(head) + size)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        reader(port, total, wr)
    os.close(wr)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fd = conn.fileno()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    for _ in range(answers):
        if way == "copy":
            parts = [head, body]
            while parts:
                n = conn.sendmsg(parts)
                while parts and n >= len(parts[0]):
                    n -= len(parts[0])
                    parts.pop(0)
                if parts and n:
                    parts[0] = parts[0][n:]
        else:
            conn.sendall(head, socket.MSG_MORE)
            offset = 0
            while offset < size:
                offset += os.sendfile(fd, memfd, offset, size - offset)
    after = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = time.monotonic() - started
    _, status = os.waitpid(pid, 0)
    seen = json.loads(os.read(rd, 4096))
    os.close(rd)
    conn.close()
    listener.close()
    os.close(memfd)
    if seen["bytes"] != total or status != 0:
        sys.exit(f"the reader got {seen['bytes']} of {total} bytes")
    return {
        "way": way,
        "answers": answers,
        "sender_sys_us": (after.ru_stime - before.ru_stime) / answers * 1e6,
        "sender_user_us": (after.ru_utime - before.ru_utime) / answers * 1e6,
        "reader_sys_us": seen["sys"] / answers * 1e6,
        "seconds": elapsed,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=100 * 1024)
    p.add_argument("--answers", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="bench/results")
    a = p.parse_args()
    if not 0 < a.size <= 16 << 20 or not 0 < a.answers <= 1_000_000 or not 0 < a.rounds <= 50:
        sys.exit("--size 1..16 MiB, --answers 1..1,000,000, --rounds 1..50")
    os.sched_setaffinity(0, {1})
    runs = []
    for r in range(a.rounds):
        for way in ("copy", "sendfile") if r % 2 == 0 else ("sendfile", "copy"):
            res = run(way, a.size, a.answers)
            res["round"] = r + 1
            runs.append(res)
            print(
                f"round {r + 1}/{a.rounds} {way:8}: sender {res['sender_sys_us']:.2f} µs system"
                f" (+{res['sender_user_us']:.2f} user), reader {res['reader_sys_us']:.2f} µs system"
                f" per answer, {res['seconds']:.1f} s",
                flush=True,
            )
    summary = {}
    for way in ("copy", "sendfile"):
        mine = [x for x in runs if x["way"] == way]
        summary[way] = {
            k: statistics.median(x[k] for x in mine)
            for k in ("sender_sys_us", "reader_sys_us")
        }
    ratio = summary["sendfile"]["sender_sys_us"] / summary["copy"]["sender_sys_us"]
    print(
        f"median sender system time per {a.size}-byte answer: copy {summary['copy']['sender_sys_us']:.2f} µs,"
        f" sendfile {summary['sendfile']['sender_sys_us']:.2f} µs ({ratio:.2f}×)"
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"]).returncode != 0
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"zero-copy-{commit}{'-dirty' if dirty else ''}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(
            {
                "commit": commit + ("-dirty" if dirty else ""),
                "kernel": platform.release(),
                "size": a.size,
                "answers": a.answers,
                "runs": runs,
                "median": summary,
                "sendfile_over_copy": ratio,
            },
            f,
            indent=1,
        )
    print(f"==> {path}")


if __name__ == "__main__":
    main()
