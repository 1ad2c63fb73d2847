#!/usr/bin/env python3
"""dnstap's cost: the same Corefile with and without `dnstap`, in the same run.

Sextant serves on 127.0.0.1 pinned to core 0; dnsperf (core 1) saturates it for DURATION
seconds per figure; Debian's fstrm_capture (core 1) collects the dnstap stream into a file.
Variants, alternated ROUNDS times: no dnstap, `dnstap SOCK`, `dnstap SOCK full`. Reported:
q/s (median), server CPU per query, frames the collector got and drops the server logged.
BASE `whoami` (default): `whoami` answers 1000 names; `kubeadm`: the kubeadm Corefile of
bench/cg_corefile.py answers the cluster names of bench/gen.py (2000 services), what a cluster
asks.

    SEXTANT_BIN=target/release/sextant python3 bench/dnstap.py [DURATION] [ROUNDS] [BASE]
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port  # noqa: E402

BIN = os.environ.get("SEXTANT_BIN", "target/release/sextant")
DURATION = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BASE = sys.argv[3] if len(sys.argv) > 3 else "whoami"
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def wait_dns(port, probe):
    for _ in range(200):
        r = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "-p", str(port), "@127.0.0.1",
                            probe], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.05)
    raise SystemExit("server did not answer")


def frames(path):
    """Data frames in a Frame Streams file."""
    b = open(path, "rb").read()
    i, n = 0, 0
    while i + 4 <= len(b):
        ln = int.from_bytes(b[i:i + 4], "big")
        if ln == 0:
            cl = int.from_bytes(b[i + 4:i + 8], "big")
            i += 8 + cl
        else:
            n += 1
            i += 4 + ln
    return n


def run(d, label, body, qfile, probe):
    port = free_port()
    cf = os.path.join(d, f"Corefile.{label}")
    open(cf, "w").write(f".:{port} {{\n{body}\n}}\n")
    log = open(os.path.join(d, f"log.{label}"), "w")
    srv = subprocess.Popen(["taskset", "-c", "0", BIN, "-conf", cf], stdout=log, stderr=log,
                           cwd=d)
    try:
        wait_dns(port, probe)
        c0 = cpu(srv.pid)
        argv = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile,
                "-T", "1", "-c", "4", "-q", "200", "-t", "2", "-l", str(DURATION)]
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        c1 = cpu(srv.pid)
    finally:
        srv.terminate()
        srv.wait()
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    done = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    dropped = sum(int(m) for m in re.findall(r"Dropped dnstap messages: (\d+)",
                                             open(os.path.join(d, f"log.{label}")).read()))
    return qps, (c1 - c0) / max(done, 1) * 1e6, done, lost, dropped


def main():
    d = tempfile.mkdtemp(prefix="dnstap-bench-")
    qfile = os.path.join(d, "queries")
    sock = os.path.join(d, "tap.sock")
    if BASE == "kubeadm":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import argparse
        import bench
        import cg_corefile
        import gen
        env = bench.Env(argparse.Namespace(bin=os.path.abspath(BIN)), d)
        cl = gen.Cluster(2000, 3, 10**9, 1)
        cl.write_manifests(env.path("cluster.json"))
        gen.write_queries(qfile, cl.cluster_queries(20000, 21))
        up = free_port()  # nothing listens there: no query of the mix is forwarded
        variants = [(k, cg_corefile.body(k, env, up)) for k in ("kubeadm", "dnstap", "dnstap-full")]
        probe = "kubernetes.default.svc.cluster.local"
        what = "the kubeadm Corefile of bench/cg_corefile.py answering 20,000 cluster names"
    elif BASE == "whoami":
        open(qfile, "w").write("".join(f"q{i}.example.org A\n" for i in range(1000)))
        variants = [("base", "    whoami"), ("dnstap", f"    dnstap {sock}\n    whoami"),
                    ("dnstap-full", f"    dnstap {sock} full\n    whoami")]
        probe = "example.org"
        what = "1000 distinct names, `whoami` answering"
    else:
        raise SystemExit(f"unknown base {BASE}")
    out = os.path.join(d, "tap.fstrm")
    cap = subprocess.Popen(["taskset", "-c", "1", "fstrm_capture", "-t", "protobuf:dnstap.Dnstap",
                            "-u", sock, "-w", out], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    while not os.path.exists(sock):
        time.sleep(0.05)
    res = {v: [] for v, _ in variants}
    try:
        for r in range(ROUNDS):
            for label, body in variants:
                res[label].append(run(d, label, body, qfile, probe))
                print(label, r, res[label][-1], flush=True)
    finally:
        cap.terminate()
        cap.wait()
    first = variants[0][0]
    base = statistics.median(x[0] for x in res[first])
    base_cpu = statistics.median(x[1] for x in res[first])
    print(f"\n`SEXTANT_BIN={BIN} python3 bench/dnstap.py {DURATION} {ROUNDS} {BASE}`; dnsperf: "
          f"`taskset -c 1 dnsperf -s 127.0.0.1 -p PORT -d QUERYFILE -T 1 -c 4 -q 200 -t 2 -l "
          f"{DURATION}`, {what}, median of {ROUNDS}.\n")
    print("| Corefile | q/s (median) | vs no dnstap | server CPU µs/query (median) | vs no dnstap "
          "| per round | lost | dnstap drops |")
    print("|---|---|---|---|---|---|---|---|")
    for label, _ in variants:
        rs = res[label]
        q = statistics.median(x[0] for x in rs)
        c = statistics.median(x[1] for x in rs)
        rounds = " ".join(f"{x[1]:.2f}" for x in rs)
        print(f"| {label} | {q:,.0f} | {100 * (q / base - 1):+.1f}% | {c:.2f} | "
              f"{100 * (c / base_cpu - 1):+.1f}% | {rounds} | {sum(x[3] for x in rs)} | "
              f"{sum(x[4] for x in rs)} |")
    want = sum(2 * x[2] for label in ("dnstap", "dnstap-full") for x in res[label])
    print(f"\nframes collected by fstrm_capture: {frames(out):,} of {want:,} "
          f"(two per completed query of the dnstap runs, plus start-up probes)")


if __name__ == "__main__":
    main()
