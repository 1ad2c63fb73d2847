"""The side-by-side benchmark driver: starts Sextant and the reference servers (Knot DNS, NSD,
Unbound, dnsmasq) on 127.0.0.1 high ports pinned to core 0, drives them with dnsperf pinned to
core 1, and writes bench/results/<date>.md, <date>.png and docs/performance.md.
Only ever talks to 127.0.0.1. Called by bench/run.sh (which builds and installs first)."""

import argparse
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import gen

HERE = os.path.dirname(os.path.abspath(__file__))
COMMANDS = []  # every command run, for the report
NOTES = []
API_SCALE = {}
CONFIGS = {}  # Sextant label -> Corefile (ports masked), for the report
CLK = os.sysconf("SC_CLK_TCK")
ALL_SCENARIOS = ["cluster", "hits", "search", "nodecache", "file", "dnssec", "transports", "callgrind", "large",
                 "api", "overload"]
SERVER_CORE = "0"
CLIENT_CORE = "1"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def record(argv):
    s = " ".join(shlex.quote(a) for a in argv)
    if s not in COMMANDS:
        COMMANDS.append(s)


_HANDED_OUT = set()


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1, below the kernel's ephemeral range
    (net.ipv4.ip_local_port_range), so that no client socket of the run (dnsperf, h2load, the
    servers' own upstream sockets) can take it between this check and the server's bind; never
    the same port twice in one run."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    while True:
        port = rng.randrange(10000, max(low, 10001))
        if port in _HANDED_OUT:
            continue
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind(("127.0.0.1", port))
            t.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        _HANDED_OUT.add(port)
        return port


def probe(port, name="probe.invalid.", timeout=0.3):
    """One UDP query to 127.0.0.1:port; True on any reply."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
        return len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid
    except OSError:
        return False
    finally:
        s.close()


# ---- processes -------------------------------------------------------------------------------


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


class Proc:
    """A server process (and its children: NSD forks) pinned to a core."""

    def __init__(self, label, argv, cwd, port, core=SERVER_CORE, out=None, probe_name="probe.invalid.",
                 ready_timeout=60, env=None):
        self.label, self.argv, self.cwd, self.port, self.core = label, argv, cwd, port, core
        self.out = out or os.path.join(cwd, label.replace(" ", "_").replace("/", "_") + ".log")
        self.probe_name, self.ready_timeout, self.env = probe_name, ready_timeout, env
        self.p = None

    def start(self):
        argv = ["taskset", "-c", self.core] + self.argv
        record(argv)
        self.fh = open(self.out, "ab")
        self.p = subprocess.Popen(argv, cwd=self.cwd, stdout=self.fh, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        end = time.time() + self.ready_timeout
        while time.time() < end:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.p.returncode}; log:\n{self.tail()}")
            if probe(self.port, self.probe_name):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.label} did not answer on port {self.port}; log:\n{self.tail()}")

    def tail(self):
        try:
            with open(self.out, "rb") as f:
                return f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    def pids(self):
        if not self.p or self.p.poll() is not None:
            return []
        kids = children_map()
        out, todo = [], [self.p.pid]
        while todo:
            x = todo.pop()
            out.append(x)
            todo += kids.get(x, [])
        return out

    def cpu(self):
        t = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                t += int(fields[11]) + int(fields[12])  # utime, stime
            except OSError:
                pass
        return t / CLK

    def _status_kib(self, *keys):
        """The sum over the process tree of /proc/PID/status fields (KiB), in the order asked."""
        tot = dict.fromkeys(keys, 0)
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        k = line.split(":", 1)[0]
                        if k in tot:
                            tot[k] += int(line.split()[1])
            except OSError:
                pass
        return tuple(tot[k] for k in keys)

    def mem(self):
        return self._status_kib("VmRSS", "VmHWM")  # KiB

    def run_wait(self):
        """Seconds the process tree's threads have spent runnable but waiting for a CPU
        (/proc/PID/task/TID/schedstat, second field): what other processes on the server's core
        cost its answers in latency."""
        t = 0
        for pid in self.pids():
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        t += int(f.read().split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        return t / 1e9

    def mem_split(self):
        """(RssAnon, RssFile) in KiB: the process's own memory, and the pages of its binary and
        libraries it has mapped (shared with the page cache)."""
        return self._status_kib("RssAnon", "RssFile")

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if getattr(self, "fh", None):
            self.fh.close()


# ---- dnsperf ---------------------------------------------------------------------------------


def dnsperf(port, qfile, duration=None, runs=None, rate=None, verbose=False, clients=4, outstanding=200,
            extra=None):
    """extra: more dnsperf arguments (the transport: `-m dot`, `-m doh -O doh-uri=...`)."""
    argv = ["taskset", "-c", CLIENT_CORE, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile,
            "-T", "1", "-c", str(clients), "-q", str(outstanding), "-t", "2"] + (extra or [])
    if duration:
        argv += ["-l", str(duration)]
    if runs:
        argv += ["-n", str(runs)]
    if rate:
        argv += ["-Q", str(rate)]
    if verbose:
        argv += ["-v"]
    shown = ["QUERYFILE" if a == qfile else "PORT" if a == str(port) else a.replace(f":{port}/", ":PORT/")
             for a in argv]
    record(shown)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = r.stdout
    res = {"lat": []}
    for key, pat in (("sent", r"Queries sent:\s+(\d+)"), ("completed", r"Queries completed:\s+(\d+)"),
                     ("lost", r"Queries lost:\s+(\d+)"), ("qps", r"Queries per second:\s+([\d.]+)"),
                     ("runtime", r"Run time \(s\):\s+([\d.]+)")):
        m = re.search(pat, out)
        res[key] = float(m.group(1)) if m else 0.0
    m = re.search(r"Response codes:\s+(.*)", out)
    res["rcodes"] = m.group(1).strip() if m else ""
    if verbose:
        for line in out.splitlines():
            if line.startswith("> "):
                try:
                    res["lat"].append(float(line.rsplit(" ", 1)[1]))
                except ValueError:
                    pass
    if res["completed"] == 0:
        log(f"dnsperf got no answers from port {port}:\n{out[-2000:]}")
    return res


QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}


def doh_uris(qf, port, path, limit=20000):
    """The queries of qf (`name TYPE` lines) as RFC 8484 GET URIs (`/dns-query?dns=`, ID 0, RD),
    one per line, for h2load."""
    import base64
    with open(qf) as f, open(path, "w") as out:
        for i, line in enumerate(f):
            if i >= limit:
                break
            name, t = line.split()
            wire = struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 0)
            wire += b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".") if l) + b"\0"
            wire += struct.pack(">HH", QTYPES[t], 1)
            b64 = base64.urlsafe_b64encode(wire).decode().rstrip("=")
            out.write(f"https://127.0.0.1:{port}/dns-query?dns={b64}\n")


def h2load(port, urifile, duration=None, runs=None, rate=None, verbose=False, clients=4, streams=50,
           extra=None):
    """HTTP/2 load (nghttp2's h2load) over the URIs of urifile, the DoH counterpart of dnsperf
    (whose DoH client in Debian 12 loses nearly every query with more than one outstanding):
    the same result keys, answered = 2xx, latencies from its per-request log."""
    argv = ["taskset", "-c", CLIENT_CORE, "h2load", "-c", str(clients), "-m", str(streams),
            "-i", urifile, "-D", str(duration or 2)]
    if rate:
        argv += ["--rps", str(max(1, rate // clients))]
    logf = None
    if verbose:
        logf = urifile + ".log"
        argv += ["--log-file", logf]
    record(["URIFILE" if a == urifile else "LOGFILE" if a == logf else a for a in argv])
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    res = {"lat": [], "rcodes": ""}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    res["runtime"], res["qps"] = (float(m.group(1)), float(m.group(2))) if m else (0.0, 0.0)
    # Requests still open when the run's time is up are neither answered nor lost.
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out)
    done, ok = (int(m.group(3)), int(m.group(4))) if m else (0, 0)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    two = int(m.group(1)) if m else 0
    res["sent"], res["completed"], res["lost"] = done, min(ok, two), max(0, done - min(ok, two))
    res["rcodes"] = (f"HTTP 2xx {m.group(1)}, 4xx {m.group(3)}, 5xx {m.group(4)}" if m else "")
    if logf:
        with open(logf) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    res["lat"].append(int(parts[2]) / 1e6)
        os.unlink(logf)
    if res["completed"] == 0:
        log(f"h2load got no answers from port {port}:\n{out[-2000:]}")
    return res


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def median(xs):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


# ---- server configurations -------------------------------------------------------------------


class Env:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.bin = args.bin
        # CoreDNS built by the user (COREDNS_BIN), measured beside Sextant in every scenario,
        # with the fake API server (`crates/fakeapi/examples/serve.rs`) serving it the cluster
        # Sextant reads from a manifest.
        self.coredns, self.fakeapi = getattr(args, "coredns", None), getattr(args, "fakeapi", None)
        self.apis = []
        out = subprocess.run([self.bin, "-plugins"], stdout=subprocess.PIPE, text=True).stdout
        self.plugins = {l.strip()[4:] for l in out.splitlines() if l.strip().startswith("dns.")}

    def cluster_api(self):
        """The fake API server serving the generated cluster (started once), for CoreDNS."""
        if not self.coredns:
            return None
        if not getattr(self, "_cluster_api", None):
            self._cluster_api = fake_api(self, self.path("cluster.json"))
        return self._cluster_api

    def has(self, *names):
        return all(n in self.plugins for n in names)

    def path(self, *p):
        return os.path.join(self.work, *p)


def sextant(env, label, corefile, port, probe_name="probe.invalid.", out=None, timeout=90, wrap=None):
    d = env.path("sx-" + re.sub(r"[^a-z0-9]+", "-", label.lower()))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "Corefile"), "w") as f:
        f.write(corefile)
    CONFIGS.setdefault(label, re.sub(r":\d{4,5}\b", ":PORT", corefile))
    argv = (wrap or []) + [env.bin, "-conf", os.path.join(d, "Corefile"), "-quiet"]
    return Proc(label, argv, d, port, out=out, probe_name=probe_name, ready_timeout=timeout)


def fake_api(env, manifest, control=False):
    """Starts the fake API server with `manifest`'s objects (on core 1, beside the load
    generator: it only serves the list and the watch); returns its URL, and with `control` also
    the process, whose stdin takes the example's commands (`compact`, `churn RATE SECONDS`)."""
    argv = ["taskset", "-c", CLIENT_CORE, env.fakeapi, manifest]
    record(argv)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         stdin=subprocess.PIPE, start_new_session=True)
    env.apis.append(p)
    url = p.stdout.readline().strip()
    if not url.startswith("http"):
        raise RuntimeError(f"fake API server for {manifest} did not start")
    return (url, p) if control else url


def api_command(p, line):
    p.stdin.write(line + "\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def dns_answers(port, name, qtype=1, timeout=0.5):
    """True when 127.0.0.1:port answers `name` with NOERROR and at least one answer record."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        d, _ = s.recvfrom(4096)
        return len(d) >= 12 and d[:2] == q[:2] and d[3] & 0x0F == 0 and struct.unpack(">H", d[6:8])[0] > 0
    except OSError:
        return False
    finally:
        s.close()


def histogram_quantiles(metrics, name, qs):
    """Upper bucket bounds (seconds) holding the quantiles `qs` of a Prometheus histogram, its
    label sets summed; (count, [bounds])."""
    buckets, count = {}, 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "_bucket{"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets[float(le)] = buckets.get(float(le), 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            count += float(line.rsplit(" ", 1)[1])
    out = []
    for q in qs:
        b = next((le for le in sorted(buckets) if count and buckets[le] >= q * count), None)
        out.append(b)
    return count, out


def coredns(env, label, corefile, port, probe_name="probe.invalid.", out=None, timeout=90, api=None):
    """CoreDNS with Sextant's Corefile of the same scenario; `manifests FILE` (Sextant's
    API-less source) becomes `endpoint URL` of a fake API server serving that file."""
    if "manifests " in corefile:
        corefile = re.sub(r"manifests \S+", f"endpoint {api}", corefile)
    d = env.path("cd-" + re.sub(r"[^a-z0-9]+", "-", label.lower()))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "Corefile"), "w") as f:
        f.write(corefile)
    CONFIGS.setdefault(label, re.sub(r":\d{4,5}\b", ":PORT", corefile))
    return Proc(label, [env.coredns, "-conf", os.path.join(d, "Corefile"), "-quiet"], d, port, out=out,
                probe_name=probe_name, ready_timeout=timeout)


def twin(env, sx, label, api=None):
    """The CoreDNS twin of Sextant server `sx` (same Corefile, another port), or None."""
    if not env.coredns:
        return None
    p = free_port()
    conf = open(os.path.join(sx.cwd, "Corefile")).read().replace(f":{sx.port} {{", f":{p} {{")
    return coredns(env, label, conf, p, probe_name=sx.probe_name, api=api)


def knot(env, label, zones, zdir, port, core=SERVER_CORE):
    d = env.path("knot-" + label.replace(" ", "-"))
    os.makedirs(os.path.join(d, "db"), exist_ok=True)
    conf = (f"server:\n    listen: 127.0.0.1@{port}\n    rundir: \"{d}\"\n    pidfile: \"{d}/knot.pid\"\n"
            f"    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n"
            f"database:\n    storage: \"{d}/db\"\ncontrol:\n    listen: \"{d}/knot.sock\"\n"
            f"log:\n  - target: stderr\n    any: notice\n"
            f"template:\n  - id: default\n    storage: \"{zdir}\"\n    semantic-checks: off\n"
            f"    journal-content: none\n    zonefile-sync: -1\nzone:\n")
    for z in zones:
        conf += f"  - domain: {z}.\n    file: {z}.zone\n"
    with open(os.path.join(d, "knot.conf"), "w") as f:
        f.write(conf)
    return Proc(label, ["knotd", "-c", os.path.join(d, "knot.conf")], d, port, core=core,
                probe_name=zones[0] + ".")


def nsd(env, label, zones, zdir, port):
    d = env.path("nsd-" + label.replace(" ", "-"))
    os.makedirs(d, exist_ok=True)
    conf = (f"server:\n    ip-address: 127.0.0.1@{port}\n    server-count: 1\n    do-ip6: no\n"
            f"    username: \"\"\n    chroot: \"\"\n    zonesdir: \"{zdir}\"\n    pidfile: \"{d}/nsd.pid\"\n"
            f"    xfrdfile: \"{d}/xfrd.state\"\n    zonelistfile: \"{d}/zone.list\"\n    database: \"\"\n"
            f"    logfile: \"{d}/nsd-server.log\"\n    verbosity: 1\n    hide-version: yes\n    rrl-ratelimit: 0\n"
            f"remote-control:\n    control-enable: no\n")
    for z in zones:
        conf += f"zone:\n    name: \"{z}.\"\n    zonefile: \"{z}.zone\"\n"
    with open(os.path.join(d, "nsd.conf"), "w") as f:
        f.write(conf)
    return Proc(label, ["nsd", "-d", "-c", os.path.join(d, "nsd.conf")], d, port, probe_name=zones[0] + ".")


def unbound(env, label, port, forwards, extra="", control=False):
    """forwards: list of (zone, port, tcp). control: remote control on a unix socket in its
    directory (no certificates), for `unbound-control -c DIR/unbound.conf stats_noreset`."""
    d = env.path("unbound-" + label.replace(" ", "-"))
    os.makedirs(d, exist_ok=True)
    rc = (f"remote-control:\n    control-enable: yes\n    control-interface: \"{d}/control.sock\"\n"
          f"    control-use-cert: no\n") if control else "remote-control:\n    control-enable: no\n"
    conf = (f"server:\n    interface: 127.0.0.1\n    port: {port}\n    do-daemonize: no\n    chroot: \"\"\n"
            f"    username: \"\"\n    directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n"
            f"    use-syslog: no\n    logfile: \"\"\n    verbosity: 0\n    num-threads: 1\n    do-ip6: no\n"
            f"    so-reuseport: no\n    access-control: 127.0.0.0/8 allow\n    do-not-query-localhost: no\n"
            f"    module-config: \"iterator\"\n    qname-minimisation: no\n    minimal-responses: no\n"
            f"    cache-max-ttl: 30\n    cache-max-negative-ttl: 30\n"
            f"    local-zone: \"10.in-addr.arpa.\" nodefault\n    local-zone: \"d.f.ip6.arpa.\" nodefault\n"
            f"    local-zone: \"local.\" nodefault\n{extra}{rc}")
    for z, p, tcp in forwards:
        conf += (f"forward-zone:\n    name: \"{z.rstrip('.')}.\"\n    forward-addr: 127.0.0.1@{p}\n"
                 f"    forward-tcp-upstream: {'yes' if tcp else 'no'}\n")
    with open(os.path.join(d, "unbound.conf"), "w") as f:
        f.write(conf)
    return Proc(label, ["unbound", "-d", "-c", os.path.join(d, "unbound.conf")], d, port,
                probe_name="localhost.")


def unbound_cache_counts(proc):
    """{msg.cache.count, rrset.cache.count} of an Unbound started with `control=True`: extended
    statistics are switched on only now (`set_option`), so they cost nothing while it is measured."""
    conf = os.path.join(proc.cwd, "unbound.conf")
    out = {}
    try:
        subprocess.run(["unbound-control", "-c", conf, "set_option", "extended-statistics:", "yes"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20, check=True)
        r = subprocess.run(["unbound-control", "-c", conf, "stats_noreset"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        log(f"unbound-control failed: {e}")
        return out
    for line in r.stdout.splitlines():
        k, _, v = line.partition("=")
        if k in ("msg.cache.count", "rrset.cache.count"):
            out[k] = int(float(v))
    return out


def sextant_cache_counts(mport):
    """{success, denial}: coredns_cache_entries summed over the caches, from /metrics on mport."""
    import urllib.request
    out = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    except OSError as e:
        log(f"/metrics on {mport}: {e}")
        return out
    for line in text.splitlines():
        if line.startswith("coredns_cache_entries{"):
            typ = "denial" if 'type="denial"' in line else "success"
            out[typ] = out.get(typ, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


def dnsmasq(env, label, port, upstream):
    d = env.path("dnsmasq-" + label.replace(" ", "-"))
    os.makedirs(d, exist_ok=True)
    argv = ["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
            f"--server=127.0.0.1#{upstream}", "--listen-address=127.0.0.1", "--bind-interfaces",
            f"--port={port}", "--cache-size=10000", "--max-cache-ttl=30", "--user=root",
            f"--pid-file={d}/dnsmasq.pid", "--dns-forward-max=1000"]
    return Proc(label, argv, d, port, probe_name="localhost.")


def k8s_block(env, manifests, extra="", pods="insecure"):
    return (f"    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        manifests {manifests}\n"
            f"        pods {pods}\n        ttl 30\n{extra}    }}\n")


# ---- scenarios -------------------------------------------------------------------------------


def measure(servers, qfiles, args, warm=False, per_lookup=None, lat_files=None, lat_rate=None):
    """Round-robin over servers for each repetition (so the machine's load hits all alike), then a
    fixed-rate latency run each (at lat_rate, default args.rate), also round-robin in one-second
    slices where the run is timed. qfiles / lat_files: label ->
    callable(rep) -> path. A server with an `extra` attribute is queried with those dnsperf
    arguments (its transport)."""
    res = {s.label: {"qps": [], "cpu_per_k": [], "lost": 0, "sent": 0, "completed": 0, "rcodes": ""}
           for s in servers}
    if warm:
        for s in servers:
            getattr(s, "runner", dnsperf)(s.port, qfiles[s.label](-1), runs=1, extra=getattr(s, "extra", None))
    for rep in range(args.runs):
        for s in servers:
            qf = qfiles[s.label](rep)
            c0 = s.cpu()
            r = getattr(s, "runner", dnsperf)(s.port, qf, duration=None if per_lookup else args.duration,
                                              runs=1 if per_lookup else None, extra=getattr(s, "extra", None))
            c1 = s.cpu()
            e = res[s.label]
            e["qps"].append(r["qps"])
            # per 1,000 answered queries, or per 1,000 lookups where a lookup is several queries
            units = r["completed"] / (per_lookup[s.label] if per_lookup else 1)
            e["cpu_per_k"].append((c1 - c0) / units * 1000 if units else float("nan"))
            e["lost"] += int(r["lost"])
            e["sent"] += int(r["sent"])
            e["completed"] += int(r["completed"])
            e["rcodes"] = r["rcodes"]
            log(f"  {s.label:34s} run {rep + 1}: {r['qps']:10.0f} q/s, lost {int(r['lost'])}")
    # The latency runs, round-robin in one-second slices like the throughput runs: p99 at a
    # moderate rate is made of the moments the server's thread waits for its core, so a compile
    # that starts between two servers' runs would otherwise decide their p99 ratio. Query files
    # read once through (per_lookup) and other runners (h2load) keep one run per server.
    timed = not per_lookup and not any(hasattr(s, "runner") for s in servers)
    slices = max(1, args.lat_duration) if timed else 1
    lat = {s.label: {"lat": [], "lost": 0, "qps": [], "wait": 0.0} for s in servers}
    for _ in range(slices):
        for s in servers:
            lf = (lat_files or qfiles)[s.label]("lat")
            # the same lookup rate for everyone: args.rate queries/s of five-query lookups
            base = lat_rate or args.rate
            rate = base * per_lookup[s.label] // 5 if per_lookup else base
            w0 = s.run_wait()
            duration = None if per_lookup else args.lat_duration // slices
            r = getattr(s, "runner", dnsperf)(s.port, lf, duration=duration, runs=1 if per_lookup else None,
                                              rate=rate, verbose=True, extra=getattr(s, "extra", None))
            acc = lat[s.label]
            acc["wait"] += s.run_wait() - w0
            acc["lat"] += r["lat"]
            acc["lost"] += int(r["lost"])
            acc["qps"].append(r["qps"])
            res[s.label]["lat_rate"] = rate
    for s in servers:
        e, acc = res[s.label], lat[s.label]
        e["p50_ms"] = pct(acc["lat"], 50) * 1000
        e["p99_ms"] = pct(acc["lat"], 99) * 1000
        e["lat_lost"] = acc["lost"]
        e["lat_qps"] = median(acc["qps"])
        # milliseconds the server's threads waited for a CPU while answering the latency run
        e["lat_run_wait_ms"] = acc["wait"] * 1000
        rss, hwm = s.mem()
        e["rss_kib"], e["hwm_kib"] = rss, hwm
        if hasattr(s, "mem_split"):
            e["rss_anon_kib"], e["rss_file_kib"] = s.mem_split()
        e["qps_med"] = median(e["qps"])
        e["cpu_per_k_med"] = median(e["cpu_per_k"])
        if per_lookup:
            e["lookups_med"] = e["qps_med"] / per_lookup[s.label]
        log(f"  {s.label:34s} p50 {e['p50_ms']:.3f} ms p99 {e['p99_ms']:.3f} ms at {e['lat_rate']} q/s "
            f"(waited {e['lat_run_wait_ms']:.0f} ms for a CPU); RSS {rss} KiB")
    return res


def run_servers(servers, fn):
    started = []
    try:
        for s in servers:
            log(f"starting {s.label} on 127.0.0.1:{s.port}")
            s.start()
            started.append(s)
        return fn(started)
    finally:
        for s in started:
            s.stop()


def dig_answer(port, name, qtype, minimal=False):
    """rcode, flags and every section (sorted, SOA serial masked) as dig prints them. `minimal`:
    without the additional section and the NS records in the authority section of answers (an
    authoritative server with minimal responses, Knot, leaves them out; CoreDNS's `file` adds them)."""
    argv = ["dig", "+norec", "+time=2", "+tries=1", "-p", str(port), "@127.0.0.1", name, qtype]
    if minimal:
        argv.insert(1, "+noadditional")
    out = subprocess.run(argv, stdout=subprocess.PIPE, text=True).stdout
    head = " ".join(re.findall(r"status: [A-Z]+|flags: [a-z ]+", out))
    rrs = sorted(re.sub(r"(SOA\s+\S+\s+\S+\s+)\d+", r"\1SERIAL", l)
                 for l in out.splitlines() if l and not l.startswith(";")
                 and not (minimal and qtype != "NS" and re.match(r"\S+\s+\d+\s+IN\s+NS\s", l)))
    return head, rrs


def parity(a, b, qf, n, minimal=False):
    """Sends n sampled queries of the mix to both servers; returns (differing, checked, examples)."""
    if not shutil.which("dig"):
        return None
    lines = open(qf).read().split("\n")
    rnd = random.Random(5)
    sample = [l.split() for l in rnd.sample([l for l in lines if l], min(n, len(lines) - 1))]
    bad, ex = 0, []
    for name, t in sample:
        x, y = dig_answer(a.port, name, t, minimal), dig_answer(b.port, name, t, minimal)
        if x != y:
            bad += 1
            if len(ex) < 3:
                ex.append(f"{name} {t}: {a.label} {x[0]} {len(x[1])} RRs / {b.label} {y[0]} {len(y[1])} RRs")
    record(["dig", "+norec", "-p", "PORT", "@127.0.0.1", "NAME", "TYPE"])
    return bad, len(sample), ex


def scenario_cluster(env, cl, args):
    """1. Cluster names: Sextant kubernetes (manifests) with and without log vs Knot and NSD."""
    zdir = env.path("zones")
    qf = env.path("cluster-queries.txt")
    gen.write_queries(qf, cl.cluster_queries(args.queries, 7))
    servers = []
    if env.has("kubernetes"):
        body = k8s_block(env, env.path("cluster.json"))
        what = "kubernetes"
    else:
        body = "    whoami\n"
        what = "whoami"
        NOTES.append("Cluster names: this build has no `kubernetes` plugin yet, so Sextant ran `whoami` "
                     "(the server core + one plugin) against Knot/NSD answering the real zone.")
    p1, p2 = free_port(), free_port()
    servers.append(sextant(env, f"sextant {what}", f".:{p1} {{\n    errors\n{body}}}\n", p1,
                           probe_name="cluster.local."))
    servers.append(sextant(env, f"sextant {what}+log", f".:{p2} {{\n    errors\n    log\n{body}}}\n", p2,
                           probe_name="cluster.local.", out="/dev/null"))
    servers.append(knot(env, "knot", ["cluster.local", "in-addr.arpa", "ip6.arpa"], zdir, free_port()))
    servers.append(nsd(env, "nsd", ["cluster.local", "in-addr.arpa", "ip6.arpa"], zdir, free_port()))
    cd = None
    if what == "kubernetes":
        cd = twin(env, servers[0], "coredns kubernetes", env.cluster_api())
        if cd:
            servers.append(cd)
    qfiles = {s.label: (lambda rep: qf) for s in servers}

    def go(st):
        if what == "kubernetes":
            r = parity(st[0], st[2], qf, args.parity)
            if r:
                NOTES.append(f"Cluster names: {r[1] - r[0]} of {r[1]} sampled queries got the same answer "
                             f"from Sextant and Knot (rcode, flags, every section; SOA serial masked)"
                             + ("; differing: " + "; ".join(r[2]) if r[2] else "") + ".")
                log(NOTES[-1])
        return measure(st, qfiles, args)

    res = run_servers(servers, go)
    sx, sl = f"sextant {what}", f"sextant {what}+log"
    return {"title": "1. Cluster names (authoritative)", "res": res,
            "ratios": [(sx, "knot"), (sx, "nsd"), (sl, sx)] + ([(sx, cd.label)] if cd else []), "unit": "q/s"}


def scenario_file(env, args):
    """5. Zone file: Sextant `file` vs Knot serving the same 100,000-record zone."""
    zdir = env.path("filezone")
    os.makedirs(zdir, exist_ok=True)
    n = args.zone_records
    rnd = random.Random(11)
    names = []
    with open(os.path.join(zdir, "file.test.zone"), "w") as f:
        f.write("$ORIGIN file.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 7200 1800 86400 30\n"
                "@ NS ns1\n@ NS ns2\nns1 A 10.255.0.1\nns2 A 10.255.0.2\n")
        i = 0
        while i < n:
            name = f"host{i // 2}"
            f.write(f"{name} A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
            f.write(f"{name} AAAA 2001:db8::{i >> 16:x}:{i & 0xffff:x}\n")
            names.append(name)
            i += 2
    qf = env.path("file-queries.txt")
    with open(qf, "w") as f:
        for _ in range(args.queries):
            r = rnd.random()
            if r < 0.05:
                f.write(f"missing{rnd.randrange(10**6)}.file.test A\n")
            else:
                f.write(f"{rnd.choice(names)}.file.test {'AAAA' if r < 0.3 else 'A'}\n")
    zf = os.path.join(zdir, "file.test.zone")
    p1 = free_port()
    servers = [sextant(env, "sextant file", f"file.test:{p1} {{\n    errors\n    file {zf} {{\n        reload 0\n    }}\n}}\n",
                       p1, probe_name="file.test."),
               knot(env, "knot file", ["file.test"], zdir, free_port())]
    cd = twin(env, servers[0], "coredns file")
    if cd:
        servers.append(cd)
    qfiles = {s.label: (lambda rep: qf) for s in servers}

    def go(st):
        r = parity(st[0], st[1], qf, args.parity, minimal=True)
        if r:
            NOTES.append(f"Zone file: {r[1] - r[0]} of {r[1]} sampled queries got the same answer from Sextant "
                         f"`file` and Knot (rcode, flags, answer and authority sections without the zone's NS "
                         f"records, which CoreDNS's `file` adds to answers and Knot does not)"
                         + ("; differing: " + "; ".join(r[2]) if r[2] else "") + ".")
            log(NOTES[-1])
        if cd:
            r = parity(st[0], st[2], qf, args.parity)
            if r:
                NOTES.append(f"Zone file: {r[1] - r[0]} of {r[1]} sampled queries got the same answer from Sextant "
                             f"`file` and CoreDNS `file` (rcode, flags, every section)"
                             + ("; differing: " + "; ".join(r[2]) if r[2] else "") + ".")
                log(NOTES[-1])
        return measure(st, qfiles, args)

    res = run_servers(servers, go)
    return {"title": f"5. Zone file ({n:,} records, authoritative)", "res": res,
            "ratios": [("sextant file", "knot file")] + ([("sextant file", cd.label)] if cd else []),
            "unit": "q/s"}


def scenario_dnssec(env, args):
    """5b. Online signing: the same zone served by `file` with and without `dnssec` (an ECDSA
    P-256 key), every query with DO, warmed so the signatures come from the signature cache;
    the signed throughput against the unsigned one."""
    zdir = env.path("dnsseczone")
    os.makedirs(zdir, exist_ok=True)
    n = 5000  # under dnssec's default cache_capacity (10,000 signatures)
    rnd = random.Random(13)
    with open(os.path.join(zdir, "example.org.zone"), "w") as f:
        f.write("$ORIGIN example.org.\n$TTL 300\n@ SOA ns1 hostmaster 1 7200 1800 86400 30\n"
                "@ NS ns1\nns1 A 10.255.0.1\n")
        for i in range(n):
            f.write(f"host{i} A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
    keydir = os.path.join(args.root, "crates/zone/src/dnssec/testdata")
    key = "Kexample.org.+013+57158"
    for ext in ("key", "private"):
        shutil.copy(os.path.join(keydir, f"{key}.{ext}"), zdir)
    qf = env.path("dnssec-queries.txt")
    with open(qf, "w") as f:
        for _ in range(args.queries):
            r = rnd.random()
            if r < 0.05:
                # a few names, so their signed denials are cached too
                f.write(f"missing{rnd.randrange(100)}.example.org A\n")
            else:
                f.write(f"host{rnd.randrange(n)}.example.org {'AAAA' if r < 0.1 else 'A'}\n")
    zf = os.path.join(zdir, "example.org.zone")
    p1, p2 = free_port(), free_port()
    plain = sextant(env, "sextant file (DO)",
                    f"example.org:{p1} {{\n    errors\n    file {zf}\n}}\n", p1, probe_name="example.org.")
    signed = sextant(env, "sextant file+dnssec (DO)",
                     f"example.org:{p2} {{\n    errors\n    dnssec {{\n        key file {os.path.join(zdir, key)}\n"
                     f"    }}\n    file {zf}\n}}\n", p2, probe_name="example.org.")
    servers = [plain, signed]
    ratios = [("sextant file+dnssec (DO)", "sextant file (DO)")]
    if env.coredns:
        servers += [twin(env, plain, "coredns file (DO)"), twin(env, signed, "coredns file+dnssec (DO)")]
        ratios += [("coredns file+dnssec (DO)", "coredns file (DO)"),
                   ("sextant file+dnssec (DO)", "coredns file+dnssec (DO)")]
    for s in servers:
        s.extra = ["-D"]
    qfiles = {s.label: (lambda rep: qf) for s in servers}
    res = run_servers(servers, lambda st: measure(st, qfiles, args, warm=True))
    return {"title": f"5b. Online DNSSEC signing ({n:,} names, DO on every query, warmed)", "res": res,
            "ratios": ratios, "unit": "q/s"}


def scenario_hits(env, upstream_port, args):
    """2. Cache hits: Sextant cache+forward vs Unbound and dnsmasq, warmed, same upstream."""
    qf = env.path("hit-queries.txt")
    gen.write_queries(qf, gen.hit_queries(args.hosts, args.queries, 11))
    servers = []
    ok = env.has("cache", "forward")
    if ok:
        p = free_port()
        servers.append(sextant(env, "sextant cache+forward",
                               f".:{p} {{\n    errors\n    cache 30\n    forward . 127.0.0.1:{upstream_port}\n}}\n",
                               p, probe_name="localhost."))
    else:
        NOTES.append("Cache hits: this build lacks `cache`/`forward`; only the reference servers ran.")
    cd = twin(env, servers[0], "coredns cache+forward") if ok else None
    servers.append(unbound(env, "unbound", free_port(), [(".", upstream_port, False)]))
    servers.append(dnsmasq(env, "dnsmasq", free_port(), upstream_port))
    if cd:
        servers.append(cd)
    qfiles = {s.label: (lambda rep: qf) for s in servers}
    res = run_servers(servers, lambda st: measure(st, qfiles, args, warm=True))
    r = [("sextant cache+forward", "unbound"), ("sextant cache+forward", "dnsmasq")] if ok else []
    if cd:
        r.append(("sextant cache+forward", cd.label))
    return {"title": "2. Cache hits (forwarder, warmed)", "res": res, "ratios": r, "unit": "q/s"}


def search_resolv(env):
    """The resolv.conf of a pod in ns-0 (ndots:5), for `autopath`; returns its path."""
    resolv = env.path("autopath-resolv.conf")
    with open(resolv, "w") as f:
        f.write(f"search ns-0.svc.{gen.ZONE} svc.{gen.ZONE} {gen.ZONE} {gen.HOST_SEARCH}\noptions ndots:5\n")
    return resolv


def search_body(env, upstream_port):
    """The search-path scenario's Corefile block body (kubeadm's plugins that answer lookups;
    the cluster from env's cluster.json); `autopath RESOLV` is appended for the autopath row."""
    return (f"    errors\n{k8s_block(env, env.path('cluster.json'), '        fallthrough in-addr.arpa ip6.arpa' + chr(10))}"
            f"    forward . 127.0.0.1:{upstream_port}\n"
            f"    cache 30 {{\n        disable success cluster.local\n        disable denial cluster.local\n    }}\n")


def search_unbound_extra():
    """Unbound's side of the search-path scenario: cluster.local a static local zone (every
    name under it NXDOMAIN), as the cluster's own names are not asked there."""
    z = gen.ZONE + "."
    return (f"    local-zone: \"{z}\" static\n"
            f"    local-data: \"{z} 30 IN SOA ns.dns.{z} hostmaster.{z} 1 7200 1800 86400 30\"\n")


# Unbound's message cache in the search scenario, sized to hold about as many replies as
# Sextant's `cache 30` (9,984 success + 9,984 denial entries): with the default 4m it held
# ~15,400 of the scenario's replies (bench/cache_mem.py --unbound: 4m -> 15,391 messages and
# 16,536 RRsets after 40,000 lookups; 5376k -> 20,199 and 16,512).
SEARCH_UNBOUND_MSG_CACHE = "5312k"


def with_metrics_block(corefile, port):
    """`corefile` plus a server block of its own serving /metrics, for a zone nobody asks on the
    same port (so the measured block's plugins are unchanged, and no socket or thread is added);
    returns (corefile, metrics port)."""
    mport = free_port()
    return corefile + f"metrics.invalid.:{port} {{\n    prometheus 127.0.0.1:{mport}\n}}\n", mport


def scenario_search(env, upstream_port, args):
    """3. Cache misses and ndots:5 search-path expansion: five queries per lookup (four NXDOMAIN),
    or one with autopath, vs Unbound (cluster.local as a static local zone).

    Memory is compared at equal cache entry counts (issue 17): at the end of the scenario the
    report gives each server's entries beside its RSS (Sextant: coredns_cache_entries from
    /metrics, served by a block of its own; Unbound: msg.cache.count and rrset.cache.count from
    `unbound-control stats_noreset`, extended statistics switched on only then). Sextant keeps
    kubeadm's `cache 30` (at most 9,984 success + 9,984 denial entries; the scenario's unique
    names fill both); Unbound's default 4 MB message cache holds only ~15,400 of these replies,
    so it runs with `msg-cache-size: SEARCH_UNBOUND_MSG_CACHE`, sized to hold about as many
    (its RRset cache keeps its default 4 MB, which holds the ~10,000 answer RRsets those
    replies point to)."""
    servers, per = [], {}
    resolv = search_resolv(env)
    base = search_body(env, upstream_port)
    if env.has("kubernetes", "forward", "cache"):
        p = free_port()
        cf, mport = with_metrics_block(f".:{p} {{\n{base}}}\n", p)
        servers.append(sextant(env, "sextant kubeadm", cf, p, probe_name="localhost."))
        servers[-1].mport = mport
        per["sextant kubeadm"] = 5
        if env.has("autopath"):
            p = free_port()
            cf, mport = with_metrics_block(f".:{p} {{\n{base}    autopath {resolv}\n}}\n", p)
            servers.append(sextant(env, "sextant kubeadm+autopath", cf, p, probe_name="localhost."))
            servers[-1].mport = mport
            per["sextant kubeadm+autopath"] = 1
        else:
            NOTES.append("Search path: this build lacks `autopath`; the autopath row is missing.")
    else:
        NOTES.append("Search path: this build lacks `kubernetes`/`forward`/`cache`; only Unbound ran.")
    servers.append(unbound(env, "unbound", free_port(), [(".", upstream_port, False)],
                           search_unbound_extra() + f"    msg-cache-size: {SEARCH_UNBOUND_MSG_CACHE}\n",
                           control=True))
    servers[-1].unbound_control = True
    per["unbound"] = 5
    pairs = []
    for sxl in ("sextant kubeadm", "sextant kubeadm+autopath"):
        if env.coredns and sxl in per:
            cdl = sxl.replace("sextant", "coredns")
            servers.append(twin(env, next(x for x in servers if x.label == sxl), cdl, env.cluster_api()))
            per[cdl] = per[sxl]
            pairs.append((sxl, cdl))
    lookups = max(500, args.queries // 5)
    counter = [0]

    def files_for(label):
        def f(rep):
            counter[0] += 1
            tag = f"m{counter[0]}x{random.randrange(10**6)}"
            path = env.path(f"search-{counter[0]}.txt")
            n = lookups if rep != "lat" else max(200, args.rate // 5 * args.lat_duration)
            gen.write_queries(path, gen.search_path_queries(n, tag, per[label] == 1))
            return path
        return f

    qfiles = {s.label: files_for(s.label) for s in servers}

    def go(st):
        r = measure(st, qfiles, args, per_lookup=per)
        for s in st:
            if getattr(s, "mport", None):
                r[s.label]["entries"] = sextant_cache_counts(s.mport)
            elif getattr(s, "unbound_control", False):
                r[s.label]["entries"] = unbound_cache_counts(s)
            if "entries" in r[s.label]:
                log(f"  {s.label:34s} cache entries {r[s.label]['entries']}")
        return r

    res = run_servers(servers, go)
    ratios = [(x, "unbound") for x in ("sextant kubeadm", "sextant kubeadm+autopath") if x in per] + pairs
    return {"title": "3. Cache misses with the ndots:5 search path (lookups, 5 queries each; 1 with autopath)",
            "res": res, "ratios": ratios, "unit": "lookups/s", "per": per}


def nodecache_corefile(p, cluster_port, upstream_port, hp, mp):
    zones = [("cluster.local", "    cache {\n            success 9984 30\n            denial 9984 5\n    }\n"),
             ("in-addr.arpa", "    cache 30\n"), ("ip6.arpa", "    cache 30\n")]
    out = ""
    for z, cache in zones:
        out += (f"{z}:{p} {{\n    errors\n{cache}    reload\n    loop\n    bind 127.0.0.1\n"
                f"    forward . 127.0.0.1:{cluster_port} {{\n            force_tcp\n    }}\n"
                f"    prometheus 127.0.0.1:{mp}\n")
        out += f"    health 127.0.0.1:{hp}\n    }}\n" if z == "cluster.local" else "    }\n"
    out += (f".:{p} {{\n    errors\n    cache 30\n    reload\n    loop\n    bind 127.0.0.1\n"
            f"    forward . 127.0.0.1:{upstream_port}\n    prometheus 127.0.0.1:{mp}\n    }}\n")
    return out


def scenario_nodecache(env, cl, upstream_port, args):
    """4. Node-cache mode: the NodeLocal DNSCache Corefile (loopback addresses) vs Unbound."""
    qf = env.path("nodecache-queries.txt")
    gen.write_queries(qf, gen.nodecache_queries(cl, args.hosts, args.queries, 13))
    servers = []
    need = ("cache", "forward", "bind", "loop", "reload", "health", "prometheus", "errors")
    ok = env.has(*need)
    if ok:
        p = free_port()
        servers.append(sextant(env, "sextant node-cache",
                               nodecache_corefile(p, upstream_port, upstream_port, free_port(), free_port()),
                               p, probe_name="cluster.local."))
    else:
        NOTES.append("Node cache: this build lacks " + ", ".join(n for n in need if not env.has(n))
                     + "; only Unbound ran.")
    fw = [(z, upstream_port, True) for z in ("cluster.local", "in-addr.arpa", "ip6.arpa")]
    servers.append(unbound(env, "unbound", free_port(), fw + [(".", upstream_port, False)],
                           "    cache-max-negative-ttl: 5\n"))
    ratios = [("sextant node-cache", "unbound")] if ok else []
    if ok and env.coredns:
        # Its own health and metrics ports: CoreDNS cannot share Sextant's.
        p = free_port()
        servers.append(coredns(env, "coredns node-cache",
                               nodecache_corefile(p, upstream_port, upstream_port, free_port(), free_port()),
                               p, probe_name="cluster.local."))
        ratios.append(("sextant node-cache", "coredns node-cache"))
    qfiles = {s.label: (lambda rep: qf) for s in servers}
    res = run_servers(servers, lambda st: measure(st, qfiles, args, warm=True))
    return {"title": "4. Node-cache mode (NodeLocal DNSCache Corefile, warmed)", "res": res,
            "ratios": ratios, "unit": "q/s"}


def callgrind_dump(proc, outf, timeout=60):
    """Instructions of a server running under callgrind from its start until now, read from a
    dump (`callgrind_control -d`) taken before it is stopped: the shutdown (the generation's state
    freed, which grows with what the queries cached) is not part of a per-query figure. None when
    the dump did not come."""
    if not proc.p or proc.p.poll() is not None:
        return None
    dump = outf + ".1"
    subprocess.run(["callgrind_control", "-d", str(proc.p.pid)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=timeout)
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(dump) as f:
                for line in f:
                    if line.startswith("totals:"):
                        return int(line.split()[1])
        except OSError:
            pass
        time.sleep(0.2)
    return None


def tls_pair(env):
    """A self-signed ECDSA certificate for localhost/127.0.0.1 and its key (openssl), shared by
    every TLS server of the run."""
    d = env.path("tls")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    if not os.path.exists(cert):
        os.makedirs(d, exist_ok=True)
        argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        record(argv)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def dnsdist(env, label, udp, dot, doh, upstream, cert, key, tcp_only=False):
    """dnsdist (Debian) as a UDP, DoT and DoH frontend of one backend, no cache; with tcp_only,
    it talks to the backend over TCP only (`tcpOnly=true`), as Sextant's forward does for DoH
    queries (CoreDNS counts DoH as TCP); otherwise DoH queries go to the backend over UDP."""
    d = env.path("dnsdist-" + label.replace(" ", "-"))
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "dnsdist.conf")
    with open(conf, "w") as f:
        f.write(f'setLocal("127.0.0.1:{udp}")\n'
                f'addTLSLocal("127.0.0.1:{dot}", "{cert}", "{key}")\n'
                f'addDOHLocal("127.0.0.1:{doh}", "{cert}", "{key}", "/dns-query")\n'
                f'newServer({{address="127.0.0.1:{upstream}", maxInFlight=128'
                f'{", tcpOnly=true" if tcp_only else ""}}})\n'
                f'setSecurityPollSuffix("")\n')
    CONFIGS.setdefault(label, re.sub(r":\d{4,5}\b", ":PORT", open(conf).read()))
    return Proc(label, ["dnsdist", "-C", conf, "--supervised", "--disable-syslog"], d, udp,
                probe_name="localhost.")


class Transport:
    """One transport of a running server, as measure() sees a server: its label, port, the
    dnsperf arguments of the transport, and the process's CPU and memory."""

    def __init__(self, proc, label, port, extra=None, runner=None):
        self.proc, self.label, self.port, self.extra = proc, label, port, extra
        if runner:
            self.runner = runner

    def cpu(self):
        return self.proc.cpu()

    def mem(self):
        return self.proc.mem()

    def run_wait(self):
        return self.proc.run_wait()


def scenario_transports(env, upstream_port, args):
    """6. DoT and DoH frontends: Sextant (`tls://` and `https://` blocks forwarding to the
    backend) vs dnsdist with the same certificate, both without a cache, over the same Knot."""
    if not env.has("tls", "forward") or "https" not in env.plugins:
        NOTES.append("DoT/DoH: this build lacks `tls`, `https` or `forward`; not measured.")
        return None
    if not shutil.which("dnsdist"):
        NOTES.append("DoT/DoH: dnsdist is not installed (apt-get install dnsdist); not measured.")
        return None
    cert, key = tls_pair(env)
    qf = env.path("transport-queries.txt")
    gen.write_queries(qf, gen.hit_queries(args.hosts, args.queries, 13))
    su, st, sh, shu = free_port(), free_port(), free_port(), free_port()
    fwd = f"    forward . 127.0.0.1:{upstream_port}\n"
    tls = f"    tls {cert} {key}\n"
    # A DoH query counts as TCP, so `forward` asks the backend over TCP (CoreDNS's rule);
    # `prefer_udp` makes it ask over UDP first, as dnsdist's default backend does.
    fwd_udp = f"    forward . 127.0.0.1:{upstream_port} {{\n        prefer_udp\n    }}\n"
    sx = sextant(env, "sextant dot+doh",
                 f".:{su} {{\n{fwd}}}\ntls://.:{st} {{\n{tls}{fwd}}}\nhttps://.:{sh} {{\n{tls}{fwd}}}\n"
                 f"https://.:{shu} {{\n{tls}{fwd_udp}}}\n",
                 su, probe_name="localhost.")
    du, dt, dh = free_port(), free_port(), free_port()
    dd = dnsdist(env, "dnsdist", du, dt, dh, upstream_port, cert, key)
    # The same dnsdist with a TCP-only backend: both DoH servers then ask the backend over TCP.
    tu, tt, th = free_port(), free_port(), free_port()
    ddt = dnsdist(env, "dnsdist tcp-backend", tu, tt, th, upstream_port, cert, key, tcp_only=True)
    procs = [sx, dd, ddt]
    if env.coredns:
        cu, ct, ch = free_port(), free_port(), free_port()
        procs.append(coredns(env, "coredns dot+doh",
                             f".:{cu} {{\n{fwd}}}\ntls://.:{ct} {{\n{tls}{fwd}}}\nhttps://.:{ch} {{\n{tls}{fwd}}}\n",
                             cu, probe_name="localhost."))

    def doh(port):
        uris = env.path(f"doh-uris-{port}.txt")
        doh_uris(qf, port, uris)
        return lambda _port, _qf, **kw: h2load(port, uris, **kw)

    def go(started):
        s, d, t = started[0], started[1], started[2]
        c = started[3] if len(started) > 3 else None
        out = {}
        dot = [Transport(s, "sextant DoT", st, ["-m", "dot"]), Transport(d, "dnsdist DoT", dt, ["-m", "dot"])]
        dohs = [Transport(s, "sextant DoH", sh, runner=doh(sh)), Transport(d, "dnsdist DoH", dh, runner=doh(dh)),
                Transport(t, "dnsdist DoH tcp-backend", th, runner=doh(th)),
                Transport(s, "sextant DoH prefer_udp", shu, runner=doh(shu))]
        if c:
            dot.append(Transport(c, "coredns DoT", ct, ["-m", "dot"]))
            dohs.append(Transport(c, "coredns DoH", ch, runner=doh(ch)))
        for kind, views in (("DoT", dot), ("DoH", dohs)):
            log(f"  {kind}")
            qfiles = {v.label: (lambda rep: qf) for v in views}
            out.update(measure(views, qfiles, args, lat_rate=args.transport_rate))
        return out

    res = run_servers(procs, go)
    ratios = [("sextant DoT", "dnsdist DoT"), ("sextant DoH", "dnsdist DoH"),
              ("sextant DoH", "dnsdist DoH tcp-backend"), ("sextant DoH prefer_udp", "dnsdist DoH")]
    if env.coredns:
        ratios += [("sextant DoT", "coredns DoT"), ("sextant DoH", "coredns DoH")]
    return {"title": "6. DoT and DoH frontends (forwarding, no cache, same backend)", "res": res,
            "ratios": ratios, "unit": "q/s",
            "target": "transport"}


def callgrind_ir(make, qf, label, env):
    """Ir of a server started by make(port, wrap), until a dump before its stop: started alone ("idle"), with qf sent once
    ("run") and sent twice in a row ("run2"). per_query is the first pass (every name new to the
    server); warm_per_query the second pass (the same names again, as a cluster asks them)."""
    irs = {}
    for mode in ("idle", "run", "run2"):
        p = free_port()
        outf = env.path(f"callgrind.{label}.{mode}.out")
        s = make(p, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}"])
        s.ready_timeout = 300
        s.start()
        if mode != "idle":
            r = dnsperf(p, qf, runs=1 if mode == "run" else 2, clients=1, outstanding=20)
            irs["answered" if mode == "run" else "answered2"] = int(r["completed"])
        irs[mode] = callgrind_dump(s, outf)
        s.stop()
    if None in (irs.get("idle"), irs.get("run"), irs.get("run2")) or not irs.get("answered"):
        return None
    irs["per_query"] = (irs["run"] - irs["idle"]) / irs["answered"]
    second = irs.get("answered2", 0) - irs["answered"]
    irs["warm_per_query"] = (irs["run2"] - irs["run"]) / second if second > 0 else None
    return irs


def callgrind(env, args):
    """Instructions per cluster-name query: (Ir(run with N queries) - Ir(start+stop)) / N, for
    Sextant and, as the reference, Knot answering the same zone."""
    if not shutil.which("valgrind"):
        return None
    n = args.cg_queries
    qf = env.path("cg-queries.txt")
    cl = gen.Cluster(args.services, args.eps, 10**9, 1)
    gen.write_queries(qf, cl.cluster_queries(n, 21))
    body = k8s_block(env, env.path("cluster.json")) if env.has("kubernetes") else "    whoami\n"
    with open(qf) as f:
        unique = len(set(f.read().splitlines()))
    out = {"plugin": "kubernetes" if env.has("kubernetes") else "whoami", "queries": n, "unique": unique}
    out["sextant"] = callgrind_ir(
        lambda p, wrap: sextant(env, "callgrind", f".:{p} {{\n    errors\n{body}}}\n", p,
                                probe_name="cluster.local.", timeout=300, wrap=wrap), qf, "sextant", env)
    zones = ["cluster.local", "in-addr.arpa", "ip6.arpa"]

    def mk_knot(p, wrap):
        k = knot(env, "callgrind-knot", zones, env.path("zones"), p)
        k.argv = wrap + k.argv
        return k

    out["knot"] = callgrind_ir(mk_knot, qf, "knot", env)
    if not out["sextant"]:
        return None
    if env.has("tls") and "https" in env.plugins:
        # The same server with every other transport configured and never used: the UDP path
        # must cost the same.
        cert, key = tls_pair(env)

        def idle_blocks():
            tls = f"    tls {cert} {key}\n    whoami\n"
            return "".join(f"{scheme}://.:{free_port()} {{\n{tls}}}\n"
                           for scheme in ("tls", "https", "https3", "quic", "grpc"))

        out["sextant_idle_transports"] = callgrind_ir(
            lambda p, wrap: sextant(env, "callgrind idle transports",
                                    f".:{p} {{\n    errors\n{body}}}\n" + idle_blocks(), p,
                                    probe_name="cluster.local.", timeout=300, wrap=wrap),
            qf, "sextant-idle-transports", env)
    return out


def api_at_scale(env, args):
    """The API path at cluster scale (issue 17), Sextant and (with COREDNS_BIN) CoreDNS in turn,
    each with its own fake API server holding the same generated cluster, `pods verified`:
    time until the last service answers, steady RSS, the peak RSS while everything is listed
    again after a compaction (every watch gets 410 Expired, as after an API server restart), and
    the DNS programming latency histogram while EndpointSlices change at a fixed rate."""
    if not env.has("kubernetes", "prometheus") or not env.fakeapi:
        NOTES.append("API at scale: needs `kubernetes`, `prometheus` and the fake API server "
                     "(bench/run.sh builds it); not measured.")
        return None
    big = gen.Cluster(args.api_services, args.api_eps, args.api_pods, 5)
    path = env.path("api.json")
    big.write_manifests(path)
    last = next(x for x in reversed(big.services) if x["kind"] == "ClusterIP")
    late = f"{last['name']}.{last['ns']}.svc.{gen.ZONE}."
    out = {"counts": big.counts(), "rate": args.api_churn_rate, "seconds": args.api_churn_seconds, "rows": {}}
    for who in ["sextant"] + (["coredns"] if env.coredns else []):
        url, api = fake_api(env, path, control=True)
        p, mp = free_port(), free_port()
        conf = (f".:{p} {{\n    kubernetes {gen.ZONE} in-addr.arpa ip6.arpa {{\n        endpoint {url}\n"
                f"        pods verified\n    }}\n    prometheus 127.0.0.1:{mp}\n}}\n")
        make = sextant if who == "sextant" else coredns
        s = make(env, f"api {who}", conf, p, probe_name=gen.ZONE + ".", timeout=300)
        row = {}
        t0 = time.time()
        s.start()
        while not dns_answers(p, late) and time.time() - t0 < 300:
            time.sleep(0.05)
        row["ready_s"] = time.time() - t0
        time.sleep(2)
        row["steady_kib"] = s.mem()[0]
        for pid in s.pids():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
            except OSError:
                pass
        api_command(api, "compact")
        peak, end = 0, time.time() + args.api_relist_window
        while time.time() < end:
            peak = max(peak, s.mem()[0])
            time.sleep(0.05)
        row["relist_peak_kib"] = max(peak, s.mem()[1])
        row["after_relist_kib"] = s.mem()[0]
        row["churn"] = api_command(api, f"churn {args.api_churn_rate} {args.api_churn_seconds}")
        time.sleep(1)
        try:
            import urllib.request
            m = urllib.request.urlopen(f"http://127.0.0.1:{mp}/metrics", timeout=5).read().decode()
        except OSError:
            m = ""
        n, (p50, p99) = histogram_quantiles(m, "coredns_kubernetes_dns_programming_duration_seconds", (0.5, 0.99))
        row["programmed"], row["p50_s"], row["p99_s"] = n, p50, p99
        s.stop()
        api.terminate()
        out["rows"][who] = row
        log(f"  api {who}: {row}")
    return out


def large_cluster(env, args):
    """RSS after loading a large generated cluster from manifests, and bytes per object."""
    if not env.has("kubernetes"):
        NOTES.append("Large cluster memory: needs the `kubernetes` plugin; not measured on this build.")
        return None
    big = gen.Cluster(args.large_services, args.large_eps, args.large_pods, 3)
    path = env.path("large.json")
    big.write_manifests(path)
    empty = env.path("empty.json")
    with open(empty, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}]}, f)
    out = {"counts": big.counts(), "manifest_bytes": os.path.getsize(path)}
    for key, mf in (("empty", empty), ("large", path)):
        p = free_port()
        s = sextant(env, f"large {key}", f".:{p} {{\n{k8s_block(env, mf, pods='verified')}}}\n", p,
                    probe_name="cluster.local.", timeout=300)
        t0 = time.time()
        s.start()
        out[f"{key}_start_s"] = time.time() - t0
        time.sleep(1)
        out[f"{key}_rss_kib"], out[f"{key}_hwm_kib"] = s.mem()
        s.stop()
    if env.coredns:
        # CoreDNS reads the same objects from the fake API server (list, then watch).
        for key, mf in (("empty", empty), ("large", path)):
            p = free_port()
            s = coredns(env, f"coredns large {key}", f".:{p} {{\n{k8s_block(env, mf, pods='verified')}}}\n", p,
                        probe_name="cluster.local.", timeout=300, api=fake_api(env, mf))
            t0 = time.time()
            s.start()
            out[f"coredns_{key}_start_s"] = time.time() - t0
            time.sleep(1)
            out[f"coredns_{key}_rss_kib"], out[f"coredns_{key}_hwm_kib"] = s.mem()
            s.stop()
    c = out["counts"]
    objs = c["services"] + c["endpoints"] + c["pods"]
    out["objects"] = objs
    out["bytes_per_object"] = (out["large_rss_kib"] - out["empty_rss_kib"]) * 1024 / objs
    return out


# ---- overload --------------------------------------------------------------------------------


OVERLOAD = {}  # the overload scenario's figures, for the report and the chart
OVERLOAD_LEVELS = (1, 2, 3, 5)
# Open-loop rates (x the closed-loop goodput) tried when looking for a server's capacity.
OVERLOAD_PROBES = (2, 4)


def overload_median(runs):
    """One figure from several runs of the same load: the run with the median goodput, with
    the goodputs of all of them (`runs`) and the highest RSS any of them saw."""
    runs = sorted(runs, key=lambda r: r["goodput"])
    out = dict(runs[(len(runs) - 1) // 2])
    out["runs"] = [r["goodput"] for r in runs]
    out["rss_peak_kib"] = max(r["rss_peak_kib"] for r in runs)
    return out


def overload_runs_text(r):
    return " ".join(f"{g:.0f}" for g in r.get("runs", [r["goodput"]]))


class CpuCap:
    """A cgroup that holds its processes to `quota` of one core (cgroup v1 `cpu`, or v2
    `cpu.max`), so that one dnsperf on the other core can offer several times what a server
    answers. Needs root. `shares` puts the group ahead of other work on the machine (v1
    cpu.shares / v2 cpu.weight) without letting it use more than its quota."""
    PERIOD = 10000  # microseconds

    def __init__(self, name, quota):
        v1 = "/sys/fs/cgroup/cpu"
        if os.path.exists(os.path.join(v1, "cpu.cfs_quota_us")):
            self.dir, self.v2 = os.path.join(v1, name), False
        elif "cpu" in open("/sys/fs/cgroup/cgroup.controllers").read().split() \
                if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else False:
            self.dir, self.v2 = os.path.join("/sys/fs/cgroup", name), True
        else:
            raise RuntimeError("no cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 cpu.max)")
        os.makedirs(self.dir, exist_ok=True)
        q = max(1000, int(self.PERIOD * quota))
        if self.v2:
            self._w("cpu.max", f"{q} {self.PERIOD}")
            self._w("cpu.weight", "1000")
        else:
            self._w("cpu.cfs_period_us", str(self.PERIOD))
            self._w("cpu.cfs_quota_us", str(q))
            self._w("cpu.shares", "10240")
        record(["echo", f"{q} {self.PERIOD}", ">", self.dir + ("/cpu.max" if self.v2 else
                                                                 "/cpu.cfs_{quota,period}_us")])

    def _w(self, f, v):
        with open(os.path.join(self.dir, f), "w") as fh:
            fh.write(v)

    def add(self, proc):
        for pid in proc.pids():
            try:
                self._w("cgroup.procs", str(pid))
            except OSError:
                pass

    def close(self):
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


class RssPeak:
    """Samples a server's VmRSS every 50 ms in a thread while in a `with` block."""

    def __init__(self, proc):
        self.proc, self.peak = proc, 0

    def __enter__(self):
        import threading
        self.stop = threading.Event()

        def run():
            while not self.stop.is_set():
                self.peak = max(self.peak, self.proc.mem()[0])
                self.stop.wait(0.05)
        self.t = threading.Thread(target=run, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join()
        self.peak = max(self.peak, self.proc.mem()[0])


def slow_upstream(env, delay_ms, max_seconds):
    """bench/slowup.py on core 1: answers every query after delay_ms; returns (port, process)."""
    argv = ["taskset", "-c", CLIENT_CORE, sys.executable, os.path.join(HERE, "slowup.py"),
            "--delay-ms", str(delay_ms), "--max-seconds", str(max_seconds)]
    record(argv)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    env.apis.append(p)
    line = p.stdout.readline().strip()
    if not line.isdigit():
        raise RuntimeError("the slow upstream (bench/slowup.py) did not start")
    return int(line), p


def overload_mix(path, cq, hq, n, miss, tag, seed):
    """n queries: cluster names (cq) and cache hits (hq) in proportion 7:2, and a fraction `miss`
    of names never asked before (`<tag>-<i>.example.com`: cache misses that go to the slow
    upstream; Knot answers them from its wildcard)."""
    rnd = random.Random(seed)
    hit_share = (1 - miss) * 2 / 9
    with open(path, "w") as f:
        for i in range(n):
            r = rnd.random()
            if r < miss:
                f.write(f"{tag}-{i}.{gen.EXT_ZONE}. A\n")
            elif r < miss + hit_share:
                f.write("%s %s\n" % hq[rnd.randrange(len(hq))])
            else:
                f.write("%s %s\n" % cq[rnd.randrange(len(cq))])
    return path


def no_timer_slack():
    """In a child before exec: timer slack 1 ns (PR_SET_TIMERSLACK). dnsperf yields with sleep(0)
    after every other query until it has sent -q queries, and the default 50 us slack makes each
    such yield a real sleep: at -q in the tens of thousands, most of a run."""
    import ctypes
    ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)


def overload_dnsperf(port, qf, duration, rate, tag):
    """One dnsperf at `rate` q/s (closed loop with rate None) for `duration` s, nice -10 on core 1;
    a query unanswered after 1 s is lost. Returns sent/answered/goodput and latency percentiles
    of the answered ones, all and those for cluster names (cluster.local and the reverse zones:
    never the upstream's, where a cache hit whose entry just expired waits for it)."""
    outstanding = 2000 if rate is None else min(65000, max(2000, int(rate * 1.2)))
    argv = ["nice", "-n", "-10", "taskset", "-c", CLIENT_CORE, "dnsperf", "-s", "127.0.0.1", "-p", str(port),
            "-d", qf, "-T", "1", "-c", "4", "-q", str(outstanding), "-t", "1", "-l", str(duration), "-v"]
    if rate:
        argv += ["-Q", str(rate)]
    record(["QUERYFILE" if a == qf else "PORT" if a == str(port) else
            "RATE" if rate and a == str(rate) else "OUTSTANDING" if a == str(outstanding) else a for a in argv])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=no_timer_slack)
    lat, local, rc, tail = [], [], {}, []
    for line in p.stdout:
        if line.startswith("> "):
            parts = line.split()
            if len(parts) == 5:  # > RCODE name type seconds
                try:
                    s = float(parts[4])
                except ValueError:
                    continue
                rc[parts[1]] = rc.get(parts[1], 0) + 1
                if parts[1] in ("NOERROR", "NXDOMAIN"):
                    lat.append(s)
                    if parts[2].endswith((gen.ZONE + ".", ".arpa.")):
                        local.append(s)
        else:
            tail.append(line)
    p.wait()
    out = "".join(tail)
    get = lambda pat: float(re.search(pat, out).group(1)) if re.search(pat, out) else 0.0  # noqa: E731
    runtime = get(r"Run time \(s\):\s+([\d.]+)") or duration
    sent = get(r"Queries sent:\s+(\d+)")
    good = len(lat)
    return {"sent": sent, "offered_qps": sent / runtime, "answered": sum(rc.values()), "good": good,
            "goodput": good / runtime, "rcodes": rc, "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "p99_cluster_ms": pct(local, 99) * 1000, "runtime": runtime}


def udp_drops(port):
    """Datagrams the kernel dropped on arrival at the UDP sockets bound to `port` (the `drops`
    column of /proc/net/udp and udp6: a full receive buffer), summed."""
    n = 0
    for f in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(f) as fh:
                next(fh)
                for line in fh:
                    x = line.split()
                    if int(x[1].rsplit(":", 1)[1], 16) == port:
                        n += int(x[-1])
        except (OSError, StopIteration, ValueError, IndexError):
            pass
    return n


# Sextant's counters read around each overload level: where the queries went.
OVERLOAD_METRICS = {
    "requests": "coredns_dns_requests_total",
    "stale_dropped": "sextant_udp_stale_dropped_total",
    "cache_hits": "coredns_cache_hits_total",
    "cache_misses": "coredns_cache_misses_total",
    "cache_evictions": "coredns_cache_evictions_total",
    "forwarded": "coredns_forward_requests_total",
    "forward_rejects": "coredns_forward_max_concurrent_rejects_total",
}


def metric_sums(mport):
    """{key: sum over label sets} of OVERLOAD_METRICS from a /metrics endpoint ({} if none)."""
    if not mport:
        return {}
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for k, m in OVERLOAD_METRICS.items():
            if name == m:
                try:
                    out[k] = out.get(k, 0) + float(line.rsplit(" ", 1)[1])
                except ValueError:
                    pass
    return out


class LevelCounters:
    """CPU seconds, kernel drops and (Sextant) metric deltas over one overload level."""

    def __init__(self, proc, mport):
        self.proc, self.mport = proc, mport

    def __enter__(self):
        self.cpu, self.drops, self.m = self.proc.cpu(), udp_drops(self.proc.port), metric_sums(self.mport)
        return self

    def __exit__(self, *a):
        m = metric_sums(self.mport)
        self.out = {"cpu_s": self.proc.cpu() - self.cpu, "kernel_drops": udp_drops(self.proc.port) - self.drops}
        self.out.update({k: v - self.m.get(k, 0) for k, v in m.items()})


def scenario_overload(env, cl, args):
    """7. Overload: each server in a cgroup held to a fraction of a core (CpuCap), its capacity
    measured closed-loop on the mix (cluster names, cache hits, unique names that miss the cache
    and go to a deliberately slow upstream), then offered 1x, 2x, 3x and 5x that capacity at a
    fixed rate: goodput (NOERROR/NXDOMAIN answers within 1 s per second), p99 of the answered,
    peak RSS against RSS at rest, and whether the server survived. Sextant runs the kubeadm
    Corefile (kubernetes, forward with max_concurrent 1000, cache 30, ...); Knot is authoritative
    for the same names (the misses from example.com's wildcard); Unbound serves the cluster zones
    as auth-zones and forwards the rest to the same slow upstream, cache-max-ttl 30."""
    try:
        cap = CpuCap("sextant-bench-overload", args.overload_quota)
    except (OSError, RuntimeError) as e:
        NOTES.append(f"Overload: not measured ({e}; needs root and a cgroup cpu controller).")
        return None
    zdir = env.path("zones")
    d = args.overload_duration
    reps = max(1, args.runs)
    runs = 1 + len(OVERLOAD_PROBES) + (1 + len(OVERLOAD_LEVELS)) * reps
    budget = (runs * (d + 3) + args.overload_warmup + 5) * 4 + 300
    up, upp = slow_upstream(env, args.overload_delay_ms, budget)
    log(f"slow upstream on 127.0.0.1:{up} (core {CLIENT_CORE}, {args.overload_delay_ms} ms)")
    cq = cl.cluster_queries(100000, 17)
    hq = gen.hit_queries(args.hosts, 20000, 19)
    hf = env.path("overload-hits.txt")
    gen.write_queries(hf, sorted(set(hq)))
    servers = []
    if env.has("kubernetes", "forward", "cache"):
        p = free_port()
        opt = lambda name, line: line if env.has(name) else ""  # noqa: E731
        mport = free_port()
        conf = (f".:{p} {{\n    errors\n"
                + opt("health", f"    health 127.0.0.1:{free_port()} {{\n        lameduck 5s\n    }}\n")
                + opt("ready", f"    ready 127.0.0.1:{free_port()}\n")
                + k8s_block(env, env.path("cluster.json"), "        fallthrough in-addr.arpa ip6.arpa\n")
                + opt("prometheus", f"    prometheus 127.0.0.1:{mport}\n")
                + f"    forward . 127.0.0.1:{up} {{\n        max_concurrent 1000\n    }}\n    cache 30\n"
                + opt("loop", "    loop\n") + opt("reload", "    reload\n") + opt("loadbalance", "    loadbalance\n")
                + "}\n")
        servers.append(sextant(env, "sextant kubeadm", conf, p, probe_name="cluster.local."))
        servers[-1].metrics_port = mport if env.has("prometheus") else None
        if env.coredns:
            servers.append(twin(env, servers[0], "coredns kubeadm", env.cluster_api()))
    else:
        NOTES.append("Overload: this build lacks `kubernetes`/`forward`/`cache`; only Knot and Unbound ran.")
    servers.append(knot(env, "knot", ["cluster.local", "in-addr.arpa", "ip6.arpa", gen.EXT_ZONE], zdir, free_port()))
    auth = "".join(f"auth-zone:\n    name: \"{z}.\"\n    zonefile: \"{os.path.join(zdir, z + '.zone')}\"\n"
                   f"    for-downstream: yes\n    for-upstream: yes\n    fallback-enabled: no\n"
                   for z in ("cluster.local", "in-addr.arpa", "ip6.arpa"))
    servers.append(unbound(env, "unbound", free_port(), [(".", up, False)], auth))
    if args.overload_servers:
        want = args.overload_servers.split(",")
        servers = [s for s in servers if s.label.split()[0] in want]
    out = {"quota": args.overload_quota, "delay_ms": args.overload_delay_ms, "miss": args.overload_miss,
           "duration": d, "reps": reps, "warmup": args.overload_warmup, "levels": list(OVERLOAD_LEVELS),
           "probes": list(OVERLOAD_PROBES), "rows": {}}
    n = [0]

    def mix(rate, tag):
        n[0] += 1
        lines = min(2_000_000, max(50000, int((rate or 60000) * d * 1.1)))
        return overload_mix(env.path(f"overload-{n[0]}.txt"), cq, hq, lines, args.overload_miss, tag, n[0])

    try:
        for s in servers:
            log(f"overload: starting {s.label} on 127.0.0.1:{s.port}, held to {args.overload_quota} of a core")
            s.start()
            cap.add(s)
            try:
                time.sleep(1)
                row = {"idle_kib": s.mem()[0], "idle_split_kib": s.mem_split(), "levels": []}
                dnsperf(s.port, hf, runs=1, outstanding=1000)  # the hit names into the cache
                cap.add(s)  # threads or children started since
                mp = getattr(s, "metrics_port", None)

                def measure(rate, prefix, k=None):
                    tag = f"{prefix}{random.randrange(10**6)}"
                    qf = mix(rate, tag)
                    with RssPeak(s) as rp, LevelCounters(s, mp) as lc:
                        r = overload_dnsperf(s.port, qf, d, rate, tag)
                    os.remove(qf)
                    r.update(k=k, target=rate, rss_peak_kib=rp.peak, counters=lc.out)
                    return r

                # Warm up, unmeasured: the mix in a closed loop until the server's caches hold
                # what a server that has been answering it for a while holds (cache 30: a
                # cluster name's entry expires after 30 s and is built again, the memo of the
                # kubernetes plugin fills). Cold, Sextant answered ~25% less per CPU-second in
                # the first minute than after it, which made capacity (measured first) low.
                if args.overload_warmup > 0:
                    tag = f"ovw{random.randrange(10**6)}"
                    qf = mix(None, tag)
                    overload_dnsperf(s.port, qf, args.overload_warmup, None, tag)
                    os.remove(qf)
                # Capacity, estimated once: the best of the closed loop and of 2x and 4x it
                # offered open loop. The closed loop understates it: a query the kernel drops
                # (2,000 outstanding are more than a small or shrunk receive buffer holds) keeps
                # its slot for dnsperf's 1 s timeout while the server idles; and a server that
                # reads in batches answers more when more is queued. The best of three runs
                # errs high rather than low: 1x is then at least what the server can answer.
                c0 = measure(None, "ove")
                closed = max(1, int(c0["goodput"]))
                row["estimate"] = [c0] + [measure(m * closed, f"ovp{m}x", f"open{m}") for m in OVERLOAD_PROBES]
                base = max(int(x["goodput"]) for x in row["estimate"])
                row["capacity_qps"] = base
                row["steady_kib"] = s.mem()[0]
                log(f"  {s.label:18s} capacity {base} q/s: the best of " + ", ".join(
                    f"{x['goodput']:.0f} ({'closed loop' if x['k'] is None else x['k'][4:] + 'x open loop'})"
                    for x in row["estimate"]) + f"; RSS {s.mem()[0] / 1024:.1f} MiB (idle {row['idle_kib'] / 1024:.1f})")
                # Then rounds of the closed loop and the four levels, each once per round, so
                # that the machine's drift over these minutes (the host's speed changes by tens
                # of percent from one ten minutes to the next) falls on all of them alike; each
                # figure is the median of its runs, and the peak the highest of those. In each
                # round the overloads go first, and 1x is offered at the median goodput of the
                # overloaded runs so far (what the server answers when it is saturated, measured
                # a minute before) or the estimate if that is higher: an estimate taken while
                # the host was slower would otherwise leave 1x below capacity.
                got = {k: [] for k in (0,) + OVERLOAD_LEVELS}
                order = [0] + sorted(OVERLOAD_LEVELS, reverse=True)
                for _ in range(reps):
                    for k in order:
                        if s.p.poll() is not None:
                            break
                        if k == 1:
                            sat = [x["goodput"] for j in OVERLOAD_LEVELS if j > 1 for x in got[j]]
                            rate = max(base, int(median(sat))) if sat else base
                        else:
                            rate = None if k == 0 else base * k
                        got[k].append(measure(rate, f"ov{k}x", k or None))
                got = {k: overload_median(v) for k, v in got.items() if v}
                if 0 in got:
                    row["capacity"] = got[0]
                    c = got[0]
                    log(f"  {s.label:18s} closed loop {c['goodput']:9.0f} q/s good (runs {overload_runs_text(c)}), "
                        f"p99 {c['p99_ms']:.1f} ms")
                for k in OVERLOAD_LEVELS:
                    if k not in got:
                        break
                    r = got[k]
                    row["levels"].append(r)
                    log(f"  {s.label:18s} {k}x: offered {r['offered_qps']:9.0f} q/s, goodput {r['goodput']:9.0f} "
                        f"(runs {overload_runs_text(r)}), p99 {r['p99_ms']:.1f} ms (cluster names {r['p99_cluster_ms']:.1f}), "
                        f"RSS {r['rss_peak_kib'] / 1024:.1f} MiB; "
                        + ", ".join(f"{k2} {v:.0f}" if k2 != "cpu_s" else f"cpu {v:.2f} s" for k2, v in r["counters"].items()))
                row["alive"] = s.p.poll() is None and probe(s.port, s.probe_name, timeout=2)
                row["panics"] = len(re.findall(r"panicked at|fatal error|SIGSEGV", s.tail()))
                row["after_kib"] = s.mem()[0]
                row["after_split_kib"] = s.mem_split()
                log(f"  {s.label:18s} RSS anon/file at rest {row['idle_split_kib']} KiB, after "
                    f"{row['after_split_kib']} KiB")
                row.setdefault("capacity", c0)
                row["peak"] = max([row["capacity"]["goodput"]] + [x["goodput"] for x in row["levels"]])
                out["rows"][s.label] = row
            finally:
                s.stop()
    finally:
        upp.terminate()
        cap.close()
    return out


# ---- report ----------------------------------------------------------------------------------


def fmt(x, nd=0):
    if x is None or x != x:
        return "–"
    return f"{x:,.{nd}f}"


def machine_note():
    la = open("/proc/loadavg").read().split()[:3]
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    top = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], stdout=subprocess.PIPE,
                         text=True).stdout.splitlines()[1:6]
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}; "
            f"load average {' '.join(la)}; busiest processes: "
            + ", ".join(" ".join(t.split()) for t in top))


def ratio(a, b):
    if not a or not b or a != a or b != b:
        return None
    return a / b


def report(all_res, cg, large, args, started, load_before, load_after, sextant_rev):
    date = started.strftime("%Y-%m-%d-%H%M")
    L = [f"# Sextant side-by-side benchmark, {started.strftime('%Y-%m-%d %H:%M')} UTC", ""]
    L += [f"Sextant `{sextant_rev}`; mode: {'quick' if args.quick else 'full'}; "
          f"cluster: {args.services} services ({args.eps} endpoints each on average); "
          f"{args.runs} run(s) of {args.duration} s per figure (median); latency at a fixed "
          f"{args.rate:,} q/s for {args.lat_duration} s. Every server pinned to core {SERVER_CORE} "
          f"(`taskset -c {SERVER_CORE}`), dnsperf and the upstream Knot on core {CLIENT_CORE}. "
          f"Only 127.0.0.1.", ""]
    L += ["**Machine load.** Before: " + load_before, "", "After: " + load_after, "",
          "Wall-clock figures on a shared 2-CPU machine move with whatever else runs; compare the "
          "ratios (measured interleaved, in the same run), and track instructions per query, which "
          "does not depend on load.", ""]
    if NOTES:
        L += ["**Notes.**", ""] + [f"* {n}" for n in NOTES] + [""]
    chart = []
    for sc in all_res:
        res = sc["res"]
        L += [f"## {sc['title']}", ""]
        lk = "lookups_med" if sc.get("per") else "qps_med"
        if sc.get("per"):
            L += [f"Lookups/s and CPU are per lookup (five queries, or one with autopath). Latency is per "
                  f"query at the same lookup rate for all ({args.rate // 5:,} lookups/s); without autopath a "
                  f"client's lookup takes five such queries in sequence.", ""]
        cpu_unit = "lookups" if sc.get("per") else "answered"
        per = bool(sc.get("per"))
        L += [f"| server | {sc['unit']} (median) |{' q/s |' if per else ''} CPU s / 1k {cpu_unit} | p50 ms | "
              f"p99 ms | lost (throughput / latency runs) | VmRSS MiB | VmHWM MiB | rcodes (last run) |",
              "|---|---:|" + ("---:|" if per else "") + "---:|---:|---:|---:|---:|---:|---|"]
        for label, e in res.items():
            qcol = f" {fmt(e['qps_med'])} |" if per else ""
            L.append(f"| {label} | {fmt(e.get(lk))} |{qcol} {fmt(e['cpu_per_k_med'], 4)} | "
                     f"{fmt(e['p50_ms'], 3)} | {fmt(e['p99_ms'], 3)} | {e['lost']} / {e['lat_lost']} | "
                     f"{fmt(e['rss_kib'] / 1024, 1)} | {fmt(e['hwm_kib'] / 1024, 1)} | {e['rcodes']} |")
        L.append("")
        waits = [(label, e["lat_run_wait_ms"]) for label, e in res.items() if "lat_run_wait_ms" in e]
        if waits:
            L += ["Time the server's threads waited for core " + SERVER_CORE + " (runnable, another "
                  "process on it) during the latency runs: "
                  + ", ".join(f"{label} {w:,.0f} ms" for label, w in waits)
                  + ". Each wait delays the queries behind it, so p99 at a moderate rate follows this "
                  "figure more than the server: on a quiet core the cluster scenario's servers wait "
                  "15-45 ms in its 5 s and answer at p99 ≈ 0.1 ms (bench/README.md).", ""]
        ents = {label: e["entries"] for label, e in res.items() if e.get("entries") is not None}
        if ents:
            L += ["Cache entries at the end of the scenario, beside the RSS above (Sextant: "
                  "`coredns_cache_entries`; Unbound: `msg.cache.count` / `rrset.cache.count`):", "",
                  "| server | cache entries | VmRSS MiB | RssAnon MiB | RssFile MiB (binary, libraries) |",
                  "|---|---|---:|---:|---:|"]
            for label, en in ents.items():
                e = res[label]
                shown = ", ".join(f"{k} {v:,}" for k, v in en.items())
                L.append(f"| {label} | {shown} | {fmt(e['rss_kib'] / 1024, 1)} | "
                         f"{fmt(e.get('rss_anon_kib', float('nan')) / 1024, 1)} | "
                         f"{fmt(e.get('rss_file_kib', float('nan')) / 1024, 1)} |")
            L.append("")
        if sc["ratios"]:
            L += ["| ratio | throughput (higher is better) | CPU per query (lower is better) | p50 | p99 | RSS |",
                  "|---|---:|---:|---:|---:|---:|"]
            for a, b in sc["ratios"]:
                if a not in res or b not in res:
                    continue
                ea, eb = res[a], res[b]
                rr = [ratio(ea.get(lk), eb.get(lk)), ratio(ea["cpu_per_k_med"], eb["cpu_per_k_med"]),
                      ratio(ea["p50_ms"], eb["p50_ms"]), ratio(ea["p99_ms"], eb["p99_ms"]),
                      ratio(ea["rss_kib"], eb["rss_kib"])]
                L.append(f"| {a} / {b} | " + " | ".join(fmt(x, 2) for x in rr) + " |")
                chart.append((f"{a.replace('sextant ', '')}\n/ {b.replace('sextant ', '')}", rr[0], rr[1]))
                if sc.get("target") == "transport" and rr[0] and rr[1]:
                    ok = rr[0] >= 1.0 and rr[1] <= 1.0
                    L.append(f"| target: throughput ≥ 1.00 at CPU per query ≤ 1.00 | | "
                             f"**{'met' if ok else 'NOT met'}** | | | |")
                if a.endswith("+log") and rr[0] and rr[1]:
                    cap = 1 / rr[1]
                    L.append(f"| `log` overhead: capacity with log (CPU per query without / with) | "
                             f"{cap:.2f} | target ≥ 0.90: **{'met' if cap >= 0.9 else 'NOT met'}** | | | |")
            L.append("")
    if cg and cg.get("knot"):
        chart.append(("instructions per\ncluster query\n/ knot", None,
                      cg["sextant"]["per_query"] / cg["knot"]["per_query"]))
        if cg["sextant"].get("warm_per_query") and cg["knot"].get("warm_per_query"):
            chart.append(("instructions per\nrepeated query\n/ knot", None,
                          cg["sextant"]["warm_per_query"] / cg["knot"]["warm_per_query"]))
    L += ["## Instructions per query (callgrind)", ""]
    if cg:
        sx, kn = cg["sextant"], cg.get("knot")
        L += [f"Each server answers the same {sx['answered']:,} queries of the cluster mix ({cg.get('unique', 0):,} "
              "distinct names) once, then a second time in a row. **First pass**: Ir of the run minus Ir of "
              "start-up and shutdown alone, per query. **Second pass**: the Ir the second pass added, per query "
              "(names seen before: the steady state of a cluster, whose pods ask the same names over and over).", "",
              "| server | first pass (instructions / query) | second pass (instructions / query) |",
              "|---|---:|---:|"]
        for lbl, x in (("sextant", sx), ("knot", kn)):
            if x:
                w = x.get("warm_per_query")
                L.append(f"| {lbl} | {x['per_query']:,.0f} | {w:,.0f} |" if w else
                         f"| {lbl} | {x['per_query']:,.0f} | |")
        if kn:
            r1 = sx["per_query"] / kn["per_query"]
            w1 = (sx["warm_per_query"] / kn["warm_per_query"]
                  if sx.get("warm_per_query") and kn.get("warm_per_query") else None)
            L.append(f"| ratio Sextant / Knot | **{r1:.2f}** | **{w1:.2f}** |" if w1 else
                     f"| ratio Sextant / Knot | **{r1:.2f}** | |")
        L += [""]
    else:
        L += ["Not measured (valgrind missing or the run failed).", ""]
    if cg and cg.get("sextant_idle_transports"):
        sx, it = cg["sextant"], cg["sextant_idle_transports"]
        d1 = it["per_query"] / sx["per_query"] - 1
        rows = [("first pass", sx["per_query"], it["per_query"], d1)]
        if sx.get("warm_per_query") and it.get("warm_per_query"):
            rows.append(("second pass", sx["warm_per_query"], it["warm_per_query"],
                         it["warm_per_query"] / sx["warm_per_query"] - 1))
        L += ["### Idle transports on the UDP path", "",
              "The same server and queries with `tls://`, `https://`, `https3://`, `quic://` and `grpc://` "
              "blocks configured (each with `tls` and `whoami`) and never queried (target: within ±2%):", "",
              "| | UDP only (instructions / query) | with idle transports | difference |", "|---|---:|---:|---:|"]
        for name, a, b, d in rows:
            L.append(f"| {name} | {a:,.0f} | {b:,.0f} | {d * 100:+.2f}% |")
        worst = max(abs(r[3]) for r in rows)
        L += ["", f"Target ±2%: **{'met' if worst <= 0.02 else 'NOT met'}**.", ""]
    L += ["## Memory for a large cluster", ""]
    if large:
        c = large["counts"]
        L += [f"{c['services']:,} services, {c['endpointslices']:,} EndpointSlices with {c['endpoints']:,} "
              f"endpoints, {c['pods']:,} pods, {c['namespaces']} namespaces from manifests "
              f"({large['manifest_bytes'] / 2**20:.0f} MiB JSON), `pods verified`:", "",
              "| | VmRSS MiB | VmHWM MiB | ready after s |", "|---|---:|---:|---:|",
              f"| empty cluster | {large['empty_rss_kib'] / 1024:.1f} | {large['empty_hwm_kib'] / 1024:.1f} | "
              f"{large['empty_start_s']:.1f} |",
              f"| large cluster | {large['large_rss_kib'] / 1024:.1f} | {large['large_hwm_kib'] / 1024:.1f} | "
              f"{large['large_start_s']:.1f} |"]
        for key in ("empty", "large"):
            if f"coredns_{key}_rss_kib" in large:
                L.append(f"| CoreDNS, {key} cluster (from the fake API server) | "
                         f"{large[f'coredns_{key}_rss_kib'] / 1024:.1f} | {large[f'coredns_{key}_hwm_kib'] / 1024:.1f} | "
                         f"{large[f'coredns_{key}_start_s']:.1f} |")
        L += ["",
              f"**{large['bytes_per_object']:,.0f} bytes per object** (RSS difference / "
              f"{large['objects']:,} services + endpoints + pods). VmHWM includes parsing the manifest "
              "file, which an API-server watch does in pages.", ""]
    else:
        L += ["Not measured on this build.", ""]
    L += ["## API at cluster scale", ""]
    if API_SCALE:
        c = API_SCALE["counts"]
        L += [f"{c['services']:,} services, {c['endpoints']:,} endpoints, {c['pods']:,} pods from the fake API "
              f"server, `pods verified`; a compaction makes every watch fail with 410 and the server lists "
              f"everything again; then {API_SCALE['rate']} EndpointSlice changes a second for "
              f"{API_SCALE['seconds']} s (`coredns_kubernetes_dns_programming_duration_seconds`, bucket bounds).", "",
              "| server | ready after s | steady RSS MiB | peak RSS during the re-list MiB | peak / steady | "
              "changes programmed | p50 ≤ ms | p99 ≤ ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for who, r in API_SCALE["rows"].items():
            ms = lambda x: fmt(x * 1000 if x is not None else None)  # noqa: E731
            L.append(f"| {who} | {r['ready_s']:.1f} | {r['steady_kib'] / 1024:.1f} | "
                     f"{r['relist_peak_kib'] / 1024:.1f} | {r['relist_peak_kib'] / max(1, r['steady_kib']):.2f} | "
                     f"{fmt(r['programmed'])} | {ms(r['p50_s'])} | {ms(r['p99_s'])} |")
        L.append("")
    else:
        L += ["Not measured on this build.", ""]
    L += overload_section(args, date)
    L += ["## Commands", "", "Reproduce with `bench/run.sh" + (" --quick" if args.quick else "") + "`. "
          "Every command the run started (query files and temp dirs vary):", "", "```"] + COMMANDS + ["```", ""]
    L += ["Sextant Corefiles (ports masked; `manifests` paths are the generated cluster):", ""]
    for label, cf in CONFIGS.items():
        L += [f"`{label}`:", "", "```", cf.rstrip(), "```", ""]
    md = "\n".join(L)
    os.makedirs(args.out, exist_ok=True)
    mdp = os.path.join(args.out, f"{date}.md")
    with open(mdp, "w") as f:
        f.write(md)
    pngp = os.path.join(args.out, f"{date}.png")
    draw(chart, pngp, started)
    return mdp, pngp, md


def overload_section(args, date):
    """The overload section of the report (Markdown lines) and its chart, `<date>-overload.png`
    beside the report."""
    L = ["## Overload (goodput against offered load)", ""]
    if not OVERLOAD.get("rows"):
        return L + ["Not measured on this run.", ""]
    o = OVERLOAD
    L += [f"Each server alone, pinned to core {SERVER_CORE} in a cgroup held to {o['quota']:g} of a core (so that "
          f"one dnsperf on core {CLIENT_CORE}, `nice -10`, can offer several times what it answers). The mix: "
          f"cluster names and cache hits 7:2, and {o['miss'] * 100:g}% names never asked before, which miss the "
          f"cache and go to a deliberately slow upstream on core {CLIENT_CORE} (`bench/slowup.py`, every answer "
          f"{o['delay_ms']} ms late). Sextant runs the kubeadm Corefile (`forward` with `max_concurrent 1000`, "
          f"`cache 30`); Knot is authoritative for the same names (the never-asked ones from a wildcard); "
          f"Unbound serves the cluster zones as `auth-zone`s and forwards the rest to the same slow upstream. "
          f"Each server first answers the mix for {o.get('warmup', 0)} s unmeasured (closed loop), so that its caches "
          f"are in the state a server answering this mix for a while has. "
          f"Capacity is estimated once, as the best of three runs: the closed loop (4 sockets, 2,000 outstanding) "
          f"and 2× and 4× its goodput offered open loop (the closed loop understates it: each query the kernel "
          f"drops holds one of dnsperf's slots for its 1 s timeout while the server idles; and a server that "
          f"reads in batches answers more when more is queued; the best of three errs high, so 1× is at least "
          f"what the server answers). Then the closed loop and 1×, 2×, 3× and 5× capacity (`-Q`), {o['duration']} s "
          f"each, run in {o.get('reps', 1)} rounds, each load once per round (this host's speed drifts by tens of "
          f"percent over ten minutes; rounds make the drift fall on every load alike). In each round the "
          f"overloads go first, and 1× is offered at the median goodput of the overloaded runs so far (the "
          f"server's capacity measured a minute before) or at the estimate if that is higher. The table gives the "
          f"run with the median goodput of each load, its peak RSS the highest of its runs; **peak** is the "
          f"highest of the medians (closed loop and levels, not the estimate). **Goodput**: NOERROR/NXDOMAIN answers within "
          f"1 s (dnsperf's timeout), per second; **p99** over those answers, and over those for cluster names "
          f"(the other names include cache hits whose entry just expired, which wait for the slow upstream); **RSS**: the peak during the level (sampled every 50 ms) against RSS at rest after start "
          f"(before any query) and against RSS after the warm-up and the capacity estimate (caches filled: what the "
          f"overload adds).",
          "", f"![goodput against offered load]({date}-overload.png)", "",
          "| server | load | offered q/s | goodput q/s | of peak | goodput of each run | p50 ms | p99 ms | "
          "p99 cluster names ms | RSS peak MiB | / at rest | / after capacity run | rcodes (not NOERROR/NXDOMAIN) |",
          "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    verdict = []
    for label, row in o["rows"].items():
        peak, idle, steady = row["peak"], max(1, row["idle_kib"]), max(1, row.get("steady_kib", 0))
        est = [dict(x, est=True) for x in row.get("estimate", [])]
        for x in est + [dict(row["capacity"], k=None)] + row["levels"]:
            other = ", ".join(f"{k} {v}" for k, v in sorted(x["rcodes"].items()) if k not in ("NOERROR", "NXDOMAIN"))
            load = ("closed loop" if x["k"] is None else f"open loop, {x['k'][4:]}× closed loop"
                    if str(x["k"]).startswith("open") else f"{x['k']}× capacity")
            if x.get("est"):
                load = "estimate: " + load
            L.append(f"| {label} | {load} | "
                     f"{fmt(x['offered_qps'])} | {fmt(x['goodput'])} | {x['goodput'] / peak * 100:.0f}% | "
                     f"{overload_runs_text(x)} | "
                     f"{fmt(x['p50_ms'], 2)} | {fmt(x['p99_ms'], 1)} | {fmt(x['p99_cluster_ms'], 1)} | "
                     f"{x['rss_peak_kib'] / 1024:.1f} | {x['rss_peak_kib'] / idle:.2f} | "
                     f"{'' if x['k'] is None else format(x['rss_peak_kib'] / steady, '.2f')} | {other} |")
        base = row.get("capacity_qps", row["capacity"]["goodput"])
        lv = row["levels"]
        worst = min((x["goodput"] / peak for x in lv), default=0)
        worst_cap = min((x["goodput"] / max(1, base) for x in lv), default=0)
        p99 = max((x["p99_ms"] for x in lv), default=float("nan"))
        rss = max([x["rss_peak_kib"] for x in lv + row.get("estimate", [])] + [row["capacity"]["rss_peak_kib"]]) / idle
        grown = max((x["rss_peak_kib"] for x in lv), default=0) / steady
        ok = worst >= 0.9 and rss < 2 and row["alive"] and not row["panics"] and len(lv) == len(o["levels"])
        verdict.append(f"| {label} | {worst * 100:.0f}% | {worst_cap * 100:.0f}% | {fmt(p99, 1)} | {rss:.2f} | {grown:.2f} | "
                       f"{'yes' if row['alive'] and not row['panics'] else '**no**'} | "
                       f"{'**met**' if ok else '**NOT met**'} |")
    L += ["", "| server | lowest goodput / peak (target ≥ 90%) | lowest goodput / capacity | "
          "highest p99 ms | RSS peak / at rest (target < 2) | RSS peak under 1-5× / after the capacity run | "
          "alive, no panic | targets |",
          "|---|---:|---:|---:|---:|---:|---|---|"] + verdict + [""]
    draw_overload(os.path.join(args.out, f"{date}-overload.png"))
    return L


def draw_overload(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    for label, row in OVERLOAD["rows"].items():
        pts = [(0, 0)] + [(x["offered_qps"], x["goodput"]) for x in [row["capacity"]] + row.get("estimate", [])]
        lv = sorted((x["offered_qps"], x["goodput"]) for x in row["levels"])
        a1.plot([p[0] for p in lv], [p[1] for p in lv], marker="o", label=label)
        a1.plot([p[0] for p in pts[1:]], [p[1] for p in pts[1:]], marker="x", color=a1.lines[-1].get_color(),
                linestyle="none")
        a2.plot([x["k"] for x in row["levels"]], [x["goodput"] / row["peak"] for x in row["levels"]],
                marker="o", label=label)
    a1.set_xlabel("offered q/s (achieved by dnsperf)")
    a1.set_ylabel("goodput q/s (answered within 1 s)")
    a1.set_title("goodput against offered load (x: closed loop and the capacity estimate)", fontsize=9)
    a2.axhline(0.9, color="red", linewidth=0.8, linestyle="--", label="target: 90% of peak")
    a2.set_ylim(0, 1.1)
    a2.set_xticks(OVERLOAD["levels"])
    a2.set_xlabel("offered load (× the server's own capacity)")
    a2.set_ylabel("goodput / peak goodput")
    a2.set_title(f"held to {OVERLOAD['quota']:g} core; {OVERLOAD['miss'] * 100:g}% misses to a "
                 f"{OVERLOAD['delay_ms']} ms upstream", fontsize=9)
    for a in (a1, a2):
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(chart, path, started):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    if not chart:
        chart = [("no Sextant\nratios yet", 0, 0)]
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(chart)), 4.5))
    xs = range(len(chart))
    w = 0.38
    b1 = ax.bar([x - w / 2 for x in xs], [c[1] or 0 for c in chart], w,
                label="throughput ratio (higher is better)")
    b2 = ax.bar([x + w / 2 for x in xs], [c[2] or 0 for c in chart], w,
                label="CPU per query ratio (lower is better)")
    for bars in (b1, b2):
        for b in bars:
            h = b.get_height()
            if h > 0:
                ax.annotate(f"{h:.2f}", (b.get_x() + b.get_width() / 2, h), ha="center", va="bottom", fontsize=7)
    if any((c[1] or 0) > 0 for c in chart):
        ax.set_yscale("log")
        fmt_ = matplotlib.ticker.FormatStrFormatter("%.1f")
        ax.yaxis.set_major_formatter(fmt_)
        ax.yaxis.set_minor_formatter(fmt_)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([c[0] for c in chart], fontsize=8)
    ax.set_ylabel("Sextant / reference")
    ax.set_title(f"Sextant vs reference servers, {started.strftime('%Y-%m-%d %H:%M')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(root, mdp, pngp, md):
    doc = os.path.join(root, "docs", "performance.md")
    rel_md = os.path.relpath(mdp, os.path.join(root, "docs"))
    rel_png = os.path.relpath(pngp, os.path.join(root, "docs"))
    body = md.split("\n", 1)[1]
    body = body.split("\n## Commands")[0]
    # images beside the report (the overload chart) seen from docs/
    body = re.sub(r"\]\(([0-9-]+-[a-z]+\.png)\)",
                  lambda m: "](" + os.path.relpath(os.path.join(os.path.dirname(pngp), m.group(1)),
                                                   os.path.join(root, "docs")) + ")", body)
    fp = os.path.join(root, "bench", "findings.md")
    findings = open(fp).read() if os.path.exists(fp) else ""
    text = f"""# Performance

Sextant is measured side by side with the reference DNS servers from Debian (Knot DNS and NSD for
authoritative cluster names, Unbound and dnsmasq as caches) in one run of `bench/run.sh`, on
127.0.0.1 high ports, every server pinned to one core and dnsperf on the other. The numbers to
watch are the **ratios** (Sextant / reference, measured interleaved under the same load) and
**instructions per query** from callgrind; absolute queries per second depend on the machine and on
whatever else it is doing.

## How to reproduce

```
bench/run.sh            # full run: 3 runs per figure, a few minutes per scenario
bench/run.sh --quick    # one short run each, to try it out
bench/run.sh --help     # sizes, durations, rate, which scenarios
```

`run.sh` builds the release binary, installs `knot nsd unbound dnsmasq dnsperf valgrind` from Debian
if missing and matplotlib into `bench/.venv`, generates the cluster (manifests for Sextant, zone
files for Knot/NSD from the same generator, `bench/gen.py`), runs the scenarios (`bench/bench.py`)
and writes `bench/results/<date>.md` and `.png` and this page.

What each scenario does:

1. **Cluster names**: Sextant's `kubernetes` plugin reading the generated cluster from `manifests`
   (kubeadm options `pods insecure`, `ttl 30`), with and without `log`, against Knot DNS and NSD
   serving the same records as `cluster.local`, `in-addr.arpa` and `ip6.arpa` zone files (A/AAAA,
   `_port._proto` SRV with CoreDNS's weights, bare-name SRV, endpoint names, PTR, apex SOA/NS).
   Query mix: A+AAAA pairs for ClusterIP and headless services, StatefulSet pod names, SRV, PTR, and
   20% search-path NXDOMAINs (`svc.ns.<podns>.svc.cluster.local`, external names under the cluster
   domain).
2. **Cache hits**: `cache 30` + `forward` against Unbound and dnsmasq (30 s max TTL each), all
   forwarding to the same Knot on loopback, warmed before measuring.
3. **Cache misses and the ndots:5 search path**: unique external names per run, looked up the way a
   pod in `ns-0` does (`name.ns-0.svc.cluster.local`, `name.svc.cluster.local`,
   `name.cluster.local`, `name.corp.example.net`, `name`: four NXDOMAIN, then the answer) with the
   kubeadm Corefile, and with `autopath` (one query per lookup), against Unbound with
   `cluster.local` as a static local zone. Compared in lookups per second.
4. **Node-cache mode**: the NodeLocal DNSCache Corefile (reference §6) rendered with 127.0.0.1,
   forwarding `cluster.local`/reverse zones over TCP to the cluster zone on Knot, against Unbound
   configured the same way.
5. **Zone file**: Sextant's `file` plugin against Knot DNS serving the same generated zone.
6. **DoT and DoH frontends**: Sextant with `tls://` and `https://` blocks forwarding to the
   upstream Knot against dnsdist (Debian) with `addTLSLocal`/`addDOHLocal` and the same backend,
   the same self-signed certificate, neither with a cache (dnsdist's backend with `maxInFlight=128`,
   its tuning for pipelined TCP, over which it forwards DoT queries; DoH queries it forwards over
   UDP, while Sextant's forward asks over TCP for them as CoreDNS does, so DoH is also measured
   against a second dnsdist whose backend is `tcpOnly=true`). DoT load: dnsperf `-m dot`
   (4 connections, 200 outstanding); DoH load: h2load (HTTP/2 GETs of `/dns-query?dns=`, 4
   connections of 50 streams; Debian's dnsperf 2.10 DoH client loses nearly every query with more
   than one outstanding). Target: Sextant's q/s at least dnsdist's at no more CPU per query.
   The callgrind section also runs the cluster queries against the same server with idle
   `tls://`, `https://`, `https3://`, `quic://` and `grpc://` blocks configured: the UDP path must
   cost the same (±2%).
7. **Overload**: each server alone in a cgroup held to a tenth of a core, so one dnsperf can offer
   several times its capacity; a mix of cluster names, cache hits and 10% never-asked names that
   go to a deliberately slow upstream (`bench/slowup.py`, 250 ms); Sextant with the kubeadm Corefile
   (`forward` `max_concurrent 1000`, `cache 30`), Knot authoritative for the same names, Unbound with
   the cluster zones as `auth-zone`s forwarding the rest to the same upstream. A warm-up of the
   mix (`--overload-warmup`), capacity estimated once (best of the closed loop and 2×/4× of it
   open loop), then `--runs` rounds of the closed loop and 1×, 2×, 3× and 5× offered at a fixed
   rate (1× at the saturated goodput measured so far), the median of each: goodput (answers within
   1 s) against offered load, p99 of the answered, peak RSS against RSS at rest, crash check.
   `--overload-servers` picks servers. Targets: goodput ≥ 90% of peak at every level, p99
   bounded, RSS < 2× at rest.

Per server: median queries/s of the throughput runs, server CPU seconds per 1,000 answered queries
(utime+stime of the server's process tree from `/proc/<pid>/stat`; dnsperf saturates its own core,
so CPU per query is the fairer efficiency figure), p50/p99 latency at a fixed rate (from dnsperf
`-v` per-query lines), lost queries, VmRSS/VmHWM. Plus callgrind instructions per cluster-name
query, the `log` overhead, and memory for a large cluster (10k services, ~100k endpoints, 30k pods).

Published anchors for orientation: CoreDNS did 33,669 queries/s for cluster names on 2 vCPUs and
about 60k/s per core on loopback; on this kind of 2-core machine Knot DNS and NSD answer about 390k
queries/s from one worker thread, Unbound about 365k cache hits/s, dnsmasq about 300k.

{findings}
## Latest results

From [{os.path.basename(mdp)}]({rel_md}):

![ratios]({rel_png})
{body}
"""
    with open(doc, "w") as f:
        f.write(text)
    return doc


# ---- main ------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--eps", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=2000, help="external names for the cache scenarios")
    ap.add_argument("--queries", type=int, default=200000, help="lines per query file")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--lat-duration", type=int, default=5)
    ap.add_argument("--rate", type=int, default=20000, help="fixed rate for the latency runs")
    ap.add_argument("--parity", type=int, default=300, help="sampled queries compared with Knot")
    ap.add_argument("--cg-queries", type=int, default=20000)
    ap.add_argument("--large-services", type=int, default=10000)
    ap.add_argument("--large-eps", type=int, default=11)
    ap.add_argument("--large-pods", type=int, default=30000)
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    ap.add_argument("--transport-rate", type=int, default=5000,
                    help="fixed rate for the DoT/DoH latency runs")
    ap.add_argument("--zone-records", type=int, default=100000, help="records of the file scenario's zone")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--api-services", type=int, default=10000)
    ap.add_argument("--api-eps", type=int, default=11)
    ap.add_argument("--api-pods", type=int, default=100000)
    ap.add_argument("--api-churn-rate", type=int, default=100, help="EndpointSlice changes a second")
    ap.add_argument("--api-churn-seconds", type=int, default=10)
    ap.add_argument("--api-relist-window", type=int, default=10, help="seconds sampled after the compaction")
    ap.add_argument("--overload-quota", type=float, default=0.1,
                    help="overload scenario: share of one core each server is held to (cgroup cpu quota)")
    ap.add_argument("--overload-delay-ms", type=int, default=250, help="overload scenario: the slow upstream's delay")
    ap.add_argument("--overload-miss", type=float, default=0.1,
                    help="overload scenario: share of never-asked names (cache misses to the slow upstream)")
    ap.add_argument("--overload-servers", default=None,
                    help="overload scenario: only these servers (comma-separated: sextant, coredns, knot, unbound)")
    ap.add_argument("--overload-warmup", type=int, default=45,
                    help="overload scenario: seconds of the mix, unmeasured, before the capacity run")
    ap.add_argument("--overload-duration", type=int, default=10, help="overload scenario: seconds per level")
    ap.add_argument("--coredns", default=None,
                    help="a CoreDNS binary you built (run.sh: COREDNS_BIN), measured beside Sextant")
    ap.add_argument("--fakeapi", default=None,
                    help="the fake API server (crates/fakeapi example `serve`) that serves CoreDNS the cluster")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration, args.lat_duration = 1, 3, 2
        args.queries, args.cg_queries = min(args.queries, 50000), min(args.cg_queries, 5000)
        args.large_services, args.large_pods = min(args.large_services, 2000), min(args.large_pods, 6000)
        args.api_services, args.api_pods = min(args.api_services, 2000), min(args.api_pods, 20000)
        args.api_churn_seconds = min(args.api_churn_seconds, 5)
        args.overload_duration = min(args.overload_duration, 4)
        args.overload_warmup = min(args.overload_warmup, 10)
    args.out = args.out or os.path.join(args.root, "bench", "results")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = machine_note()
    work = tempfile.mkdtemp(prefix="sextant-bench-")
    if args.coredns and not args.fakeapi:
        ap.error("--coredns needs --fakeapi (bench/run.sh builds it when COREDNS_BIN is set)")
    env = Env(args, work)
    if args.coredns:
        NOTES.append(f"CoreDNS (`{args.coredns}`, built by the user) ran beside Sextant with the same "
                     "Corefiles; its cluster came from the fake API server (`endpoint`) serving the "
                     "manifest Sextant reads. Not run under callgrind (a Go binary under valgrind is not "
                     "a fair instruction count).")
    log(f"work dir {work}; Sextant plugins: {', '.join(sorted(env.plugins))}")
    want = set(args.scenarios.split(","))
    cl = gen.Cluster(args.services, args.eps, 10**9, 1)
    cl.write_manifests(env.path("cluster.json"))
    zdir = env.path("zones")
    os.makedirs(zdir)
    cl.write_zones(zdir)
    gen.external_zone(zdir, args.hosts)
    log(f"cluster: {cl.counts()}")
    all_res, cg, large = [], None, None
    upstream = None
    try:
        if "cluster" in want:
            log("scenario 1: cluster names")
            all_res.append(scenario_cluster(env, cl, args))
        if want & {"hits", "search", "nodecache", "transports"}:
            up_port = free_port()
            upstream = knot(env, "upstream knot", [gen.EXT_ZONE, gen.HOST_SEARCH, "cluster.local",
                                                   "in-addr.arpa", "ip6.arpa"], zdir, up_port, core=CLIENT_CORE)
            log(f"starting upstream Knot on 127.0.0.1:{up_port} (core {CLIENT_CORE})")
            upstream.start()
            if "hits" in want:
                log("scenario 2: cache hits")
                all_res.append(scenario_hits(env, up_port, args))
            if "search" in want:
                log("scenario 3: search path / misses")
                all_res.append(scenario_search(env, up_port, args))
            if "nodecache" in want:
                log("scenario 4: node cache")
                all_res.append(scenario_nodecache(env, cl, up_port, args))
            if "transports" in want:
                log("scenario 6: DoT and DoH frontends vs dnsdist")
                r = scenario_transports(env, up_port, args)
                if r:
                    all_res.append(r)
            upstream.stop()
            upstream = None
        if "file" in want:
            log("scenario 5: zone file")
            all_res.append(scenario_file(env, args))
        if "dnssec" in want:
            log("scenario 5b: online DNSSEC signing")
            all_res.append(scenario_dnssec(env, args))
        if "callgrind" in want:
            log("callgrind: instructions per query")
            cg = callgrind(env, args)
            log(f"callgrind: {cg}")
        if "large" in want:
            log("large cluster memory")
            large = large_cluster(env, args)
            log(f"large: {large}")
        if "api" in want:
            log("API at cluster scale")
            API_SCALE.update(api_at_scale(env, args) or {})
        if "overload" in want:
            log("scenario 7: overload")
            OVERLOAD.update(scenario_overload(env, cl, args) or {})
    finally:
        if upstream:
            upstream.stop()
        for a in env.apis:
            a.terminate()
    rev = subprocess.run(["git", "-C", args.root, "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
                         text=True).stdout.strip()
    mdp, pngp, md = report(all_res, cg, large, args, started, load_before, machine_note(), rev)
    if want >= set(ALL_SCENARIOS):
        doc = update_docs(args.root, mdp, pngp, md)
    else:
        doc = "(docs/performance.md untouched: not every scenario ran)"
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"results": all_res, "callgrind": cg, "large": large, "overload": OVERLOAD, "notes": NOTES}, f, indent=1,
                  default=str)
    log(f"wrote {mdp}, {pngp}, {doc}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"kept {work}")


if __name__ == "__main__":
    sys.exit(main())
