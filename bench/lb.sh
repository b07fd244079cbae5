#!/usr/bin/env bash
# Side by side, in one run, on this machine: `strata lb` vs nginx vs HAProxy, each a plain
# round-robin HTTP/1.1 keep-alive proxy in front of the same 3 backends, over plain HTTP and
# over TLS (user JSON, EC P-256 certificate, TLS 1.2/1.3).
#
#   bench/lb.sh                      # defaults: 10 s per run, 3 rounds, 32 connections, 2000 req/s open loop
#   DURATION=20 ROUNDS=5 RATE=4000 bench/lb.sh
#
# Backends are three static listeners of one nginx process (the user JSON and a 100 KB body),
# so the proxies, not the backends, are what is measured. Throughput is closed-loop (wrk),
# ROUNDS runs per proxy interleaved, the median reported, with the CPU each request cost the
# proxy (user and system time from /proc), the backends and the load generator;
# latency percentiles are open-loop at a fixed arrival rate with coordinated-omission
# correction (oha -q … --latency-correction). Everything listens on 127.0.0.1 only, and every
# load run stops by itself after DURATION seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
RATE=${RATE:-2000}
OUT=${OUT:-bench/results}
TOOLS=${TOOLS:-target/bench-tools}

need_pkgs=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
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
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

echo "==> building strata (release)"
cargo build --release -q -p strata
STRATA=target/release/strata

work=$(mktemp -d)
chmod 755 "$work"   # nginx workers run as an unprivileged user
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

source bench/backends.sh  # (the working directory is the repository root)

# --- backends: 3 static listeners -------------------------------------------------------------
start_backends "$work" "$NGINX"
head -c 102400 /dev/urandom > "$work/www/100k"

# --- a certificate for the TLS rows (EC P-256, self-signed for localhost) --------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
cat "$work/cert.pem" "$work/key.pem" > "$work/combined.pem"

# --- the three proxies, each with 2 workers/threads (one per core) and no access log ----------
P_STRATA=$(free_port); P_NGINX=$(free_port); P_HAPROXY=$(free_port)
T_STRATA=$(free_port); T_NGINX=$(free_port); T_HAPROXY=$(free_port)
STRATA_LOG=warn "$STRATA" lb --listen 127.0.0.1:$P_STRATA --admin 127.0.0.1:0 \
  --backend b1=127.0.0.1:${B[0]} --backend b2=127.0.0.1:${B[1]} --backend b3=127.0.0.1:${B[2]} \
  --tls-listen 127.0.0.1:$T_STRATA --tls-cert "$work/cert.pem,$work/key.pem" \
  >"$work/logs/strata.out" 2>"$work/logs/strata.err" & pids+=($!); PID_STRATA=$!
cat > "$work/proxy-nginx.conf" <<CONF
worker_processes 2;
daemon off;
error_log $work/logs/proxy-nginx-error.log warn;
pid $work/proxy-nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  upstream backends { server 127.0.0.1:${B[0]}; server 127.0.0.1:${B[1]}; server 127.0.0.1:${B[2]}; keepalive 256; }
  server {
    listen 127.0.0.1:$P_NGINX;
    keepalive_requests 1000000;
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$T_NGINX ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
"$NGINX" -c "$work/proxy-nginx.conf" -p "$work" >/dev/null 2>&1 & pids+=($!); PID_NGINX=$!
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn 8000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  bind 127.0.0.1:$T_HAPROXY ssl crt $work/combined.pem ssl-min-ver TLSv1.2
  default_backend be
backend be
  balance roundrobin
  server b1 127.0.0.1:${B[0]}
  server b2 127.0.0.1:${B[1]}
  server b3 127.0.0.1:${B[2]}
CONF
"$HAPROXY" -f "$work/haproxy.cfg" >/dev/null 2>&1 & pids+=($!); PID_HAPROXY=$!
for p in $P_STRATA $P_NGINX $P_HAPROXY $T_STRATA $T_NGINX $T_HAPROXY; do wait_port "$p"; done
sleep 0.5
for p in $P_STRATA $P_NGINX $P_HAPROXY; do
  for path in /users/12 /100k; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p$path")
    [ "$code" = 200 ] || { echo "proxy on port $p answered $code for $path; see $work/logs" >&2; exit 1; }
  done
done
for p in $T_STRATA $T_NGINX $T_HAPROXY; do
  code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$p/users/12")
  [ "$code" = 200 ] || { echo "TLS proxy on port $p answered $code; see $work/logs" >&2; exit 1; }
done

mkdir -p "$OUT"
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
# The commit the binary was built from (a tree with uncommitted changes is marked -dirty).
commit=$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD || echo -dirty)
csv="$OUT/lb-$commit-$stamp.csv"
echo "proxy,payload,rps,p50_ms,p99_ms,p999_ms,errors,proxy_user_us,proxy_sys_us,backend_us,wrk_us,rps_rounds" > "$csv"

# CPU time (user and system, in clock ticks) of a process and its children processes
# (nginx's workers); threads are counted in their process.
cpu_ticks() { # pid -> "user sys"
  local u=0 s=0 p a b
  for p in "$1" $(pgrep -P "$1" || true); do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    u=$((u + a)); s=$((s + b))
  done
  echo "$u $s"
}
TICK=$(getconf CLK_TCK)
declare -A PROXY_PID=([strata-lb]=$PID_STRATA [nginx]=$PID_NGINX [haproxy]=$PID_HAPROXY)

# One closed-loop throughput run: requests/s and CPU per request — the proxy's (user, system),
# the backends' and the load generator's. Prints "rps user_us sys_us backend_us wrk_us".
throughput() { # name url
  local name=$1 url=$2 out rps pu0 ps0 pu1 ps1 bu0 bs0 bu1 bs1 wrk_cpu
  read -r pu0 ps0 < <(cpu_ticks "${PROXY_PID[$name]}")
  read -r bu0 bs0 < <(cpu_ticks "$PID_BACKENDS")
  out=$( { TIMEFORMAT='wrk-cpu %U %S'; time wrk -t2 -c"$CONNS" -d"${DURATION}s" "$url"; } 2>&1 )
  read -r pu1 ps1 < <(cpu_ticks "${PROXY_PID[$name]}")
  read -r bu1 bs1 < <(cpu_ticks "$PID_BACKENDS")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  wrk_cpu=$(echo "$out" | awk '/^wrk-cpu/ {print $2 + $3}')
  python3 -c "
n = float('${rps:-0}') * $DURATION or 1
t = 1e6 / $TICK
print(f'{n / $DURATION:.0f} {($pu1-$pu0)*t/n:.1f} {($ps1-$ps0)*t/n:.1f} {(($bu1-$bu0)+($bs1-$bs0))*t/n:.1f} {${wrk_cpu:-0}*1e6/n:.1f}')"
}

# One payload: ROUNDS throughput runs per proxy, interleaved (strata, nginx, HAProxy, strata, …)
# so that the machine's drift touches all three alike; each figure is the median of the rounds.
# Then one open-loop latency run per proxy.
compare() { # label path scheme port_strata port_nginx port_haproxy
  local label=$1 path=$2 scheme=$3 r name
  declare -A port=([strata-lb]=$4 [nginx]=$5 [haproxy]=$6)
  for r in $(seq 1 "$ROUNDS"); do
    for name in strata-lb nginx haproxy; do
      echo "==> $label, round $r/$ROUNDS: $name closed-loop throughput (wrk, ${DURATION}s, $CONNS connections)"
      throughput "$name" "$scheme://127.0.0.1:${port[$name]}$path" >> "$work/tp-$name-$label"
    done
  done
  for name in strata-lb nginx haproxy; do
    echo "==> $label: $name open-loop latency at $RATE req/s (oha, ${DURATION}s)"
    local url="$scheme://127.0.0.1:${port[$name]}$path" json
    json=$("$OHA" -z "${DURATION}s" -q "$RATE" -c "$CONNS" --latency-correction --no-tui --insecure --output-format json "$url" 2>/dev/null || \
           "$OHA" -z "${DURATION}s" -q "$RATE" -c "$CONNS" --latency-correction --no-tui -j "$url")
    python3 - "$name" "$label" "$work/tp-$name-$label" "$json" >> "$csv" <<'PY'
import json, statistics, sys
name, label, tp_file, raw = sys.argv[1:5]
rounds = [list(map(float, l.split())) for l in open(tp_file) if l.strip()]
med = [statistics.median(col) for col in zip(*rounds)]
rps, user, sys_, backend, wrk = med
d = json.loads(raw)
p = d.get("latencyPercentiles", {})
def ms(k):
    v = p.get(k)
    return f"{v*1000:.2f}" if isinstance(v, (int, float)) else ""
codes = d.get("statusCodeDistribution", {})
# oha cancels the requests still in flight when the run's time is up ("aborted due to
# deadline"): those are the load generator stopping, not failures of the proxy.
failed = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
errors = sum(v for k, v in codes.items() if not str(k).startswith("2")) + sum(failed.values())
each = "/".join(f"{r[0]:.0f}" for r in rounds)
print(f"{name},{label},{rps:.0f},{ms('p50')},{ms('p99')},{ms('p99.9')},{errors},{user:.1f},{sys_:.1f},{backend:.1f},{wrk:.1f},{each}")
PY
  done
}

compare user-json /users/12 http "$P_STRATA" "$P_NGINX" "$P_HAPROXY"
compare 100KB /100k http "$P_STRATA" "$P_NGINX" "$P_HAPROXY"
# TLS: the user JSON over HTTPS (keep-alive, so the handshake is amortized).
compare user-json-tls /users/12 https "$T_STRATA" "$T_NGINX" "$T_HAPROXY"

echo
python3 bench/report.py "$csv" "$OUT/lb-$commit-$stamp.svg"
echo "raw: $csv   plot: $OUT/lb-$commit-$stamp.svg"
