#!/usr/bin/env python3
"""What `shed` changes under UDP overload: goodput and p99 latency of Sextant with and without
`shed`, at its capacity and at about 2x and 4x that offered load, with dnsperf on loopback.

The server runs on core 0 in a cgroup (v1 `cpu`) limited to QUOTA of a core, so that one dnsperf
on core 1 can offer several times what it answers; both at nice NICE; every run lasts RUN
seconds. p99 is over the answered queries (dnsperf counts a query unanswered after 1 s as lost).

    bench/shed.py [path/to/release/sextant]   # default target/release/sextant
    SHED_FIRST=1 bench/shed.py ...            # measure with shed first (order effects)

Prints one Markdown table row per run and the exact dnsperf commands."""
import os, re, subprocess, sys, tempfile, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/sextant"
RUN = 10              # seconds per dnsperf run
PERIOD, QUOTA = 10000, 2500   # cfs period and quota in microseconds: a quarter of a core
CG = "/sys/fs/cgroup/cpu/sextant-shed-bench"
NICE = -10            # ahead of builds sharing the machine (needs root, as the cgroup does)


def corefile(port, shed):
    return (f".:{port} {{\n    bind 127.0.0.1\n" + ("    shed\n" if shed else "") +
            "    template IN A example {\n        answer \"{{ .Name }} 60 IN A 192.0.2.1\"\n    }\n}\n")


def dnsperf(port, qfile, rate=None, outstanding=500):
    argv = ["nice", "-n", str(NICE), "taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile,
            "-l", str(RUN), "-c", "4", "-q", str(outstanding), "-t", "1"]
    if rate:
        argv += ["-Q", str(rate), "-v"]
    print("    $", " ".join(a if a != qfile else "QUERYFILE" for a in argv), file=sys.stderr)
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    get = lambda pat: float(re.search(pat, out).group(1)) if re.search(pat, out) else 0.0
    lat = sorted(float(l.rsplit(" ", 1)[1]) for l in out.splitlines()
                 if l.startswith("> ") and re.search(r" \d+\.\d+$", l))
    p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan")
    return {"sent": get(r"Queries sent:\s+(\d+)"), "done": get(r"Queries completed:\s+(\d+)"),
            "qps": get(r"Queries per second:\s+([\d.]+)"), "p99": p99}


def main():
    d = tempfile.mkdtemp()
    qf = os.path.join(d, "q.txt")
    with open(qf, "w") as f:
        f.writelines(f"n{i}.example. A\n" for i in range(1000))
    os.makedirs(CG, exist_ok=True)
    open(f"{CG}/cpu.cfs_period_us", "w").write(str(PERIOD))
    open(f"{CG}/cpu.cfs_quota_us", "w").write(str(QUOTA))
    rows = []
    try:
        order = ((False, 5391), (True, 5392))
        if os.environ.get("SHED_FIRST"):
            order = order[::-1]
        for shed, port in order:
            cf = os.path.join(d, f"Corefile{port}")
            open(cf, "w").write(corefile(port, shed))
            p = subprocess.Popen(["nice", "-n", str(NICE), "taskset", "-c", "0", BIN, "-conf", cf],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            open(f"{CG}/cgroup.procs", "w").write(str(p.pid))
            time.sleep(1.5)
            name = "shed" if shed else "no shed"
            cap = dnsperf(port, qf)
            rows.append((name, "capacity (closed loop, 4x500 outstanding)", cap))
            for k in (2, 4):
                rate = int(cap["qps"] * k)
                r = dnsperf(port, qf, rate=rate, outstanding=rate * 2)
                rows.append((name, f"offered {k}x capacity ({rate} q/s)", r))
            p.terminate()
            p.wait()
    finally:
        os.rmdir(CG) if os.path.isdir(CG) and not open(f"{CG}/cgroup.procs").read().strip() else None
    print("| server | load | sent | answered | goodput q/s | answered % | p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, load, r in rows:
        pct = 100 * r["done"] / r["sent"] if r["sent"] else 0
        p99 = "-" if r["p99"] != r["p99"] else f"{r['p99']:.2f}"
        print(f"| {name} | {load} | {r['sent']:.0f} | {r['done']:.0f} | {r['qps']:.0f} | {pct:.1f} | {p99} |")


main()
