"""Shared by the benchmark scripts: an admin's access token for a deployment.

Profile writes need the owner or an admin (docs/accounts.md). The scripts sign up one account
through the deployment, grant it the admin role with `strata admin grant --dir`, as an operator
would, and log it in. They start their deployments with STRATA_ACCESS_TTL_SECS (see
LONG_TOKENS) so that one token outlasts the run.
"""

import http.client
import json
import subprocess

ADMIN_EMAIL = "bench-admin@strata.test"
ADMIN_PASSWORD = "bench admin password"
# The environment for `strata up` in benchmarks: access tokens that outlast a long run.
LONG_TOKENS = {"STRATA_ACCESS_TTL_SECS": "14400"}


def _post(base, path, body):
    host, port = base.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def admin_headers(strata_bin, deploy_dir, base):
    """{"authorization": "Bearer …"} for an admin of the deployment in deploy_dir."""
    profile = {"firstName": "Bench", "lastName": "Admin",
               "address": {"streetAddress": "1 Ops Way", "city": "Testville", "state": "TS",
                           "postalCode": "00501"}, "phoneNumbers": []}
    code, body = _post(base, "/accounts",
                       {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "profile": profile})
    if code not in (201, 409):
        raise SystemExit(f"cannot sign up the benchmark admin: {code} {body[:300]!r}")
    subprocess.run([strata_bin, "admin", "grant", ADMIN_EMAIL, "--dir", deploy_dir],
                   check=True, capture_output=True)
    code, body = _post(base, "/sessions", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    if code != 201:
        raise SystemExit(f"cannot log the benchmark admin in: {code} {body[:300]!r}")
    return {"authorization": "Bearer " + json.loads(body)["access_token"]}
