#!/usr/bin/env python3
"""Thumbnails per second on one core: Strata's photo worker pipeline vs libvips' vipsthumbnail.

    python3 bench/thumbnails.py [--count 100] [--seed 1] [--rounds 3] [--core 1]

The same photos (`strata photo-load make`: seeded synthetic photos, 85 JPEG from 0.3 to 12 MP,
10 PNG and 5 lossless WebP up to 1.2 MP) rendered by both sides, each pinned to one core
(`taskset -c CORE`), vips with VIPS_CONCURRENCY=1, Strata on one thread
(`strata photo-load thumbs`, which runs `strata_photos::process::render_sizes`, the worker's
own code). The outputs are the same on both sides, in the input's format: JPEG at Q=85 with
metadata stripped and chroma at full resolution (4:4:4, which is what the image crate's encoder
writes; vips is told `subsample-mode=off`), PNG, lossless WebP. Two modes:

- `thumbs`: 512, 128 and 64 px. vips, two ways: `vips` runs one `vipsthumbnail --size S` per
  size and format over all the photos of that format (9 processes a round; each size decodes
  the photo again, at a reduced scale: libjpeg's shrink-on-load); `vips-cascade` makes the 512
  from the photos and the 128 and 64 from its 512 outputs, the trick Strata uses (one full
  decode of each photo).
- `all`: the same plus the original re-encoded (metadata stripped), which is what the worker
  does for every upload. vips: the above plus `vipsthumbnail --size '100000x100000>'` (never
  enlarges: decode and encode at full size).

Each mode runs ROUNDS rounds per side, interleaved (strata, vips, vips-cascade, strata, ...), after one
untimed warm-up of each; the median wall time is reported, with the CPU time (user + system)
each side spent. Installs libvips-tools with apt-get when vipsthumbnail is missing. Writes
bench/results/thumbs-<commit>-<UTC>.json. Refuses a tree with uncommitted changes unless
--allow-dirty (the file name says which commit was measured).
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import ROOT, STRATA, TARGET, apt_install_unless, build_release, require_clean_tree, say
VIPS_OPTIONS = {"jpg": "[Q=85,strip,subsample-mode=off]", "png": "[strip]", "webp": "[lossless,strip]"}
THUMBS = (512, 128, 64)
SIDES = ("strata", "vips", "vips-cascade")


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, env=None):
    """Runs cmd; returns (wall seconds, CPU seconds, stdout)."""
    cpu0, t0 = cpu_children(), time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, env=env)
    return time.perf_counter() - t0, cpu_children() - cpu0, out.stdout


def strata_round(a, photos, out, mode):
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu, stdout = timed(["taskset", "-c", str(a.core), STRATA, "photo-load", "thumbs",
                               "--dir", photos, "--out", out, "--sizes", mode])
    report = json.loads(stdout)
    return {"wall_secs": wall, "cpu_secs": cpu, "outputs": len(os.listdir(out)), "report": report}


def vips_round(a, photos, out, mode, by_ext, cascade=False):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    env = {**os.environ, "VIPS_CONCURRENCY": "1"}
    sizes = [str(s) for s in THUMBS] + (["100000x100000>"] if mode == "all" else [])
    wall = cpu = 0.0
    for size in sizes:
        label = "original" if size.endswith(">") else size
        for ext, files in by_ext.items():
            if cascade and label in ("128", "64"):
                # From the 512s written a moment ago (photo-007_512.png → photo-007_512_128.png).
                files = [os.path.join(out, os.path.basename(f).rsplit(".", 1)[0] + f"_512.{ext}")
                         for f in files]
            cmd = ["taskset", "-c", str(a.core), "vipsthumbnail", "--size", size,
                   "-o", os.path.join(out, f"%s_{label}.{ext}{VIPS_OPTIONS[ext]}"), *files]
            w, c, _ = timed(cmd, env=env)
            wall, cpu = wall + w, cpu + c
    return {"wall_secs": wall, "cpu_secs": cpu, "outputs": len(os.listdir(out))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--core", type=int, default=1)
    ap.add_argument("--modes", default="thumbs,all")
    ap.add_argument("--photos", help="where the photos are made (default: target/bench-photos/…)")
    ap.add_argument("--allow-dirty", action="store_true")
    a = ap.parse_args()

    require_clean_tree(a.allow_dirty)
    apt_install_unless("vipsthumbnail", "libvips-tools")
    commit = build_release()
    vips_version = subprocess.run(["vips", "--version"], capture_output=True, text=True).stdout.strip()

    photos = a.photos or os.path.join(TARGET, "bench-photos", f"seed-{a.seed}-count-{a.count}")
    if len(os.listdir(photos) if os.path.isdir(photos) else []) != a.count:
        say(f"making {a.count} photos (seed {a.seed}) in {photos}")
        shutil.rmtree(photos, ignore_errors=True)
        subprocess.run([STRATA, "photo-load", "make", "--dir", photos, "--count", str(a.count),
                        "--seed", str(a.seed)], check=True, stdout=subprocess.DEVNULL)
    files = sorted(os.path.join(photos, f) for f in os.listdir(photos))
    by_ext = {}
    for f in files:
        by_ext.setdefault(f.rsplit(".", 1)[1], []).append(f)
    megapixels = None

    work = tempfile.mkdtemp(prefix="thumbs-")
    results = {}
    try:
        for mode in a.modes.split(","):
            per_photo = 3 if mode == "thumbs" else 4
            rounds = {side: [] for side in SIDES}
            say(f"{mode}: warm-up (untimed)")
            strata_round(a, photos, os.path.join(work, "strata"), mode)
            vips_round(a, photos, os.path.join(work, "vips"), mode, by_ext)
            for r in range(a.rounds):
                got = {
                    "strata": strata_round(a, photos, os.path.join(work, "strata"), mode),
                    "vips": vips_round(a, photos, os.path.join(work, "vips"), mode, by_ext),
                    "vips-cascade": vips_round(a, photos, os.path.join(work, "vips-cascade"),
                                               mode, by_ext, cascade=True),
                }
                for side in SIDES:
                    if got[side]["outputs"] != per_photo * len(files):
                        sys.exit(f"{side} wrote {got[side]['outputs']} files, not {per_photo * len(files)}")
                    rounds[side].append(got[side])
                megapixels = got["strata"]["report"]["megapixels_in"]
                say(f"{mode} round {r + 1}/{a.rounds}: " + ", ".join(
                    f"{side} {got[side]['wall_secs']:.2f} s ({len(files) / got[side]['wall_secs']:.1f} photos/s)"
                    for side in SIDES))
            summary = {}
            for side in SIDES:
                wall = statistics.median(x["wall_secs"] for x in rounds[side])
                cpu = statistics.median(x["cpu_secs"] for x in rounds[side])
                summary[side] = {
                    "median_wall_secs": wall, "median_cpu_secs": cpu,
                    "photos_per_sec": len(files) / wall,
                    "thumbnails_per_sec": 3 * len(files) / wall,
                    "outputs_per_sec": per_photo * len(files) / wall,
                }
            phases = ("decode", "resize", "encode", "files")
            summary["strata"]["median_phases_secs"] = {
                p: statistics.median(x["report"]["phases_secs"][p] for x in rounds["strata"])
                for p in phases}
            for side in SIDES[1:]:
                summary[f"ratio_strata_to_{side}"] = (summary["strata"]["photos_per_sec"]
                                                      / summary[side]["photos_per_sec"])
            results[mode] = {"summary": summary, "rounds": rounds}
            say(f"{mode}: " + ", ".join(f"{side} {summary[side]['photos_per_sec']:.2f} photos/s"
                                        for side in SIDES)
                + ", strata/vips " + f"{summary['ratio_strata_to_vips']:.2f}x, strata/vips-cascade "
                + f"{summary['ratio_strata_to_vips-cascade']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = os.path.join(ROOT, "bench", "results", f"thumbs-{commit}-{stamp}.json")
    doc = {
        "commit": commit, "dirty": dirty, "utc": stamp, "core": a.core, "rounds": a.rounds,
        "photos": {"count": len(files), "seed": a.seed, "megapixels": megapixels,
                   "bytes": sum(os.path.getsize(f) for f in files),
                   "by_format": {k: len(v) for k, v in by_ext.items()}},
        "vips_version": vips_version, "nproc": os.cpu_count(),
        "modes": results,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print(out)


if __name__ == "__main__":
    main()
