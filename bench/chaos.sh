#!/usr/bin/env bash
# A long randomized `strata chaos` run on the replicated topology with its control plane on etcd
# (deploy/07-control-plane.toml): the verdict, kept with the commit it ran on.
#
#   DURATION=600 SEED=42 bench/chaos.sh
#
# Builds the release binary, starts the deployment on a free port in a temporary directory,
# runs `strata chaos` (faults on PostgreSQL servers, API servers, controllers, etcd members;
# open-loop writes and reads at RATE per second), writes the verdict to
# bench/results/chaos-<commit>-<time>.json, and stops the deployment. Loopback only; bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
SEED=${SEED:-42}
RATE=${RATE:-20}
TOPOLOGY=${TOPOLOGY:-deploy/07-control-plane.toml}
cargo build --release -p strata
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo "-dirty")
stamp=$(date -u +%Y%m%dT%H%M%SZ)
tmp=$(mktemp -d /tmp/strata-chaos-XXXXXX)
chmod 755 "$tmp" # PostgreSQL runs as the postgres user when this runs as root
trap './target/release/strata down --dir "$tmp/d" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
./target/release/strata up -d --port 0 -f "$TOPOLOGY" --dir "$tmp/d"
mkdir -p bench/results
out="bench/results/chaos-$commit-$stamp.json"
./target/release/strata chaos --dir "$tmp/d" --duration-secs "$DURATION" --rate "$RATE" \
  --seed "$SEED" --targets postgres,api,control,cache,etcd --out "$out"
echo "raw: $out (commit $commit)"
