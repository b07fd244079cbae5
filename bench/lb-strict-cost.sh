#!/usr/bin/env bash
# What the strict HTTP/1.1 checks cost the balancer per request: the balancer built at this
# checkout and at the commit before the checks (BASE), side by side in one run, each in front
# of the same 3 nginx backends as in bench/lb.sh (round robin, keep-alive, 2 workers, no
# access log), loaded alike: ROUNDS closed-loop runs each (wrk, CONNS connections, DURATION s),
# interleaved (this, base, this, base, …) so that the machine's drift touches both alike.
# Reported per build, as the median of its rounds: requests/s, wrk's latency p50/p99, and the
# CPU time (user + system, from /proc/<pid>/stat) the balancer process spent per request —
# the most robust of the three on a small shared machine. The raw rounds and the ratios go
# to bench/results/lb-strict-cost-<commit>-<time>.txt.
#
#   bench/lb-strict-cost.sh                 # 5 rounds of 10 s each, per build
#   DURATION=20 ROUNDS=7 BASE=2aa28ff bench/lb-strict-cost.sh
#
# Both builds are `strata lb` without the rest of the binary (crates/strata-lb/examples/
# strata-lb.rs, the same role code and command line), release profile; the base is built from
# `git archive BASE` with that example file added. Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-32}
BASE=${BASE:-2aa28ff}
OUT=${OUT:-bench/results}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
export CARGO_TARGET_DIR=$TARGET

need_pkgs=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v curl >/dev/null || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> installing ${need_pkgs[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
chmod 755 "$work"   # nginx workers run as an unprivileged user
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

commit=$(git rev-parse --short HEAD)
dirty=""; git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || dirty="-dirty"
base=$(git rev-parse --short "$BASE")
echo "==> building the balancer at $commit$dirty (release)"
cargo build --release -q -p strata-lb --example strata-lb
cp "$TARGET/release/examples/strata-lb" "$work/lb-this"
echo "==> building the balancer at $base (release, same target directory: the dependencies are shared)"
mkdir -p "$work/base"
git archive "$base" | tar -x -C "$work/base"
mkdir -p "$work/base/crates/strata-lb/examples"
cp crates/strata-lb/examples/strata-lb.rs "$work/base/crates/strata-lb/examples/"
(cd "$work/base" && cargo build --release -q -p strata-lb --example strata-lb)
cp "$TARGET/release/examples/strata-lb" "$work/lb-base"

source bench/backends.sh  # (the working directory is the repository root)

# --- backends: 3 static listeners of one nginx process (as in bench/lb.sh) --------------------
start_backends "$work" "$NGINX"

declare -A PORT PID
for name in this base; do
  PORT[$name]=$(free_port)
  STRATA_LOG=warn "$work/lb-$name" lb --listen 127.0.0.1:${PORT[$name]} --admin 127.0.0.1:0 \
    --backend b1=127.0.0.1:${B[0]} --backend b2=127.0.0.1:${B[1]} --backend b3=127.0.0.1:${B[2]} \
    >"$work/logs/$name.out" 2>"$work/logs/$name.err" & pids+=($!); PID[$name]=$!
done
for name in this base; do
  wait_port "${PORT[$name]}"
  ok=""
  for _ in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$name]}/users/12")" = 200 ] && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "the $name balancer never answered 200; see $work/logs" >&2; exit 1; }
done

TICK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw="$OUT/lb-strict-cost-$commit$dirty-$stamp.txt"
{
  echo "# bench/lb-strict-cost.sh at $commit$dirty vs $base (before the strict checks), $(date -u +%FT%TZ)"
  echo "# $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); DURATION=$DURATION ROUNDS=$ROUNDS CONNS=$CONNS; GET /users/12 (user JSON) over HTTP/1.1 keep-alive"
  echo "# round build rps p50_ms p99_ms balancer_cpu_us_per_request"
} > "$raw"
for r in $(seq 1 "$ROUNDS"); do
  for name in this base; do
    echo "==> round $r/$ROUNDS: $name ($([ $name = this ] && echo "$commit$dirty" || echo "$base")), wrk ${DURATION}s, $CONNS connections"
    t0=$(ticks "${PID[$name]}")
    out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$name]}/users/12")
    t1=$(ticks "${PID[$name]}")
    echo "$out" | python3 -c "
import re, sys
text = sys.stdin.read()
def ms(label):
    m = re.search(r'^\s*' + re.escape(label) + r'\s+([0-9.]+)(us|ms|s)\s*$', text, re.M)
    if not m: return float('nan')
    return float(m.group(1)) * {'us': 1e-3, 'ms': 1.0, 's': 1e3}[m.group(2)]
total = int(re.search(r'(\d+) requests in', text).group(1))
rps = float(re.search(r'Requests/sec:\s+([0-9.]+)', text).group(1))
errors = sum(int(n) for n in re.findall(r'Non-2xx or 3xx responses: (\d+)', text))
cpu_us = ($t1 - $t0) * 1e6 / $TICK / max(total, 1)
print(f'$r $name {rps:.0f} {ms(\"50%\"):.3f} {ms(\"99%\"):.3f} {cpu_us:.2f}' + (f' errors={errors}' if errors else ''))
" >> "$raw"
  done
done
python3 - "$raw" "$commit$dirty" "$base" <<'PY' | tee -a "$raw"
import statistics, sys
raw, this, base = sys.argv[1:4]
rows = [l.split() for l in open(raw) if l.strip() and not l.startswith('#')]
med = {}
for name in ('this', 'base'):
    cols = [[float(x) for x in r[2:6]] for r in rows if r[1] == name]
    med[name] = [statistics.median(c) for c in zip(*cols)]
print(f"# medians over {len(rows)//2} rounds each: rps p50_ms p99_ms cpu_us_per_request")
for name, label in (('this', this), ('base', base)):
    rps, p50, p99, cpu = med[name]
    print(f"{name} ({label}): {rps:.0f} req/s, p50 {p50:.3f} ms, p99 {p99:.3f} ms, {cpu:.2f} us CPU/request")
t, b = med['this'], med['base']
print(f"ratio {this}/{base}: CPU per request {t[3]/b[3]:.3f}, requests/s {t[0]/b[0]:.3f}, p50 {t[1]/b[1]:.3f}, p99 {t[2]/b[2]:.3f}")
PY
echo "raw: $raw"
