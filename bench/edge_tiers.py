#!/usr/bin/env python3
"""Edges in a deployment: offload and purge, measured through `strata up`.

    cargo build --release -p strata
    python3 bench/edge_tiers.py [--users 100000] [--requests 1000000] [--purges 1000] [--photos 0]

One deployment (temporary): 2 edges and a shield (`[edge] count = 2, shield = true`, profiles
kept `profile_ttl_secs = 3600`, memory stores of 512 MiB, no disk store), a balancer and 3 API
servers on SQLite seeded with --users users.

- **Photos** (--photos N > 0): N photos uploaded (`strata upload-load --distinct`, one new user
  each, every photo made on the spot with its own pixels at 320x240 or 800x600) and resized by
  two workers; each photo's 128 and 512
  pixel images (`/photos/{key}`, content-addressed, `immutable`) join the profiles as objects
  of the workload, their popularity ranks shuffled in with the profiles'.
- **Offload**: --requests profile reads drawn fresh from Zipf(0.99) over all users (`strata
  cache-load run`, seed 1; popularity independent of creation order), closed loop, request i to
  edge i mod 2, every request naming the service `strata.test` (as clients behind DNS do). The
  share the origin never sees is 1 - (the shield's origin fetches / requests); the same trace
  replayed offline gives the first touches (objects asked for at least once), so origin fetches
  per object are shown too.
- **Purge**: --purges times, a user both edges hold (read through each first) is patched through
  the balancer; the time from the write's acknowledgement until both edges answer the new
  profile is the time to purge everywhere (each edge polled every millisecond).

Raw results: bench/results/edge-tiers-<commit>-<stamp>.json. Everything listens on 127.0.0.1;
every load is bounded in count and stops by itself.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import authn  # noqa: E402  (LONG_TOKENS: access tokens that outlive a long run)
import benchlib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.environ.get("STRATA_BIN") or os.path.join(ROOT, "target", "release", "strata")
SERVICE = "strata.test"


def strata(*args, check=True):
    return subprocess.run([STRATA, *args], capture_output=True, text=True, check=check,
                          env={**os.environ, **authn.LONG_TOKENS})


def status(d):
    return json.loads(strata("status", "--dir", d, "--json").stdout)


def addr(st, name, listener):
    return next(r for r in st["roles"] if r["name"] == name)["addrs"][listener]


def counters(admin):
    """Every sample of an edge's /metrics, by name{labels}."""
    host, port = admin.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/metrics")
    out = {}
    for line in c.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    c.close()
    return out


def request(target, method, path, body=None, headers=None):
    host, port = target.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def git_commit():
    return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, cwd=ROOT).stdout.strip() or "unknown"


def pctl(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--purges", type=int, default=1000)
    ap.add_argument("--photos", type=int, default=0,
                    help="photos uploaded and resized; their images join the workload's objects")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    commit = git_commit()
    tmp = tempfile.mkdtemp(prefix="strata-edge-tiers-")
    os.chmod(tmp, 0o755)
    d = os.path.join(tmp, "deploy")
    res = {"commit": commit, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "args": vars(a)}
    try:
        print(f"==> seeding {a.users:,} users", flush=True)
        subprocess.run([STRATA, "seed", "--users", str(a.users), "--data", os.path.join(d, "data")],
                       check=True)
        topo = os.path.join(tmp, "edge.toml")
        with open(topo, "w") as f:
            f.write('name = "edge-tiers"\n[edge]\ncount = 2\nshield = true\nmemory_mib = 512\n'
                    'disk_mib = 0\nprofile_ttl_secs = 3600\n[lb]\n[api]\ncount = 3\n')
            if a.photos:
                f.write("[workers]\ncount = 2\n")
        print("==> strata up", flush=True)
        strata("up", "-d", "--port", "0", "-f", topo, "--dir", d)
        photo_paths = []
        if a.photos:
            print(f"==> uploading {a.photos:,} photos (one new user each)", flush=True)
            upl = os.path.join(tmp, "uploads.json")
            subprocess.run([STRATA, "upload-load", "--dir", d, "--rate", "100", "--count", str(a.photos),
                            "--sizes", "320x240,800x600", "--distinct", "--drain-secs", "900",
                            "--out", upl],
                           check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, **authn.LONG_TOKENS})
            res["uploads"] = {k: v for k, v in json.load(open(upl)).items() if not isinstance(v, list)}
            catalogs = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if f == "photos.db"]
            pdb = sqlite3.connect(catalogs[0])
            for k128, k512 in pdb.execute(
                    "SELECT key_128, key_512 FROM photos WHERE key_128 IS NOT NULL AND key_512 IS NOT NULL"):
                photo_paths += [f"/photos/{k128}", f"/photos/{k512}"]
            pdb.close()
            # One object per address: a 320x240 photo's 512 size is its original, never the
            # other's, but the list is made distinct anyway (the workload's objects are URLs).
            photo_paths = sorted(set(photo_paths))
            print(f"    {len(photo_paths):,} photo objects (two sizes of each done photo)", flush=True)
        db = sqlite3.connect(os.path.join(d, "data", "strata.db"))
        ids = [str(row[0]) for row in db.execute("SELECT id FROM users ORDER BY id")]
        db.close()
        res["objects"] = {"profiles": len(ids), "photos": len(photo_paths)}
        ids += photo_paths
        random.Random(12).shuffle(ids)  # popularity rank independent of creation order
        ids_path = os.path.join(tmp, "ids.txt")
        with open(ids_path, "w") as f:
            f.write("\n".join(ids) + "\n")
        st = status(d)
        edges = [addr(st, "edge-1", "http"), addr(st, "edge-2", "http")]
        admins = {n: addr(st, n, "admin") for n in ("edge-shield", "edge-1", "edge-2")}
        lb = addr(st, "lb-1", "http")

        # --- offload -------------------------------------------------------------------------
        before = {n: counters(x) for n, x in admins.items()}
        print(f"==> offload: {a.requests:,} Zipf(0.99) reads of {len(ids):,} objects through 2 edges",
              flush=True)
        out = subprocess.run([STRATA, "cache-load", "run", "--workload", "zipf", "--exponent", "0.99",
                              "--seed", "1", "--ids", ids_path, "--targets", ",".join(edges),
                              "--host", SERVICE, "--count", str(a.requests),
                              "--concurrency", str(a.concurrency)],
                             stdout=subprocess.PIPE, text=True, check=True)
        load = json.loads(out.stdout)
        after = {n: counters(x) for n, x in admins.items()}

        def delta(n, key):
            return after[n].get(key, 0.0) - before[n].get(key, 0.0)

        origin = delta("edge-shield", "strata_edge_origin_fetches_total")
        edge_fetches = delta("edge-1", "strata_edge_origin_fetches_total") + \
            delta("edge-2", "strata_edge_origin_fetches_total")
        sim = subprocess.run([STRATA, "cache-load", "simulate", "--workload", "zipf", "--exponent", "0.99",
                              "--seed", "1", "--users", str(len(ids)), "--windows", f"0:{a.requests}",
                              "--capacity", str(len(ids))],
                             capture_output=True, text=True, check=True)
        ideal = json.loads(sim.stdout)["whole"][0]["windows"][0]
        first = ideal["first_touches"]
        res["offload"] = {
            "load": load, "requests": a.requests, "failed": load["failed"],
            "origin_fetches": origin, "edge_to_shield_fetches": edge_fetches,
            "offload": 1 - origin / a.requests, "shield_offload_of_edge_misses": 1 - origin / max(edge_fetches, 1),
            "distinct_objects": first, "origin_fetches_per_object": origin / max(first, 1),
            "best_possible_offload": 1 - first / a.requests,
        }
        o = res["offload"]
        print(f"    origin saw {origin:,.0f} of {a.requests:,} requests: offload {o['offload']:.2%} "
              f"(best possible with {first:,} distinct objects: {o['best_possible_offload']:.2%}); "
              f"{o['origin_fetches_per_object']:.3f} origin fetches per object; "
              f"the edges sent the shield {edge_fetches:,.0f}", flush=True)

        # --- purge ---------------------------------------------------------------------------
        print(f"==> purge: {a.purges} writes, each waited for on both edges", flush=True)
        email, password = "bench-admin@strata.test", "bench admin password"
        profile = {"firstName": "Bench", "lastName": "Admin", "address": {"streetAddress": "1 Ops Way",
                   "city": "Testville", "state": "TS", "postalCode": "00501"}, "phoneNumbers": []}
        request(lb, "POST", "/accounts", json.dumps({"email": email, "password": password, "profile": profile}),
                {"content-type": "application/json"})
        strata("admin", "grant", email, "--dir", d)
        _, body = request(lb, "POST", "/sessions", json.dumps({"email": email, "password": password}),
                          {"content-type": "application/json"})
        token = json.loads(body)["access_token"]
        times, stale_reads, failures = [], 0, 0
        hot = [i for i in ids if not i.startswith("/")][:a.purges]  # profiles, by rank
        deadline = time.time() + 600
        for k, uid in enumerate(hot):
            if time.time() > deadline:
                break
            for e in edges:
                request(e, "GET", f"/users/{uid}", headers={"host": SERVICE})
            name = f"Purged{k}"
            code, _ = request(lb, "PATCH", f"/users/{uid}", json.dumps({"lastName": name}),
                              {"content-type": "application/merge-patch+json",
                               "authorization": f"Bearer {token}"})
            acked = time.perf_counter()
            if code != 200:
                failures += 1
                continue
            pending = set(edges)
            while pending and time.perf_counter() - acked < 30:
                for e in list(pending):
                    _, data = request(e, "GET", f"/users/{uid}", headers={"host": SERVICE})
                    if json.loads(data).get("lastName") == name:
                        pending.discard(e)
                    else:
                        stale_reads += 1
            if pending:
                failures += 1
                continue
            times.append((time.perf_counter() - acked) * 1000)
            if (k + 1) % 200 == 0:
                print(f"    {k + 1} of {a.purges}: p50 {pctl(times, 0.5):.2f} ms", flush=True)
        res["purge"] = {"purges": len(times), "failures": failures, "stale_reads_while_waiting": stale_reads,
                        "p50_ms": pctl(times, 0.5), "p99_ms": pctl(times, 0.99), "max_ms": max(times or [0]),
                        "times_ms": times}
        p = res["purge"]
        print(f"    {p['purges']} purges effective on both edges: p50 {p['p50_ms']:.2f} ms, "
              f"p99 {p['p99_ms']:.2f} ms, max {p['max_ms']:.2f} ms; {failures} not effective within 30 s",
              flush=True)
    finally:
        strata("down", "--dir", d, check=False)
        path = benchlib.write_result(a.out, "edge-tiers", commit, res)
        print(f"raw: {path}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
