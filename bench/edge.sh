#!/usr/bin/env bash
# Side by side, in one run, on this machine: `strata edge` vs nginx `proxy_cache` vs Varnish,
# each a caching proxy in front of the same origin, each pinned to one core (taskset -c 1; the
# load generator runs on core 0), answering cache hits: a 2 KB and a 100 KB object over plain
# HTTP/1.1 keep-alive, and the 2 KB object over TLS (strata and nginx; Varnish has no TLS of
# its own — it needs a separate terminator — so it has no TLS row).
#
#   bench/edge.sh                      # defaults: 10 s per run, 3 rounds, 32 connections, 2000 req/s open loop
#   DURATION=20 ROUNDS=5 RATE=4000 bench/edge.sh
#
# The origin is one nginx static listener whose answers carry `Cache-Control: public,
# max-age=3600`; each cache is warmed with one request per object and checked to answer a hit
# before it is measured, so only the caches' hit path is timed. Throughput is closed-loop
# (wrk), ROUNDS runs per cache interleaved, the median reported, with the CPU each request cost
# the cache (user and system time from /proc); latency percentiles are open-loop at a fixed
# arrival rate with coordinated-omission correction (oha -q … --latency-correction). Everything
# listens on 127.0.0.1 only; every load run stops by itself after DURATION seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
RATE=${RATE:-2000}
OUT=${OUT:-bench/results}
TOOLS=${TOOLS:-target/bench-tools}
CORE=${CORE:-1}      # the core every cache is pinned to
LOAD_CORE=${LOAD_CORE:-0}

need_pkgs=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v varnishd >/dev/null || [ -x /usr/sbin/varnishd ] || need_pkgs+=(varnish)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> installing ${need_pkgs[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi
OHA=$(command -v oha || true)
if [ -z "$OHA" ]; then
  OHA="$TOOLS/bin/oha"
  if [ ! -x "$OHA" ]; then
    echo "==> installing oha (open-loop HTTP load generator) from crates.io into $TOOLS"
    cargo install oha --locked --root "$TOOLS" >/dev/null
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
VARNISHD=$(command -v varnishd || echo /usr/sbin/varnishd)

echo "==> building strata (release)"
cargo build --release -q -p strata
STRATA=${STRATA_BIN:-target/release/strata}
COMMIT=$(git rev-parse --short=12 HEAD)

work=$(mktemp -d)
chmod 755 "$work"   # nginx and Varnish workers run as unprivileged users
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

source bench/backends.sh  # free_port, wait_port

# --- the origin: static objects, cacheable for an hour ----------------------------------------
mkdir -p "$work/www" "$work/logs" "$work/edge-disk" "$work/varnish"
head -c 2048 /dev/urandom > "$work/www/2k"
head -c 102400 /dev/urandom > "$work/www/100k"
ORIGIN=$(free_port)
cat > "$work/origin.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/logs/origin-error.log warn;
pid $work/origin.pid;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/octet-stream;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN; root $work/www; add_header Cache-Control "public, max-age=3600"; }
}
CONF
"$NGINX" -c "$work/origin.conf" -p "$work" >/dev/null 2>&1 & pids+=($!)
wait_port "$ORIGIN"

# --- a certificate for the TLS rows (EC P-256, self-signed for localhost) --------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1

# --- the three caches, each pinned to one core, memory stores of 256 MiB, no access log -------
P_STRATA=$(free_port); P_NGINX=$(free_port); P_VARNISH=$(free_port)
T_STRATA=$(free_port); T_NGINX=$(free_port)
STRATA_LOG=warn taskset -c "$CORE" "$STRATA" edge --listen 127.0.0.1:$P_STRATA --admin 127.0.0.1:0 \
  --origin 127.0.0.1:$ORIGIN --memory 256MiB --cache-dir "$work/edge-disk" --disk 1GiB \
  --tls-listen 127.0.0.1:$T_STRATA --tls-cert "$work/cert.pem,$work/key.pem" \
  >"$work/logs/strata.out" 2>"$work/logs/strata.err" & pids+=($!); PID_STRATA=$!
mkdir -p "$work/nginx-cache"
cat > "$work/cache-nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/logs/cache-nginx-error.log warn;
pid $work/cache-nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  proxy_cache_path $work/nginx-cache keys_zone=edge:16m max_size=1g inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$P_NGINX;
    listen 127.0.0.1:$T_NGINX ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    location / {
      proxy_cache edge;
      proxy_cache_lock on;
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      add_header Cache-Status \$upstream_cache_status;
    }
  }
}
CONF
taskset -c "$CORE" "$NGINX" -c "$work/cache-nginx.conf" -p "$work" >/dev/null 2>&1 & pids+=($!); PID_NGINX=$!
# Varnish: its default VCL with the origin as backend; a memory store of 256 MiB.
taskset -c "$CORE" "$VARNISHD" -F -n "$work/varnish" -a "127.0.0.1:$P_VARNISH" \
  -b "127.0.0.1:$ORIGIN" -s malloc,256m -T 127.0.0.1:0 \
  >"$work/logs/varnish.out" 2>"$work/logs/varnish.err" & pids+=($!); PID_VARNISH=$!
for p in $P_STRATA $P_NGINX $P_VARNISH $T_STRATA $T_NGINX; do wait_port "$p"; done

# Warm each cache, then check that it answers a hit: strata `Cache-Status: strata-edge; hit`,
# nginx `Cache-Status: HIT` (added above), Varnish `X-Varnish` naming two transactions.
is_hit() { # name headers
  case $1 in
    strata-edge) grep -qi '^cache-status: strata-edge; hit' <<<"$2" ;;
    nginx) grep -qi '^cache-status: HIT' <<<"$2" ;;
    varnish) grep -qiE '^x-varnish: [0-9]+ [0-9]+' <<<"$2" ;;
  esac
}
declare -A PLAIN=([strata-edge]=$P_STRATA [nginx]=$P_NGINX [varnish]=$P_VARNISH)
for name in strata-edge nginx varnish; do
  for path in /2k /100k; do
    curl -s -o /dev/null "http://127.0.0.1:${PLAIN[$name]}$path"
    headers=$(curl -s -D - -o /dev/null "http://127.0.0.1:${PLAIN[$name]}$path" | tr -d '\r')
    is_hit "$name" "$headers" || { echo "$name did not answer $path from its cache:"; echo "$headers"; exit 1; }
  done
done
for p in $T_STRATA $T_NGINX; do
  code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$p/2k")
  [ "$code" = 200 ] || { echo "TLS cache on port $p answered $code; see $work/logs" >&2; exit 1; }
done

mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
csv="$OUT/edge-$COMMIT-$stamp.csv"
echo "proxy,payload,rps,p50_ms,p99_ms,p999_ms,errors,proxy_user_us,proxy_sys_us,backend_us,wrk_us,rps_rounds" > "$csv"

cpu_ticks() { # pid -> "user sys" of it and its children (nginx's worker, Varnish's child)
  local u=0 s=0 p a b
  for p in "$1" $(pgrep -P "$1" || true); do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    u=$((u + a)); s=$((s + b))
  done
  echo "$u $s"
}
TICK=$(getconf CLK_TCK)
PID_ORIGIN=$(cat "$work/origin.pid")
declare -A CACHE_PID=([strata-edge]=$PID_STRATA [nginx]=$PID_NGINX [varnish]=$PID_VARNISH)

throughput() { # name url -> "rps user_us sys_us origin_us wrk_us"
  local name=$1 url=$2 out rps pu0 ps0 pu1 ps1 bu0 bs0 bu1 bs1 wrk_cpu
  read -r pu0 ps0 < <(cpu_ticks "${CACHE_PID[$name]}")
  read -r bu0 bs0 < <(cpu_ticks "$PID_ORIGIN")
  out=$( { TIMEFORMAT='wrk-cpu %U %S'; time taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url"; } 2>&1 )
  read -r pu1 ps1 < <(cpu_ticks "${CACHE_PID[$name]}")
  read -r bu1 bs1 < <(cpu_ticks "$PID_ORIGIN")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  wrk_cpu=$(echo "$out" | awk '/^wrk-cpu/ {print $2 + $3}')
  python3 -c "
n = float('${rps:-0}') * $DURATION or 1
t = 1e6 / $TICK
print(f'{n / $DURATION:.0f} {($pu1-$pu0)*t/n:.1f} {($ps1-$ps0)*t/n:.1f} {(($bu1-$bu0)+($bs1-$bs0))*t/n:.1f} {${wrk_cpu:-0}*1e6/n:.1f}')"
}

compare() { # label path scheme names... (port per name in PORT)
  local label=$1 path=$2 scheme=$3 r name; shift 3
  local names=("$@")
  for r in $(seq 1 "$ROUNDS"); do
    for name in "${names[@]}"; do
      echo "==> $label, round $r/$ROUNDS: $name closed-loop throughput (wrk, ${DURATION}s, $CONNS connections)"
      throughput "$name" "$scheme://127.0.0.1:${PORT[$name]}$path" >> "$work/tp-$name-$label"
    done
  done
  for name in "${names[@]}"; do
    echo "==> $label: $name open-loop latency at $RATE req/s (oha, ${DURATION}s)"
    local url="$scheme://127.0.0.1:${PORT[$name]}$path" json
    json=$(taskset -c "$LOAD_CORE" "$OHA" -z "${DURATION}s" -q "$RATE" -c "$CONNS" --latency-correction --no-tui --insecure --output-format json "$url" 2>/dev/null || \
           taskset -c "$LOAD_CORE" "$OHA" -z "${DURATION}s" -q "$RATE" -c "$CONNS" --latency-correction --no-tui -j "$url")
    python3 - "$name" "$label" "$work/tp-$name-$label" "$json" >> "$csv" <<'PY'
import json, statistics, sys
name, label, tp_file, raw = sys.argv[1:5]
rounds = [list(map(float, l.split())) for l in open(tp_file) if l.strip()]
med = [statistics.median(col) for col in zip(*rounds)]
rps, user, sys_, origin, wrk = med
d = json.loads(raw)
p = d.get("latencyPercentiles", {})
def ms(k):
    v = p.get(k)
    return f"{v*1000:.2f}" if isinstance(v, (int, float)) else ""
codes = d.get("statusCodeDistribution", {})
failed = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
errors = sum(v for k, v in codes.items() if not str(k).startswith("2")) + sum(failed.values())
each = "/".join(f"{r[0]:.0f}" for r in rounds)
print(f"{name},{label},{rps:.0f},{ms('p50')},{ms('p99')},{ms('p99.9')},{errors},{user:.1f},{sys_:.1f},{origin:.1f},{wrk:.1f},{each}")
PY
  done
}

declare -A PORT=([strata-edge]=$P_STRATA [nginx]=$P_NGINX [varnish]=$P_VARNISH)
compare 2KB /2k http strata-edge nginx varnish
compare 100KB /100k http strata-edge nginx varnish
PORT=([strata-edge]=$T_STRATA [nginx]=$T_NGINX)
compare 2KB-tls /2k https strata-edge nginx
compare 100KB-tls /100k https strata-edge nginx

echo
python3 bench/report.py "$csv" "${csv%.csv}.svg"
echo "raw: $csv   plot: ${csv%.csv}.svg"
