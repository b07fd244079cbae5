#!/usr/bin/env bash
# The edge through an independent HTTP caching conformance suite: Mark Nottingham's HTTP cache
# tests (https://cache-tests.fyi, github.com/http-tests/cache-tests). Its test server is the
# origin, `strata edge` sits in front of it as a reverse proxy, and the suite's client runs every
# test case through the edge (as the suite's own test-host.sh does for nginx, Varnish, Squid).
#
#   bench/edge_conformance.sh                         # the suite from the npm registry
#   SUITE_GIT=/path/to/cache-tests.git bench/edge_conformance.sh   # a git copy of the suite (HEAD,
#                                                     # or SUITE_REV): the newer test set
#   PROXIES="strata nginx varnish" bench/edge_conformance.sh      # also nginx proxy_cache, Varnish
#   ID=conditional-lm-stale bench/edge_conformance.sh  # one test, its exchanges printed
#
# The suite is installed at run time under target/ (never into the repository): the npm package
# `http-cache-tests@$SUITE_VERSION` into target/cache-tests, or, with SUITE_GIT, that tree
# (git archive) into target/cache-tests-git with its dependencies from npm. Node.js and npm come
# from Debian when missing. Everything listens on 127.0.0.1 only (the suite's server is made to
# bind loopback by a preloaded module). Raw results, one JSON file per proxy:
# bench/results/edge-conformance-<commit12>-<UTC stamp>[-git<suite commit>][-<proxy>].json; then a summary per test
# group (pass / fail / optional-fail / setup-fail) and the failing required tests.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE_VERSION=${SUITE_VERSION:-0.4.5}
SUITE_GIT=${SUITE_GIT:-}
SUITE_REV=${SUITE_REV:-HEAD}
PROXIES=${PROXIES:-strata}
OUT=${OUT:-bench/results}

need_pkgs=()
command -v node >/dev/null || need_pkgs+=(nodejs)
command -v npm >/dev/null || need_pkgs+=(npm)
for p in $PROXIES; do
  case $p in
    nginx) command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light) ;;
    varnish) command -v varnishd >/dev/null || [ -x /usr/sbin/varnishd ] || need_pkgs+=(varnish) ;;
  esac
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> installing ${need_pkgs[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# --- the suite ---------------------------------------------------------------------------------
if [ -n "$SUITE_GIT" ]; then
  SUITE_COMMIT=$(git -C "$SUITE_GIT" rev-parse "$SUITE_REV")
  SUITE=target/cache-tests-git
  if [ "$(cat "$SUITE/.commit" 2>/dev/null)" != "$SUITE_COMMIT" ]; then
    echo "==> installing the cache tests at $SUITE_COMMIT into $SUITE"
    rm -rf "$SUITE"; mkdir -p "$SUITE"
    git -C "$SUITE_GIT" archive "$SUITE_COMMIT" | tar -x -C "$SUITE"
    (cd "$SUITE" && npm install --omit=dev --no-audit --no-fund --silent)
    echo "$SUITE_COMMIT" > "$SUITE/.commit"
  fi
  SERVER_JS=test-engine/server/server.mjs; CLI_JS=test-engine/cli.mjs
  TESTS_JS=tests/index.mjs; RESULTS_JS=test-engine/lib/results.mjs; EXTRA_JS=
  SUITE_NAME="cache-tests@${SUITE_COMMIT:0:12}"; SUITE_TAG="-git${SUITE_COMMIT:0:12}"
else
  SUITE=target/cache-tests/node_modules/http-cache-tests
  if [ "$(node -p "require('./$SUITE/package.json').version" 2>/dev/null)" != "$SUITE_VERSION" ]; then
    echo "==> installing http-cache-tests@$SUITE_VERSION from npm into target/cache-tests"
    npm install --no-audit --no-fund --silent --prefix target/cache-tests "http-cache-tests@$SUITE_VERSION"
  fi
  SERVER_JS=server/server.mjs; CLI_JS=cli.mjs
  TESTS_JS=tests/index.mjs; RESULTS_JS=lib/display.mjs; EXTRA_JS=tests/surrogate-control.mjs
  SUITE_NAME="http-cache-tests@$SUITE_VERSION"; SUITE_TAG=""
fi
SUITE=$(cd "$SUITE" && pwd)

if [[ " $PROXIES " == *" strata "* ]] && [ -z "${STRATA_BIN:-}" ]; then
  echo "==> building strata"
  cargo build -q -p strata
fi
STRATA=${STRATA_BIN:-${CARGO_TARGET_DIR:-target}/debug/strata}
COMMIT=$(git rev-parse --short=12 HEAD)
dirty=""; git diff --quiet HEAD -- crates || dirty="-dirty"

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
source bench/backends.sh  # free_port, wait_port

# The suite's server listens on every interface; this makes it listen on loopback.
cat > "$work/loopback.mjs" <<'JS'
import net from 'net'
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (port, ...rest) {
  if (typeof port === 'number' || typeof port === 'string') return listen.call(this, Number(port), '127.0.0.1', ...rest)
  return listen.call(this, port, ...rest)
}
JS
ORIGIN=$(free_port)
(cd "$SUITE" && npm_config_protocol=http npm_config_port=$ORIGIN npm_config_pidfile="$work/server.pid" \
  exec node --import "file://$work/loopback.mjs" "$SERVER_JS") >"$work/server.log" 2>&1 & pids+=($!)
wait_port "$ORIGIN"

start_proxy() { # name -> sets PORT; the proxy in front of 127.0.0.1:$ORIGIN
  PORT=$(free_port)
  case $1 in
    strata)
      STRATA_LOG=warn "$STRATA" edge --listen "127.0.0.1:$PORT" --admin 127.0.0.1:0 \
        --origin "127.0.0.1:$ORIGIN" --memory 64MiB >"$work/strata.out" 2>"$work/strata.err" & pids+=($!) ;;
    nginx)  # the suite's own docker/nginx/nginx.conf, on loopback
      mkdir -p "$work/nginx-cache" "$work/nginx-tmp"
      cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/nginx-error.log warn;
pid $work/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  proxy_cache_path $work/nginx-cache levels=1:2 keys_zone=my-cache:8m max_size=1000m inactive=600m;
  proxy_temp_path $work/nginx-tmp;
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN;
      proxy_cache my-cache;
      proxy_cache_revalidate on;
      proxy_http_version 1.1;
    }
  }
}
CONF
      "$(command -v nginx || echo /usr/sbin/nginx)" -c "$work/nginx.conf" -p "$work" >/dev/null 2>&1 & pids+=($!) ;;
    varnish)  # its default VCL, as the suite's docker image runs it
      mkdir -p "$work/varnish"
      "$(command -v varnishd || echo /usr/sbin/varnishd)" -F -n "$work/varnish" -a "127.0.0.1:$PORT" \
        -b "127.0.0.1:$ORIGIN" -s malloc,64m -T 127.0.0.1:0 >"$work/varnish.out" 2>&1 & pids+=($!) ;;
    *) echo "unknown proxy $1" >&2; exit 2 ;;
  esac
  wait_port "$PORT"
}

# A summary of one results file: per test group, pass / fail / optional-fail / setup-fail (and
# the rest: harness failures, dependency failures, the informational checks), then the failing
# required tests. Test kinds and groups come from the suite itself.
cat > "$SUITE/.summary.mjs" <<'JS'
import fs from 'fs'
const [,, resultsFile, testsJs, resultsJs, extraJs] = process.argv
const tests = (await import(`./${testsJs}`)).default
if (extraJs) tests.push((await import(`./${extraJs}`)).default)
const { determineTestResult } = await import(`./${resultsJs}`)
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))
const name = { '✅': 'pass', '⛔️': 'fail', '⚠️': 'optional_fail', '🔹': 'setup_fail', '⁉️': 'harness_fail', '⚪️': 'dependency_fail', Y: 'check_yes', N: 'check_no' }
const cols = ['pass', 'fail', 'optional_fail', 'setup_fail', 'dependency_fail', 'harness_fail', 'check_yes', 'check_no', 'other']
const total = Object.fromEntries(cols.map(c => [c, 0]))
const failing = []
console.log(['group'.padEnd(20), ...cols.map(c => c.padStart(16))].join(''))
for (const suite of tests) {
  const row = Object.fromEntries(cols.map(c => [c, 0]))
  for (const test of suite.tests) {
    if (results[test.id] === undefined) continue
    let r = name[determineTestResult(tests, test.id, results)[2]]
    if (r === 'fail') failing.push(`${test.id}: ${test.name}  [${JSON.stringify(results[test.id])}]`)
    if (!cols.includes(r)) r = 'other'
    row[r]++; total[r]++
  }
  console.log([suite.id.padEnd(20), ...cols.map(c => String(row[c]).padStart(16))].join(''))
}
console.log(['TOTAL'.padEnd(20), ...cols.map(c => String(total[c]).padStart(16))].join(''))
console.log(`\nfailing required tests (${failing.length}):`)
for (const f of failing) console.log(`  ${f}`)
JS

if [ -n "${ID:-}" ]; then  # one test, its requests and responses dumped; no results file
  for proxy in $PROXIES; do
    start_proxy "$proxy"
    (cd "$SUITE" && npm_config_base="http://127.0.0.1:$PORT" npm_config_id="$ID" npm_package_config_id="$ID" \
      node --no-warnings "$CLI_JS")
    kill "${pids[-1]}" 2>/dev/null || true
  done
  exit 0
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for proxy in $PROXIES; do
  start_proxy "$proxy"
  suffix=""; [ "$proxy" = strata ] || suffix="-$proxy"
  json="$OUT/edge-conformance-$COMMIT$dirty-$stamp$SUITE_TAG$suffix.json"
  echo "==> $SUITE_NAME through $proxy (127.0.0.1:$PORT -> suite server 127.0.0.1:$ORIGIN)"
  (cd "$SUITE" && npm_config_base="http://127.0.0.1:$PORT" npm_config_id="" npm_package_config_id="" \
    node --no-warnings "$CLI_JS") > "$json.tmp"
  # the suite prints its results as one JSON object; keep that alone
  python3 -c 'import json,sys; s=open(sys.argv[1]).read(); d=json.loads(s[s.index("{"):]); json.dump(d, open(sys.argv[2], "w"), indent=1, sort_keys=True)' "$json.tmp" "$json"
  rm -f "$json.tmp"
  echo "==> $json"
  (cd "$SUITE" && node .summary.mjs "$json" "$TESTS_JS" "$RESULTS_JS" $EXTRA_JS)
  kill "${pids[-1]}" 2>/dev/null || true
done
