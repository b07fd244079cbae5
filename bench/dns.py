#!/usr/bin/env python3
"""Geo-DNS: `strata dns` side by side with gdnsd (geoip plugin) and PowerDNS (geoip backend, and
LUA records), in one run, each server pinned to one core, loaded by dnsperf.

    python3 bench/dns.py [--seconds 20] [--rounds 3] [--strata PATH]

One GeoIP database (MaxMind DB format, written here) places three client networks:
10.1.0.0/16 in US East (Ashburn), 10.2.0.0/16 in US West (Oregon), 10.3.0.0/16 in Europe
(Dublin). One zone, strata.test., has one service name, www.strata.test., whose A answer is
the two balancers of one of three data centres (us-east 127.0.1.1-2, us-west 127.0.2.1-2,
eu-west 127.0.3.1-2), chosen by where the query's EDNS Client Subnet is:

  strata      `strata dns`, policy geo, the data centres' coordinates (nearest wins); its
              health checks see six tiny HTTP endpoints on the balancers' addresses
  gdnsd       plugin geoip, a map with geoip2_db and auto_dc_coords (nearest wins), a dcmap
  pdns-geoip  PowerDNS, geoip backend: a service template on continent and region
  pdns-lua    PowerDNS, bind backend + a LUA A record on continent() and region()

PowerDNS runs with its packet and query caches off (cache-ttl=0, query-cache-ttl=0), so that
each query is answered by its geo logic, as the other two do: neither strata nor gdnsd caches.

Before measuring, each server is asked for www.strata.test A with an ECS in each of the three
networks, and must answer NOERROR, authoritatively, with exactly that data centre's
balancers and an ECS scope above 0; a contender that answers wrongly is not measured.

Measuring: every server runs under `taskset -c 0`, dnsperf under `taskset -c 1`. dnsperf reads
--lines (default 100,000) wire-format queries (-B), each with its own ECS drawn at random: a
random /24 in one of the three networks (30 % each) or outside them (10 %, 172.16.0.0/12),
which no server places (each answers its default, us-east). dnsperf cannot vary an EDNS option
per query otherwise (-E sets one option for all). The contenders run --seconds each, --rounds
times, interleaved. queries/s is dnsperf's; CPU per query is the server's utime+stime (all its
threads and any child process, from /proc) over the measured window divided by the queries
completed. Medians over rounds are reported, with the ratios strata/gdnsd and
strata/pdns-lua and the lost queries; the load average is recorded before each round.

PowerDNS can also be measured as shipped, caches on (contenders pdns-geoip+cache and
pdns-lua+cache, with --contenders): for reference only, as a cache answers repeats of a query
without its geo logic.

The raw result goes to bench/results/dns-COMMIT-TIME.json (COMMIT: the commit of the tree
the strata binary was built in) with an SVG bar chart beside it. Loopback only, every server
on a free port; every run bounded in time; every process started here is stopped at the end,
also on error or SIGTERM.
"""

import argparse
import datetime
import glob
import http.server
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import RESULTS, STRATA, apt_install_unless, say

ZONE = "strata.test."
SERVICE = "www.strata.test."
CONTENDERS = ["strata", "gdnsd", "pdns-geoip", "pdns-lua"]
# PowerDNS as shipped, its packet and query caches on: for reference, not for the targets.
EXTRA = ["pdns-geoip+cache", "pdns-lua+cache"]
TTL = 5

# name, coordinates, country, continent, region, city, the client network it places, balancers
DATACENTRES = [
    ("us-east", (39.0, -77.5), "US", "NA", "VA", "Ashburn", "10.1.0.0", ["127.0.1.1", "127.0.1.2"]),
    ("us-west", (45.6, -121.2), "US", "NA", "OR", "The Dalles", "10.2.0.0", ["127.0.2.1", "127.0.2.2"]),
    ("eu-west", (53.3, -6.3), "IE", "EU", "L", "Dublin", "10.3.0.0", ["127.0.3.1", "127.0.3.2"]),
]
OUTSIDE = ("172.16.0.0", 12)  # in no network of the database


# ---------------------------------------------------------------------------------------------
# A MaxMind DB writer (format 2.0), a port of crates/strata-dns/tests/dns/support/mmdb.rs: an
# IPv6 tree with IPv4 at ::/96, 24-bit records, a data section of maps, strings, doubles,
# integers and arrays.

def _control(out, kind, size):
    if size < 29:
        size_bits, extra = size, b""
    elif size < 29 + 256:
        size_bits, extra = 29, bytes([size - 29])
    elif size < 285 + 65_536:
        size_bits, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        size_bits, extra = 31, (size - 65_821).to_bytes(3, "big")
    if kind <= 7:
        out.append((kind << 5) | size_bits)
    else:
        out.append(size_bits)
        out.append(kind - 7)
    out.extend(extra)


class U16(int):
    pass


class U32(int):
    pass


class U64(int):
    pass


def _encode(value, out):
    if isinstance(value, str):
        b = value.encode()
        _control(out, 2, len(b))
        out.extend(b)
    elif isinstance(value, float):
        _control(out, 3, 8)
        out.extend(struct.pack(">d", value))
    elif isinstance(value, U16):
        _control(out, 5, 2)
        out.extend(struct.pack(">H", value))
    elif isinstance(value, U32):
        _control(out, 6, 4)
        out.extend(struct.pack(">I", value))
    elif isinstance(value, U64):
        _control(out, 9, 8)
        out.extend(struct.pack(">Q", value))
    elif isinstance(value, dict):
        _control(out, 7, len(value))
        for k, v in value.items():
            _encode(k, out)
            _encode(v, out)
    elif isinstance(value, list):
        _control(out, 11, len(value))
        for v in value:
            _encode(v, out)
    else:
        raise TypeError(f"cannot encode {value!r}")


def mmdb(networks, database_type="GeoLite2-City"):
    """A database mapping each IPv4 network (address, prefix length) to its record."""
    data = bytearray()
    empty, node, leaf = 0, 1, 2
    nodes = [[(empty, 0), (empty, 0)]]
    for ip, length, value in networks:
        offset = len(data)
        _encode(value, data)
        bits = int.from_bytes(socket.inet_aton(ip), "big")
        length += 96
        n = 0
        for i in range(length):
            bit = (bits >> (127 - i)) & 1
            kind, at = nodes[n][bit]
            if i == length - 1:
                assert kind == empty, "overlapping networks"
                nodes[n][bit] = (leaf, offset)
            elif kind == node:
                n = at
            else:
                assert kind == empty, "overlapping networks"
                nodes.append([(empty, 0), (empty, 0)])
                nodes[n][bit] = (node, len(nodes) - 1)
                n = len(nodes) - 1
    count = len(nodes)
    out = bytearray()
    for pair in nodes:
        for kind, at in pair:
            v = count if kind == empty else at if kind == node else count + 16 + at
            assert v < 1 << 24
            out.extend(v.to_bytes(3, "big"))
    out.extend(bytes(16))
    out.extend(data)
    out.extend(b"\xab\xcd\xefMaxMind.com")
    _encode({
        "binary_format_major_version": U16(2),
        "binary_format_minor_version": U16(0),
        "build_epoch": U64(1_700_000_000),
        "database_type": database_type,
        "description": {"en": "Strata geo-DNS benchmark networks"},
        "ip_version": U16(6),
        "languages": ["en"],
        "node_count": U32(count),
        "record_size": U16(24),
    }, out)
    return bytes(out)


def city(lat, lon, country, continent, region, name):
    """A GeoLite2-City-shaped record."""
    return {
        "city": {"names": {"en": name}},
        "continent": {"code": continent, "names": {"en": continent}},
        "country": {"iso_code": country, "names": {"en": country}},
        "location": {"latitude": float(lat), "longitude": float(lon)},
        "subdivisions": [{"iso_code": region, "names": {"en": region}}],
    }


# ---------------------------------------------------------------------------------------------
# DNS wire format: just enough to ask for A with ECS and read the answer.

def _name(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"


def query(name, ecs_ip=None, prefix=24, qid=0, qtype=1):
    """A query for `name` (A by default), with EDNS (payload 1232) and an ECS option."""
    out = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1) + _name(name) + struct.pack(">HH", qtype, 1)
    opt = b""
    if ecs_ip is not None:
        octets = socket.inet_aton(ecs_ip)[:(prefix + 7) // 8]
        body = struct.pack(">HBB", 1, prefix, 0) + octets
        opt = struct.pack(">HH", 8, len(body)) + body
    return out + b"\0" + struct.pack(">HHIH", 41, 1232, 0, len(opt)) + opt


def _skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def parse(msg):
    """rcode, AA flag, the A addresses answered, and the ECS (source, scope) echoed, if any."""
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    i = 12
    for _ in range(qd):
        i = _skip_name(msg, i) + 4
    addrs, ecs = [], None
    rcode = flags & 0xF
    for section, count in (("an", an), ("ns", ns), ("ar", ar)):
        for _ in range(count):
            i = _skip_name(msg, i)
            rtype, rclass, ttl, rdlen = struct.unpack(">HHIH", msg[i:i + 10])
            i += 10
            rdata = msg[i:i + rdlen]
            i += rdlen
            if section == "an" and rtype == 1:
                addrs.append(socket.inet_ntoa(rdata))
            if rtype == 41:
                rcode |= (ttl >> 24) << 4
                j = 0
                while j + 4 <= len(rdata):
                    code, olen = struct.unpack(">HH", rdata[j:j + 4])
                    if code == 8:
                        _, source, scope = struct.unpack(">HBB", rdata[j + 4:j + 8])
                        ecs = (source, scope)
                    j += 4 + olen
    return {"id": qid, "rcode": rcode, "aa": bool(flags & 0x0400), "tc": bool(flags & 0x0200),
            "a": sorted(addrs), "ecs": ecs}


def ask(port, ecs_ip, timeout=1.0):
    qid = random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query(SERVICE, ecs_ip, 24, qid), ("127.0.0.1", port))
        while True:
            msg, _ = s.recvfrom(4096)
            r = parse(msg)
            if r["id"] == qid:
                return r


def query_file(path, lines, seed):
    """`lines` wire-format queries (dnsperf -B: each preceded by its 2-byte length), each with
    a random ECS /24: in one of the three networks (30 % each) or outside them (10 %)."""
    rng = random.Random(seed)
    counts = {dc[0]: 0 for dc in DATACENTRES}
    counts["outside"] = 0
    base_out = int.from_bytes(socket.inet_aton(OUTSIDE[0]), "big")
    with open(path, "wb") as f:
        for _ in range(lines):
            r = rng.random()
            if r < 0.9:
                dc = DATACENTRES[int(r / 0.3)]
                net = int.from_bytes(socket.inet_aton(dc[6]), "big")
                ip = net | (rng.randrange(256) << 8)
                counts[dc[0]] += 1
            else:
                ip = base_out | (rng.randrange(1 << (32 - OUTSIDE[1] - 8)) << 8)
                counts["outside"] += 1
            q = query(SERVICE, socket.inet_ntoa(ip.to_bytes(4, "big")), 24)
            f.write(struct.pack(">H", len(q)) + q)
    return counts


# ---------------------------------------------------------------------------------------------
# Processes: started here, stopped here.

STARTED = []  # Popen objects, stopped in reverse order at the end


def free_port():
    """A port free for UDP and TCP on 127.0.0.1 now (for servers that cannot bind port 0
    themselves and report it; a clash shows as a server that does not answer)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
    raise SystemExit("no free loopback port")


def spawn(cmd, cwd, log, stdout=None):
    p = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=stdout if stdout is not None else open(log, "ab"),
                         stderr=open(log, "ab"), start_new_session=True)
    p.log = log
    STARTED.append(p)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def stop_all():
    """Every process started here: SIGTERM to all at once, SIGKILL to any left after 10 s."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut this short
    for p in STARTED:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for p in STARTED:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            say(f"pid {p.pid} ignored SIGTERM for 10 s: SIGKILL")
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def children(pid):
    out = []
    for task in os.listdir("/proc"):
        if task.isdigit():
            try:
                with open(f"/proc/{task}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(task))
            except (OSError, ValueError, IndexError):
                pass
    return out + [g for c in out for g in children(c)]


def cpu_seconds(pid):
    """utime+stime of the process (all its threads) and of its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid, *children(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


def wait_answering(p, port, within=60):
    """Waits until the server answers a plain query for the service (or dies)."""
    deadline = time.time() + within
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"exited with {p.returncode}:\n{tail(p.log)}")
        try:
            ask(port, "10.1.0.0", timeout=0.3)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"not answering on 127.0.0.1:{port} within {within} s:\n{tail(p.log)}")


# ---------------------------------------------------------------------------------------------
# The four contenders: each gets a directory, its configuration, a pinned process.

def pinned(cmd):
    return ["taskset", "-c", "0", *cmd]


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def health_endpoints():
    """One HTTP health endpoint per balancer, on its own loopback address, a free port each."""
    servers, where = [], {}
    for dc in DATACENTRES:
        for ip in dc[7]:
            s = http.server.ThreadingHTTPServer((ip, 0), Health)
            s.daemon_threads = True
            threading.Thread(target=s.serve_forever, daemon=True).start()
            servers.append(s)
            where[ip] = s.server_address[1]
    return servers, where


def start_strata(d, db, binary, health_ports):
    lines = [f'zone = "{ZONE}"', 'services = ["www"]', f"ttl_secs = {TTL}", 'policy = "geo"', ""]
    for name, (lat, lon), *_rest, balancers in DATACENTRES:
        lines += ["[[datacenter]]", f'name = "{name}"',
                  "balancers = [" + ", ".join(f'"{ip}:{health_ports[ip]}"' for ip in balancers) + "]",
                  f"latitude = {lat}", f"longitude = {lon}", ""]
    with open(os.path.join(d, "dns.toml"), "w") as f:
        f.write("\n".join(lines))
    cmd = pinned([binary, "dns", "--config", os.path.join(d, "dns.toml"), "--geoip", db,
                  "--listen", "127.0.0.1:0"])
    out = os.path.join(d, "stdout")
    p = spawn(cmd, d, os.path.join(d, "log"), stdout=open(out, "wb"))
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(out) as f:
            line = f.readline()
        if line.endswith("\n"):
            ready = json.loads(line)
            port = int(ready["addrs"]["dns"].rsplit(":", 1)[1])
            return p, port, cmd
        if p.poll() is not None:
            raise RuntimeError(f"exited with {p.returncode}:\n{tail(p.log)}")
        time.sleep(0.1)
    raise RuntimeError(f"no readiness line within 60 s:\n{tail(p.log)}")


def start_gdnsd(d, db):
    port = free_port()
    os.makedirs(os.path.join(d, "zones"))
    coords = ", ".join(f"{n} => [ {lat}, {lon} ]" for n, (lat, lon), *_ in DATACENTRES)
    dcmap = ", ".join(f"{dc[0]} => [ {', '.join(dc[7])} ]" for dc in DATACENTRES)
    with open(os.path.join(d, "config"), "w") as f:
        f.write(f"""options => {{
  listen => [ 127.0.0.1:{port} ]
  run_dir => {d}/run
  state_dir => {d}/state
}}
plugins => {{ geoip => {{
  maps => {{ strata => {{
    geoip2_db => {db}
    datacenters => [ {", ".join(dc[0] for dc in DATACENTRES)} ]
    auto_dc_coords => {{ {coords} }}
  }} }}
  resources => {{ www => {{ map => strata, dcmap => {{ {dcmap} }} }} }}
}} }}
""")
    with open(os.path.join(d, "zones", "strata.test"), "w") as f:
        f.write(f"""$TTL 3600
@     SOA ns1 hostmaster 1 7200 1800 259200 {TTL}
@     NS  ns1
ns1   A   127.0.0.1
www   {TTL} DYNA geoip!www
""")
    cmd = pinned(["gdnsd", "-c", d, "start"])
    p = spawn(cmd, d, os.path.join(d, "log"))
    wait_answering(p, port)
    return p, port, cmd


def pdns_common(d, port, cache):
    open(os.path.join(d, "pdns.conf"), "w").close()
    caches = [] if cache else ["--cache-ttl=0", "--query-cache-ttl=0", "--negquery-cache-ttl=0"]
    return ["pdns_server", f"--config-dir={d}", f"--socket-dir={d}", "--guardian=no",
            "--daemon=no", "--disable-syslog", "--write-pid=no", "--local-address=127.0.0.1",
            f"--local-port={port}", "--edns-subnet-processing=yes", *caches, "--webserver=no",
            "--api=no", "--security-poll-suffix=", "--loglevel=4", "--log-dns-queries=no"]


def soa_yaml():
    return [f"    {ZONE.rstrip('.')}:",
            f"      - soa: ns1.{ZONE} hostmaster.{ZONE} 1 7200 1800 259200 {TTL}",
            f"      - ns: ns1.{ZONE}"]


def start_pdns_geoip(d, db, cache=False):
    port = free_port()
    lines = ["domains:", f"- domain: {ZONE.rstrip('.')}", f"  ttl: {TTL}", "  records:", *soa_yaml()]
    # continent.region picks a US data centre; continent alone picks Europe; else us-east.
    targets = {"us-east": ["na.va", "default"], "us-west": ["na.or"], "eu-west": ["eu"]}
    for name, *_r, balancers in DATACENTRES:
        for t in targets[name]:
            lines.append(f"    {t}.www.{ZONE.rstrip('.')}:")
            lines += [f"      - a: {ip}" for ip in balancers]
    z = ZONE.rstrip(".")
    lines += ["  services:", f"    www.{z}: [ '%cn.%re.www.{z}', '%cn.www.{z}', 'default.www.{z}' ]"]
    with open(os.path.join(d, "zones.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    cmd = pinned([*pdns_common(d, port, cache), "--launch=geoip", f"--geoip-database-files=mmdb:{db}",
                  f"--geoip-zones-file={d}/zones.yaml"])
    p = spawn(cmd, d, os.path.join(d, "log"))
    wait_answering(p, port)
    return p, port, cmd


def start_pdns_lua(d, db, cache=False):
    port = free_port()
    east, west, eu = (dc[7] for dc in DATACENTRES)
    lua = (f"if continent('EU') then return {{'{eu[0]}','{eu[1]}'}} end "
           f"if region('OR') then return {{'{west[0]}','{west[1]}'}} end "
           f"return {{'{east[0]}','{east[1]}'}}")
    with open(os.path.join(d, "strata.test.zone"), "w") as f:
        f.write(f"""$ORIGIN {ZONE}
$TTL 3600
@     IN SOA ns1 hostmaster 1 7200 1800 259200 {TTL}
@     IN NS  ns1
ns1   IN A   127.0.0.1
www   {TTL} IN LUA A ";{lua}"
""")
    with open(os.path.join(d, "named.conf"), "w") as f:
        f.write(f'zone "{ZONE.rstrip(".")}" {{ type master; file "{d}/strata.test.zone"; }};\n')
    # The geo functions of LUA records need the geoip backend launched (with its database).
    with open(os.path.join(d, "geoip-zones.yaml"), "w") as f:
        f.write("domains: []\n")
    cmd = pinned([*pdns_common(d, port, cache), "--launch=bind,geoip", f"--bind-config={d}/named.conf",
                  "--enable-lua-records=yes", f"--geoip-database-files=mmdb:{db}",
                  f"--geoip-zones-file={d}/geoip-zones.yaml"])
    p = spawn(cmd, d, os.path.join(d, "log"))
    wait_answering(p, port)
    return p, port, cmd


# ---------------------------------------------------------------------------------------------

def install_anchors():
    """gdnsd, PowerDNS (geoip and bind backends) and dnsperf, from Debian, when missing; none
    of their services may stay on port 53 afterwards."""
    def exe_pids(exes):
        pids = set()
        for task in os.listdir("/proc"):
            if task.isdigit():
                try:
                    if os.readlink(f"/proc/{task}/exe") in exes:
                        pids.add(int(task))
                except OSError:
                    pass
        return pids

    daemons = {"/usr/sbin/gdnsd", "/usr/sbin/pdns_server"}
    before = exe_pids(daemons)
    module = lambda name: (glob.glob(f"/usr/lib/*/pdns/lib{name}backend.so") or [f"/nonexistent/{name}"])[0]
    apt_install_unless("gdnsd", "gdnsd")
    apt_install_unless("pdns_server", "pdns-server")
    apt_install_unless(module("geoip"), "pdns-backend-geoip")
    apt_install_unless(module("bind"), "pdns-backend-bind")
    apt_install_unless("dnsperf", "dnsperf")
    apt_install_unless("taskset", "util-linux")
    if os.path.isdir("/run/systemd/system"):
        for unit in ("gdnsd", "pdns"):
            subprocess.run(["systemctl", "disable", "--now", unit], capture_output=True)
    for pid in exe_pids(daemons) - before:
        say(f"stopping {os.readlink(f'/proc/{pid}/exe')} (pid {pid}), started by its package")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    left = exe_pids(daemons)
    if left:
        say(f"warning: gdnsd or PowerDNS already runs here (pids {sorted(left)}), not started by this run")
    return {"daemons_running_after_install": sorted(left), "port_53_bound": port_53_bound()}


def port_53_bound():
    """Whether anything listens on UDP port 53 (0035) of any address."""
    bound = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                bound += [l.split()[1] for l in list(f)[1:] if l.split()[1].endswith(":0035")]
        except OSError:
            pass
    return bound


def versions(binary):
    def out(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (r.stdout + r.stderr).strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unknown ({e})"
    gd = next((l for l in out(["gdnsd", "-h"]).splitlines() if "version" in l), "unknown")
    pd = next((l.split(" ", 3)[-1] for l in out(["pdns_server", "--version"]).splitlines()
               if "PowerDNS Authoritative Server" in l), "unknown")
    dp = next((l for l in out(["dnsperf", "-h"]).splitlines() if l.startswith("Version")), "unknown")
    deb = lambda pkg: subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                                     capture_output=True, text=True).stdout.strip()
    return {"strata": out([binary, "--version"]),
            "gdnsd": f"{gd} (Debian {deb('gdnsd')})",
            "pdns": f"{pd} (Debian {deb('pdns-server')}; geoip backend {deb('pdns-backend-geoip')}, "
                    f"bind backend {deb('pdns-backend-bind')})",
            "dnsperf": f"{dp} (Debian {deb('dnsperf')})",
            "kernel": os.uname().release}


def binary_commit(binary):
    """The commit of the tree the binary was built in (its target/ directory's repository):
    HEAD, and whether tracked files differ from it. When HEAD is newer than the binary, the
    binary was built from an earlier commit: the last one made before the binary was written
    is named instead, and its dirtiness is unknown."""
    top = subprocess.run(["git", "-C", os.path.dirname(os.path.realpath(binary)), "rev-parse",
                          "--show-toplevel"], capture_output=True, text=True).stdout.strip()
    if not top:
        return {"commit": "unknown", "dirty": None, "tree": None}
    g = lambda *a: subprocess.run(["git", "-C", top, *a], capture_output=True, text=True).stdout.strip()
    built = int(os.stat(os.path.realpath(binary)).st_mtime)
    head_time = int(g("log", "-1", "--format=%ct") or 0)
    dirty = g("status", "--porcelain", "--untracked-files=no")
    out = {"commit": g("rev-parse", "--short=12", "HEAD") or "unknown", "dirty": bool(dirty),
           "dirty_files": dirty.splitlines(), "tree": top,
           "binary_written": datetime.datetime.fromtimestamp(built, datetime.timezone.utc).isoformat()}
    if head_time > built:
        before = g("log", "-1", "--first-parent", f"--before={built}", "--format=%H")
        out.update(head=out["commit"], commit=g("rev-parse", "--short=12", before) or "unknown",
                   dirty=None, dirty_files=None,
                   note="HEAD is newer than the binary: named the last commit before it was written")
        say(f"warning: {out['note']} ({out['commit']})")
    return out


def verify(name, port):
    """The same ECS query for each network: the expected data centre's balancers, AA, scope > 0."""
    checks, ok = [], True
    for dc, _c, _co, _cn, _re, _ci, net, balancers in DATACENTRES:
        ecs = net.rsplit(".", 2)[0] + ".77.0"
        try:
            r = ask(port, ecs, timeout=2.0)
        except OSError as e:
            checks.append({"ecs": f"{ecs}/24", "expect": dc, "error": str(e), "pass": False})
            ok = False
            continue
        good = (r["rcode"] == 0 and r["aa"] and r["a"] == sorted(balancers)
                and r["ecs"] is not None and r["ecs"][1] > 0)
        checks.append({"ecs": f"{ecs}/24", "expect": dc, "answer": r["a"], "rcode": r["rcode"],
                       "aa": r["aa"], "ecs_echo": r["ecs"], "pass": good})
        ok &= good
        say(f"  {name}: ECS {ecs}/24 -> {r['a']} scope {r['ecs'] and r['ecs'][1]} "
            f"rcode {r['rcode']}: {'ok' if good else 'WRONG, expected ' + str(balancers)}")
    try:  # informational: a network the database does not place
        r = ask(port, "172.16.5.0", timeout=2.0)
        checks.append({"ecs": "172.16.5.0/24", "expect": "unplaced (informational)", "answer": r["a"],
                       "rcode": r["rcode"], "ecs_echo": r["ecs"], "pass": None})
    except OSError as e:
        checks.append({"ecs": "172.16.5.0/24", "error": str(e), "pass": None})
    return ok, checks


def dnsperf(port, qfile, seconds, clients, outstanding):
    cmd = ["taskset", "-c", "1", "dnsperf", "-B", "-d", qfile, "-s", "127.0.0.1", "-p", str(port),
           "-m", "udp", "-c", str(clients), "-T", "1", "-q", str(outstanding), "-l", str(seconds),
           "-t", "2"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    stats = {"dnsperf_cpu_s": round((after.ru_utime + after.ru_stime)
                                    - (before.ru_utime + before.ru_stime), 3)}
    for line in r.stdout.splitlines():
        line = line.strip()
        for key, label in (("sent", "Queries sent:"), ("completed", "Queries completed:"),
                           ("lost", "Queries lost:"), ("qps", "Queries per second:"),
                           ("run_time_s", "Run time (s):"), ("avg_latency_s", "Average Latency (s):")):
            if line.startswith(label):
                v = line[len(label):].split()[0]
                stats[key] = float(v) if "." in v else int(v)
        if line.startswith("Response codes:"):
            stats["rcodes"] = line[len("Response codes:"):].strip()
    return cmd, stats, r.stdout


def profile(pid, port, qfile, seconds, args, d):
    """Where the server's core goes under load: `perf record` of the server during one extra,
    unrecorded dnsperf run; the top symbols of `perf report`."""
    data = os.path.join(d, "perf.data")
    rec = subprocess.Popen(["perf", "record", "-q", "-F", "499", "-p", str(pid), "-o", data],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dnsperf(port, qfile, seconds, args.clients, args.outstanding)
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=60)
    top = {}
    for sort, n in (("dso", 8), ("dso,symbol", 20)):
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
                            "--percent-limit", "1"], capture_output=True, text=True, timeout=120)
        top[sort] = [" ".join(l.replace(" - ", " ").split()) for l in r.stdout.splitlines()
                     if l.strip() and not l.startswith("#")][:n]
    return top


def wait_quiet(limit, within):
    t0 = time.time()
    load = os.getloadavg()
    say(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    while load[0] >= limit and time.time() - t0 < within:
        time.sleep(15)
        load = os.getloadavg()
        say(f"waiting for a quiet machine (1-min load {load[0]:.2f}, want < {limit})")
    return {"load": [round(x, 2) for x in load], "waited_s": round(time.time() - t0),
            "quiet": load[0] < limit, "limit": limit}


def plot(path, contenders, med, title):
    """Two bar panels: queries/s, and CPU µs per query, per contender."""
    h, pad, gap = 340, 50, 40
    panel = 2 * pad + 105 * len(contenders)  # room for the longest name under each bar
    w = 2 * panel + gap
    colours = {"strata": "#2b7bb9", "gdnsd": "#27ae60", "pdns-geoip": "#e67e22", "pdns-lua": "#c0392b",
               "pdns-geoip+cache": "#f0b27a", "pdns-lua+cache": "#e6b0aa"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>']
    for k, (key, label, fmt) in enumerate((("qps", "queries/s (median; higher is better)", "{:,.0f}"),
                                            ("cpu_us_per_query", "server CPU µs per query (lower is better)", "{:.1f}"))):
        x0 = k * (panel + gap)
        vals = [med[c][key] or 0 for c in contenders]
        top = max(vals + [1e-9])
        bw = (panel - 2 * pad) / max(len(contenders), 1)
        parts.append(f'<text x="{x0 + panel / 2:.0f}" y="42" text-anchor="middle">{label}</text>')
        parts.append(f'<line x1="{x0 + pad:.0f}" y1="{h - pad}" x2="{x0 + panel - pad:.0f}" y2="{h - pad}" stroke="black"/>')
        for i, (c, v) in enumerate(zip(contenders, vals)):
            bh = (h - 2 * pad - 40) * v / top
            x = x0 + pad + i * bw + bw * 0.15
            parts.append(f'<rect x="{x:.0f}" y="{h - pad - bh:.0f}" width="{bw * 0.7:.0f}" height="{bh:.0f}" fill="{colours.get(c, "#777")}"/>')
            parts.append(f'<text x="{x + bw * 0.35:.0f}" y="{h - pad - bh - 5:.0f}" text-anchor="middle">{fmt.format(v)}</text>')
            parts.append(f'<text x="{x + bw * 0.35:.0f}" y="{h - pad + 16:.0f}" text-anchor="middle" font-size="11">{c}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    # A SIGTERM (e.g. from `timeout`) still stops every server: the `finally` below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20, help="dnsperf's run per contender per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--strata", default=STRATA, help="the strata release binary (default: %(default)s)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS),
                    help=f"comma-separated, from {', '.join(CONTENDERS + EXTRA)} (default: %(default)s)")
    ap.add_argument("--lines", type=int, default=100_000, help="queries in dnsperf's file")
    ap.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    ap.add_argument("--outstanding", type=int, default=500, help="dnsperf -q")
    ap.add_argument("--seed", type=int, default=7, help="of the random ECS stream")
    ap.add_argument("--quiet-load", type=float, default=1.5,
                    help="wait (at most --quiet-wait s) for the 1-min load average to drop below this")
    ap.add_argument("--quiet-wait", type=int, default=600)
    ap.add_argument("--perf", type=int, default=0, metavar="SECONDS",
                    help="after the rounds, profile each server with `perf record` for this long")
    ap.add_argument("--no-save", action="store_true", help="print, but write nothing to bench/results")
    args = ap.parse_args()
    contenders = [c for c in args.contenders.split(",") if c]
    unknown = set(contenders) - set(CONTENDERS + EXTRA)
    if unknown:
        sys.exit(f"unknown contenders: {', '.join(sorted(unknown))}")
    if os.cpu_count() < 2:
        sys.exit("needs two cores: the server on core 0, dnsperf on core 1")
    binary = os.path.abspath(args.strata)
    if "strata" in contenders:
        r = subprocess.run([binary, "dns", "--help"], capture_output=True)
        if r.returncode != 0:
            sys.exit(f"{binary} has no `dns` subcommand (or is missing): build it first, "
                     f"or leave strata out with --contenders")
    anchors = install_anchors()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    built = binary_commit(binary) if "strata" in contenders else {"commit": "none", "dirty": None}
    work = tempfile.mkdtemp(prefix="strata-dns-bench-")
    result = {"started": stamp, "strata_binary": binary, "strata_commit": built,
              "machine": {"cores": os.cpu_count(), "load_at_start": [round(x, 2) for x in os.getloadavg()]},
              "versions": versions(binary), "anchors": anchors,
              "settings": {"seconds": args.seconds, "rounds": args.rounds, "lines": args.lines,
                           "clients": args.clients, "outstanding": args.outstanding,
                           "seed": args.seed, "ecs_source_prefix": 24, "ttl": TTL,
                           "pinning": "servers on core 0 (taskset -c 0), dnsperf on core 1 (taskset -c 1)",
                           "pdns_caches": "off (cache-ttl=0, query-cache-ttl=0, negquery-cache-ttl=0), "
                                          "except in the +cache variants (PowerDNS's defaults)"},
              "datacentres": [{"name": n, "coordinates": c, "country": co, "continent": cn, "region": re_,
                               "clients": f"{net}/16", "balancers": b}
                              for n, c, co, cn, re_, _ci, net, b in DATACENTRES],
              "contenders": {}}
    servers = {}
    health = []
    try:
        db = os.path.join(work, "geo.mmdb")
        with open(db, "wb") as f:
            f.write(mmdb([(net, 16, city(lat, lon, co, cn, re_, ci))
                          for _n, (lat, lon), co, cn, re_, ci, net, _b in DATACENTRES]))
        qfile = os.path.join(work, "queries.bin")
        result["query_mix"] = query_file(qfile, args.lines, args.seed)
        health, health_ports = health_endpoints()
        starters = {"strata": lambda d: start_strata(d, db, binary, health_ports),
                    "gdnsd": lambda d: start_gdnsd(d, db),
                    "pdns-geoip": lambda d: start_pdns_geoip(d, db),
                    "pdns-lua": lambda d: start_pdns_lua(d, db),
                    "pdns-geoip+cache": lambda d: start_pdns_geoip(d, db, cache=True),
                    "pdns-lua+cache": lambda d: start_pdns_lua(d, db, cache=True)}
        for c in contenders:
            d = os.path.join(work, c)
            os.makedirs(d)
            entry = result["contenders"][c] = {"rounds": []}
            say(f"starting {c}")
            try:
                p, port, cmd = starters[c](d)
            except RuntimeError as e:
                say(f"{c} did not start: {e}")
                entry.update(started=False, error=str(e))
                continue
            entry.update(started=True, command=" ".join(cmd), port=port)
            for conf in sorted(os.listdir(d)):
                full = os.path.join(d, conf)
                if conf in ("config", "dns.toml", "zones.yaml", "strata.test.zone", "named.conf"):
                    entry.setdefault("config", {})[conf] = open(full).read()
            if c == "gdnsd":
                entry.setdefault("config", {})["zones/strata.test"] = open(os.path.join(d, "zones", "strata.test")).read()
            ok, checks = verify(c, port)
            entry.update(verified=ok, checks=checks)
            if not ok:
                say(f"{c} answers wrongly: it is not measured")
                stop(p)
                continue
            servers[c] = (p, port)
        if not servers:
            raise SystemExit("no contender answered correctly")
        say("warming up each server (5 s, not recorded)")
        for c, (p, port) in servers.items():
            cmd, stats, _ = dnsperf(port, qfile, 5, args.clients, args.outstanding)
            result["contenders"][c]["warmup"] = stats
            result["contenders"][c]["dnsperf_command"] = " ".join(cmd)
        result["quiet_check"] = wait_quiet(args.quiet_load, args.quiet_wait)
        for rnd in range(args.rounds):
            for c, (p, port) in servers.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{c} died (exit {p.returncode}):\n{tail(p.log)}")
                load = [round(x, 2) for x in os.getloadavg()]
                cpu0, t0 = cpu_seconds(p.pid), time.time()
                cmd, stats, raw = dnsperf(port, qfile, args.seconds, args.clients, args.outstanding)
                cpu1, t1 = cpu_seconds(p.pid), time.time()
                # Busy shares are over dnsperf's sending time: after it, dnsperf only waits out
                # the timeout of lost queries, and the server is idle.
                run = stats.get("run_time_s") or (t1 - t0)
                stats.update(round=rnd + 1, load_before=load, server_cpu_s=round(cpu1 - cpu0, 3),
                             wall_s=round(t1 - t0, 3),
                             server_core_busy=round((cpu1 - cpu0) / run, 3),
                             dnsperf_core_busy=round(stats["dnsperf_cpu_s"] / run, 3),
                             cpu_us_per_query=round((cpu1 - cpu0) * 1e6 / max(stats.get("completed", 0), 1), 3))
                result["contenders"][c]["rounds"].append(stats)
                say(f"round {rnd + 1} {c}: {stats.get('qps', 0):,.0f} q/s, "
                    f"{stats['cpu_us_per_query']:.2f} µs CPU/query, server core {stats['server_core_busy']:.0%} busy, "
                    f"dnsperf {stats['dnsperf_core_busy']:.0%}, "
                    f"lost {stats.get('lost')}, load {load[0]}")
        if args.perf:
            for c, (p, port) in servers.items():
                if shutil.which("perf"):
                    say(f"profiling {c} for {args.perf} s (not recorded in the figures)")
                    result["contenders"][c]["perf_top"] = profile(p.pid, port, qfile, args.perf, args,
                                                                   os.path.join(work, c))
        med = {}
        for c in servers:
            rs = result["contenders"][c]["rounds"]
            med[c] = {"qps": statistics.median(r.get("qps", 0) for r in rs),
                      "cpu_us_per_query": statistics.median(r["cpu_us_per_query"] for r in rs),
                      # What one fully busy core would answer at that cost (derived, not measured).
                      "qps_per_busy_core": round(1e6 / max(statistics.median(r["cpu_us_per_query"] for r in rs), 1e-9)),
                      "server_core_busy": statistics.median(r["server_core_busy"] for r in rs),
                      "dnsperf_core_busy": statistics.median(r["dnsperf_core_busy"] for r in rs),
                      "lost": sum(r.get("lost", 0) for r in rs),
                      "sent": sum(r.get("sent", 0) for r in rs)}
            result["contenders"][c]["median"] = med[c]
        ratios = {}
        if "strata" in med:
            for other, target in (("gdnsd", 0.8), ("pdns-lua", 20.0), ("pdns-geoip", None)):
                if other in med and med[other]["qps"]:
                    r = med["strata"]["qps"] / med[other]["qps"]
                    ratios[f"strata/{other}"] = {
                        "qps_ratio": round(r, 3), "target": target,
                        "met": None if target is None else r >= target,
                        "cpu_per_query_ratio": round(med[other]["cpu_us_per_query"] / med["strata"]["cpu_us_per_query"], 3)}
            if "strata/gdnsd" in ratios:
                ratios["strata/gdnsd"]["moonshot_1.0_met"] = ratios["strata/gdnsd"]["qps_ratio"] >= 1.0
        result["ratios"] = ratios
        result["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        print("| contender | queries/s (median) | CPU µs/query (median) | queries/s per busy core | server core busy | dnsperf core busy | lost / sent |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for c in servers:
            m = med[c]
            print(f"| {c} | {m['qps']:,.0f} | {m['cpu_us_per_query']:.2f} | {m['qps_per_busy_core']:,} | "
                  f"{m['server_core_busy']:.0%} | {m['dnsperf_core_busy']:.0%} | {m['lost']:,} / {m['sent']:,} |")
        for k, v in ratios.items():
            print(f"{k}: {v}")
        if not args.no_save:
            sha = built["commit"] + ("-dirty" if built.get("dirty") else "")
            name = f"dns-{sha}-{stamp}"
            os.makedirs(RESULTS, exist_ok=True)
            with open(os.path.join(RESULTS, name + ".json"), "w") as fh:
                json.dump(result, fh, indent=1)
            plot(os.path.join(RESULTS, name + ".svg"), list(servers), med,
                 f"Geo answers with ECS, server pinned to one core, dnsperf (strata {sha})")
            print(f"raw result: bench/results/{name}.json (+ .svg)", file=sys.stderr)
        else:
            print(json.dumps(result, indent=1))
    finally:
        stop_all()
        for s in health:
            s.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
