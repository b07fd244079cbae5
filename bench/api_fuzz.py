#!/usr/bin/env python3
"""Property-based fuzzing of the users API against its own OpenAPI document (schemathesis).

    python3 bench/api_fuzz.py                      # seed 1, 100 examples per operation
    python3 bench/api_fuzz.py --seed 7 --max-examples 300

Builds `strata` (debug, in $CARGO_TARGET_DIR or ./target), starts `strata serve` on a free
loopback port over a temporary data directory, signs up an account, grants it the admin role
with `strata admin grant` and logs it in; then runs schemathesis against `/openapi.json` twice —
without credentials, and with the admin's `Authorization: Bearer` — with the checks

    not_a_server_error         no 5xx
    status_code_conformance    every status is one the document lists for the operation
    content_type_conformance   every body has a media type the document lists
    response_schema_conformance  every body matches its documented schema
    positive_data_acceptance   a request the document calls valid is not refused

plus one of its own (bench/api_fuzz_checks.py: the only 5xx a read may answer is the documented
503 for a `Strata-Read-After` the data tier has not reached), and stops the server. `DELETE /sessions/current` (log out) runs last, on its own, so that it
does not end the session the authenticated pass uses. Every pass is bounded by --max-time;
nothing leaves the loopback interface. Uses $STRATA_SCHEMATHESIS or the schemathesis on PATH, else
installs it from PyPI into target/schemathesis-venv. `--bin` tests a given strata binary.
Exits 0 only when no pass found anything.

A photo upload's body is valid to the document whatever its bytes (a binary string: a schema
cannot say "a decodable image"), so for `PUT /users/{id}/photo` its refusals of bytes that are no
image — 413, 415, 422, each documented — count as acceptance too.

A 412 counts as acceptance: `If-Match` names a version of the user, and a well-formed tag for a
version the user is not at is the client's race to lose, not malformed data (as a 409 or 404
is for a resource that is taken or missing). This is set in schemathesis' own configuration.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMATHESIS = "schemathesis>=4.32,<5"
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
    "read_after_503_is_lag_only",  # bench/api_fuzz_checks.py
])
EMAIL = "fuzz-admin@strata.test"
PASSWORD = "fuzz admin password"
PROFILE = {"firstName": "Fuzz", "lastName": "Admin",
           "address": {"streetAddress": "1 Ops Way", "city": "Testville", "state": "TS",
                       "postalCode": "00501"}}
LOGOUT = ("DELETE", "/sessions/current")
# schemathesis' configuration: the statuses that count as accepting schema-valid data (its
# defaults, plus 412; see above), and the reads whose 503 bench/api_fuzz_checks.py judges.
CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "429", "5xx"]

[[operations]]
include-name = ["GET /users", "GET /users/{id}"]
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]

[[operations]]
include-name = ["PUT /users/{id}/photo"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "413", "415", "422", "5xx"]
"""


def ensure_schemathesis():
    """The schemathesis executable: $STRATA_SCHEMATHESIS, the one on PATH, or one installed
    from PyPI into target/schemathesis-venv (needs python3-venv). Returns (path, version)."""
    exe = os.environ.get("STRATA_SCHEMATHESIS") or shutil.which("schemathesis")
    if not exe:
        venv = os.path.join(ROOT, "target", "schemathesis-venv")
        exe = os.path.join(venv, "bin", "schemathesis")
        if not os.path.exists(exe):
            print(f"==> installing {SCHEMATHESIS} into {venv}", flush=True)
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", SCHEMATHESIS],
                           check=True)
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    return exe, out.stdout.strip().split()[-1]


def build(given):
    if given:
        return given
    subprocess.run(["cargo", "build", "--quiet", "-p", "strata"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "debug", "strata")


def start(strata, data):
    proc = subprocess.Popen(
        [strata, "serve", "--addr", "127.0.0.1:0", "--data", data],
        stdout=subprocess.PIPE, stderr=open(os.path.join(os.path.dirname(data), "server.log"), "wb"),
        text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        try:
            ready = json.loads(line)
        except ValueError:
            continue
        if ready.get("ready"):
            return proc, "http://" + ready["addrs"]["http"]
    proc.kill()
    raise SystemExit("strata serve printed no readiness line within 60 s")


def post(base, path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def admin_token(strata, base, data):
    code, body = post(base, "/accounts", {"email": EMAIL, "password": PASSWORD,
                                          "profile": PROFILE})
    if code != 201:
        raise SystemExit(f"cannot sign up the admin: {code} {body!r:.300}")
    subprocess.run([strata, "admin", "grant", EMAIL, "--data", data], check=True,
                   capture_output=True)
    code, body = post(base, "/sessions", {"email": EMAIL, "password": PASSWORD})
    if code != 201:
        raise SystemExit(f"cannot log the admin in: {code} {body!r:.300}")
    return body["access_token"]


def run_pass(name, base, args, config, extra):
    """One schemathesis run; returns its counts as parsed from its summary."""
    cmd = [args.schemathesis, "--config-file", config, "run", base + "/openapi.json",
           "--checks", CHECKS, "--seed", str(args.seed), "--max-examples", str(args.max_examples),
           "--max-time", str(args.max_time), "--workers", "1", "--request-timeout", "15",
           "--generation-database", "none", "--no-color", "--warnings", "off", *extra]
    print(f"== {name}: {' '.join(c if 'Bearer' not in c else 'Authorization: Bearer …' for c in cmd)}",
          flush=True)
    started = time.monotonic()
    env = dict(os.environ, SCHEMATHESIS_HOOKS="api_fuzz_checks",
               PYTHONPATH=os.path.join(ROOT, "bench"))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.max_time + 120,
                             env=env)
        text, code = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as e:
        text, code = (e.stdout or b"").decode(errors="replace"), -1
    elapsed = time.monotonic() - started
    summary = summarize(text)
    summary.update(name=name, exit=code, seconds=round(elapsed, 1))
    failed = code != 0 or summary.get("failures", 0) or summary.get("errors", 0)
    # The whole report when something was found; the summary block otherwise.
    print(text if failed else text[max(0, text.rfind("SUMMARY") - 40):], flush=True)
    return summary


def summarize(text):
    """Operations, test cases, failures and errors, from schemathesis' closing summary."""
    tail = text[text.rfind("SUMMARY"):] if "SUMMARY" in text else ""
    count = lambda pattern: int(m.group(1)) if (m := re.search(pattern, tail)) else 0
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return {
        "operations": count(r"Tested: (\d+)"),
        "cases": count(r"(\d+) generated"),
        "failures": count(r"(\d+) unique failures?"),
        "errors": int(m.group(1)) if (m := re.search(r"(\d+) errors?\b", last)) else 0,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-examples", type=int, default=100)
    p.add_argument("--max-time", type=int, default=600, help="seconds per pass at most")
    p.add_argument("--bin", help="the strata binary to test (default: build it with cargo)")
    args = p.parse_args()
    args.schemathesis, version = ensure_schemathesis()
    strata = build(args.bin)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="strata-api-fuzz-")
    data = os.path.join(tmp, "data")
    config = os.path.join(tmp, "schemathesis.toml")
    with open(config, "w") as f:
        f.write(CONFIG)
    proc, base = start(strata, data)
    results = []
    try:
        token = admin_token(strata, base, data)
        auth = ["-H", f"Authorization: Bearer {token}"]
        logout = ["--include-method", LOGOUT[0], "--include-path", LOGOUT[1]]
        keep = ["--exclude-by", f"method == '{LOGOUT[0]}' and path == '{LOGOUT[1]}'"]
        results.append(run_pass("unauthenticated", base, args, config, []))
        results.append(run_pass("authenticated", base, args, config, auth + keep))
        results.append(run_pass("authenticated, log out", base, args, config, auth + logout))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nschemathesis {version}, seed {args.seed}, --max-examples {args.max_examples}, "
          f"commit {commit}")
    print(f"{'pass':<26} {'operations':>10} {'cases':>7} {'failures':>8} {'errors':>6} {'s':>6}")
    for r in results:
        print(f"{r['name']:<26} {r.get('operations', '?'):>10} {r.get('cases', '?'):>7} "
              f"{r['failures']:>8} {r['errors']:>6} {r['seconds']:>6}")
    bad = [r for r in results if r["exit"] != 0 or r["failures"] or r["errors"]]
    print("verdict:", "nothing found" if not bad else "FOUND PROBLEMS in " +
          ", ".join(r["name"] for r in bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
