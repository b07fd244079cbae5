#!/usr/bin/env python3
"""Messages per second with confirms: the embedded SQLite queue vs RabbitMQ, same parameters.

    python3 bench/queue_throughput.py [--messages 20000] [--shapes 4x4,1x1] [--rounds 1]

Each round runs `strata queue-load --engine embedded` then `--engine rabbitmq` (a private
broker from the installed rabbitmq-server, started for the run on loopback ports in a temporary
directory and stopped after it), each with every shape PUBLISHERSxCONSUMERS: --messages
messages of --payload-bytes (a photo job's JSON), every publish confirmed (SQLite commit with
synchronous=FULL; RabbitMQ publisher confirm on quorum queues), every consumer receive → ack.
Reported per engine and shape: publish rate, end-to-end rate (first publish to last ack), and
publish→receive latency p50/p99 (HDR). As fast as confirms return, consumers fall behind and
the latency is mostly the backlog's; --rate R paces the publishers at R messages/s in all, below
capacity, for the engines' own latency. Every run is bounded by --max-secs. Installs
rabbitmq-server with apt-get when missing. Writes
bench/results/queue-throughput-<commit>-<UTC>.json. Refuses a tree with uncommitted changes
unless --allow-dirty.
"""

import argparse
import json
import os
import statistics
import subprocess
import time

from benchlib import ROOT, STRATA, apt_install_unless, build_release, require_clean_tree, say
ENGINES = ("embedded", "rabbitmq")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--payload-bytes", type=int, default=300)
    ap.add_argument("--shapes", default="4x4,1x1")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-secs", type=int, default=180)
    ap.add_argument("--prefetch", type=int, default=1)
    ap.add_argument("--rate", type=float, help="paced: messages/s in all, for the latency below capacity")
    ap.add_argument("--allow-dirty", action="store_true")
    a = ap.parse_args()

    require_clean_tree(a.allow_dirty)
    apt_install_unless("/usr/sbin/rabbitmq-server", "rabbitmq-server")
    commit = build_release()
    rabbit_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                                    capture_output=True, text=True).stdout.strip()

    rounds = {e: [] for e in ENGINES}
    for r in range(a.rounds):
        for engine in ENGINES:
            say(f"round {r + 1}/{a.rounds}: {engine}")
            cmd = [STRATA, "queue-load", "--engine", engine, "--shapes", a.shapes,
                   "--messages", str(a.messages), "--payload-bytes", str(a.payload_bytes),
                   "--max-secs", str(a.max_secs), "--prefetch", str(a.prefetch)]
            if a.rate:
                cmd += ["--rate", str(a.rate)]
            # Progress lines (stderr) pass straight through.
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
            rounds[engine].append(json.loads(out.stdout))

    summary = {}
    for engine in ENGINES:
        for shape in a.shapes.split(","):
            runs = [next(x for x in rnd["runs"] if x["shape"] == shape) for rnd in rounds[engine]]
            med = lambda f: statistics.median(f(x) for x in runs)  # noqa: E731
            summary[f"{engine} {shape}"] = {
                "publish_per_sec": med(lambda x: x["publish_per_sec"]),
                "end_to_end_per_sec": med(lambda x: x["end_to_end_per_sec"]),
                "p50_ms": med(lambda x: x["latency_ms"]["p50"]),
                "p99_ms": med(lambda x: x["latency_ms"]["p99"]),
                "missing": max(x["missing"] for x in runs),
                "duplicates": max(x["duplicates"] for x in runs),
            }
            s = summary[f"{engine} {shape}"]
            say(f"{engine:9} {shape}: publish {s['publish_per_sec']:.0f}/s, end-to-end "
                f"{s['end_to_end_per_sec']:.0f}/s, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
                f"missing {s['missing']}")

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = os.path.join(ROOT, "bench", "results", f"queue-throughput-{commit}-{stamp}.json")
    doc = {"commit": commit, "dirty": dirty, "utc": stamp, "nproc": os.cpu_count(),
           "rabbitmq_server": rabbit_version, "messages": a.messages,
           "payload_bytes": a.payload_bytes, "prefetch": a.prefetch, "rate": a.rate, "shapes": a.shapes,
           "summary": summary, "rounds": rounds}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print(out)


if __name__ == "__main__":
    main()
