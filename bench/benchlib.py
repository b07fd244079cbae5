"""What the Python benchmark drivers share: where things are, progress lines, the clean-tree rule
(a result names the commit it measured), installing a Debian anchor when it is missing, the
release build, and finding and thawing the processes a drill froze. Standard library only."""

import json
import os
import shutil
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
STRATA = os.environ.get("STRATA_BIN") or os.path.join(TARGET, "release", "strata")
RESULTS = os.path.join(ROOT, "bench", "results")


def write_result(out_dir, name, commit, result):
    """Writes `result` as `OUT_DIR/NAME-COMMIT-STAMP.json` (UTC stamp) and returns the path."""
    import time
    os.makedirs(out_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(out_dir, f"{name}-{commit}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return path


def say(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def git(*args):
    return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True).stdout.strip()


def commit_label():
    """The commit HEAD names, with `-dirty` when tracked files have uncommitted changes."""
    return (git("rev-parse", "--short=12", "HEAD") or "unknown") + (
        "-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def psql(addr, sql):
    """One statement on a deployment's PostgreSQL server at `addr` (`127.0.0.1:PORT`), as
    `strata up` runs it (user and database `strata`); its output, trimmed."""
    port = addr.rsplit(":", 1)[1]
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", port, "-U", "strata", "-d", "strata",
                           "-v", "ON_ERROR_STOP=1", "-tAc", sql],
                          capture_output=True, text=True, check=True).stdout.strip()


def require_clean_tree(allow_dirty):
    """Exits when tracked files have uncommitted changes, unless allowed."""
    if git("status", "--porcelain", "--untracked-files=no") and not allow_dirty:
        sys.exit("the tree has uncommitted changes: commit first (or --allow-dirty), so the "
                 "result names the code it measured")


def apt_install_unless(found, package):
    """Installs a Debian package when `found` (a program on PATH, or a path) is missing."""
    if shutil.which(found) or os.path.exists(found):
        return
    say(f"installing {package}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                   check=True, env=env)


def build_release():
    """Builds `strata` (release) and returns the commit it was built from."""
    say("building strata (release)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "strata"], cwd=ROOT, check=True)
    return git("rev-parse", "--short=12", "HEAD") or "unknown"


def descendants(pid):
    """Every descendant of `pid` (children, their children, …), from /proc."""
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def thaw(pids):
    """SIGCONT to every process in `pids`; one that has exited meanwhile is skipped."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
