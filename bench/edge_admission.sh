#!/usr/bin/env bash
# The edge's memory store: TinyLFU admission (what `strata edge` runs) against plain LRU, on
# the same fresh Zipf request streams, at the same memory — replayed in process through the
# edge's own store (`strata cache-load edge`), next to the ideal caches of as many objects
# (Belady's MIN, perfect LFU, exact LRU). 100,000 objects of 2 KB; 500,000 requests to warm,
# 2,000,000 counted; memory for ~1 % and ~10 % of the objects; Zipf s = 0.8, 0.99 and 1.2, and
# a hot set that moves (every 200,000 requests by 20,000 objects).
#
#   bench/edge_admission.sh            # about two minutes on two cores
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
echo "==> building strata (release)"
cargo build --release -q -p strata
STRATA=${STRATA_BIN:-target/release/strata}
COMMIT=$(git rev-parse --short=12 HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || COMMIT="$COMMIT-dirty"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
RAW="$OUT/edge-admission-$COMMIT-$STAMP.jsonl"
: > "$RAW"
run() { # label memory_mib trace-args...
  local label=$1 mib=$2; shift 2
  echo "==> $label, $mib MiB"
  "$STRATA" cache-load edge --objects 100000 --warmup 500000 --requests 2000000 \
    --memory-mib "$mib" --object-bytes 2048 "$@" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]=sys.argv[1]; print(json.dumps(r))' "$label" >> "$RAW"
}
for mib in 4 32; do
  run "zipf 0.8" $mib --exponent 0.8
  run "zipf 0.99" $mib --exponent 0.99
  run "zipf 1.2" $mib --exponent 1.2
  run "moving 0.99" $mib --workload moving --exponent 0.99 --period 200000 --shift 20000
done
python3 - "$RAW" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| workload | memory (objects) | TinyLFU | LRU | TinyLFU − LRU | ideal LRU | perfect LFU | Belady's MIN |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    n = r["requests"]; e = r["edge_store"]; i = r["ideal"]
    t, l = e["tinylfu"]["hit_ratio"], e["lru"]["hit_ratio"]
    print(f"| {r['label']} | {r['memory_bytes'] >> 20} MiB ({r['capacity_objects']:,}) | "
          f"{t:.1%} | {l:.1%} | {100 * (t - l):+.1f} pts | {i['lru_hits'] / n:.1%} | "
          f"{i['lfu_hits'] / n:.1%} | {i['belady_hits'] / n:.1%} |")
PY
echo "raw: $RAW"
