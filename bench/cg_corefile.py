"""Instructions per cluster-name query for whole Corefiles (issue 19), with callgrind:
Ir(start + warm-up + N queries) - Ir(start + warm-up), divided by N, like cg_hits.py. The
Corefiles are the kubeadm default and variants of it: `aks` adds the AKS default templates,
`acl10` ten acl policies that do not match the client (every query is checked against all ten),
`view2` two blocks of the kubeadm plugins chosen by `view` (the first view's expression is false
for the client, so every query evaluates both),
`dnstap` / `dnstap-full` add `dnstap unix://SOCK [full]` with Debian's fstrm_capture collecting
(its output discarded; the server's writer task is counted, the dump waits for it to drain);
`metadata` adds `metadata`, `geoip` adds `metadata` and `geoip` with a City database written by
tests/geoip_dbs.py (every query is looked up there), `log` adds `log` (CoreDNS's default format on
standard output, which the bench writes to a file).
The queries are cluster names (bench/gen.py's mix); an upstream is never asked. The `reload`
plugin's periodic check (every 30 s +- 15 s, it re-reads the manifests: ~430 M instructions) lands
in some runs and not others; its inclusive cost is subtracted from both profiles, so the figure is
the queries' alone. Only talks to 127.0.0.1. Usage:
  python3 bench/cg_corefile.py --bin target/release/sextant [--corefile kubeadm|aks|acl10|view2|metadata|geoip|log|dnstap] [--queries 20000]
Throughput instead of instructions (dnsperf, the servers round-robin, `--qps kubeadm,aks`):
  python3 bench/cg_corefile.py --bin target/release/sextant --qps kubeadm,aks [--runs 5 --duration 10]"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import cgkit  # noqa: E402
import gen  # noqa: E402

AKS = """    template ANY ANY internal.cloudapp.net {
        match "^(?:[^.]+\\.){4,}internal\\.cloudapp\\.net\\.$"
        rcode NXDOMAIN
        fallthrough
    }
    template ANY ANY reddog.microsoft.com {
        rcode NXDOMAIN
    }
"""

ACL10 = "    acl {\n" + "".join(
    f"        block type A AAAA SRV net 10.{i}.0.0/16 fd00:{i}::/32\n" for i in range(9)
) + "        drop net 192.0.2.0/24\n    }\n"


def reload_ir(path):
    """Inclusive instructions of the periodic reload checks in a callgrind profile (0 if none)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--show-percs=no", path],
                         capture_output=True, text=True, check=True).stdout
    irs = [int(m.group(1).replace(",", "")) for m in
           re.finditer(r"^\s*([\d,]+)\s+\S*:sextant::cli::reload::\{\{closure\}\}", out, re.M)]
    return max(irs, default=0)


def body(kind, env, up_port):
    hp, rp, mp = bench.free_port(), bench.free_port(), bench.free_port()
    b = ("    errors\n"
         f"    health 127.0.0.1:{hp} {{\n        lameduck 5s\n    }}\n"
         f"    ready 127.0.0.1:{rp}\n"
         + bench.k8s_block(env, env.path("cluster.json"), "        fallthrough in-addr.arpa ip6.arpa\n")
         + f"    prometheus 127.0.0.1:{mp}\n"
         f"    forward . 127.0.0.1:{up_port} {{\n        max_concurrent 1000\n    }}\n"
         "    cache 30 {\n        disable success cluster.local\n        disable denial cluster.local\n    }\n"
         "    loop\n    reload\n    loadbalance\n")
    if kind == "aks":
        b += AKS
    elif kind == "acl10":
        b += ACL10
    elif kind == "view2":
        # Two blocks for the same zone chosen by view: the first's expression is false for the
        # benchmark's client (127.0.0.1), the second's true; both hold the kubeadm plugins.
        b = ("    view other {\n        expr incidr(client_ip(), '10.0.0.0/8')\n    }\n" + b
             + "}\n.:@PORT@ {\n    view local {\n        expr incidr(client_ip(), '127.0.0.0/8')\n    }\n"
             + body("kubeadm", env, up_port))
    elif kind == "metadata":
        b += "    metadata\n"
    elif kind == "geoip":
        # A City database from tests/geoip_dbs.py (mmdb-writer); queries come from 127.0.0.1,
        # which it places in "Exampleshire".
        dbdir = env.path("geoip")
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                     "tests", "geoip_dbs.py"), dbdir], check=True)
        b += f"    metadata\n    geoip {os.path.join(dbdir, 'city.mmdb')}\n"
    elif kind == "log":
        # CoreDNS's default query log on standard output (the Proc's file, as a container
        # runtime reads the pipe).
        b += "    log\n"
    elif kind in ("dnstap", "dnstap-full"):
        b += f"    dnstap unix://{env.path('tap.sock')}{' full' if kind == 'dnstap-full' else ''}\n"
    elif kind != "kubeadm":
        raise SystemExit(f"unknown corefile {kind}")
    return b


def collector(env):
    """fstrm_capture on the dnstap socket, writing to /dev/null."""
    return subprocess.Popen(["fstrm_capture", "-t", "protobuf:dnstap.Dnstap", "-u", env.path("tap.sock"),
                             "-w", "/dev/null"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--corefile", default="kubeadm")
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--qps", default=None, help="comma-separated Corefiles to compare with dnsperf")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    args.unbound = False
    work = tempfile.mkdtemp(prefix="sextant-cgcorefile-")
    env = bench.Env(args, work)
    cl = gen.Cluster(args.services, 3, 10**9, 1)
    cl.write_manifests(env.path("cluster.json"))
    warm = env.path("warm.txt")
    gen.write_queries(warm, cl.cluster_queries(2000, 5))
    qf = env.path("queries.txt")
    gen.write_queries(qf, cl.cluster_queries(args.queries, 21))
    up_port = bench.closed_port() if hasattr(bench, "closed_port") else bench.free_port()
    kinds = args.qps.split(",") if args.qps else [args.corefile]
    cap = collector(env) if any(k.startswith("dnstap") for k in kinds) else None
    try:
        if args.qps:
            kinds = args.qps.split(",")
            servers = []
            for k in kinds:
                p = bench.free_port()
                text = f".:{p} {{\n{body(k, env, up_port)}}}\n".replace("@PORT@", str(p))
                servers.append(bench.sextant(env, f"sextant {k}", text, p,
                                             probe_name="cluster.local."))
            for s in servers:
                s.start()
            qps = {k: [] for k in kinds}
            for s in servers:  # warm-up
                bench.dnsperf(s.port, qf, runs=1)
            for rep in range(args.runs):
                for k, s in zip(kinds, servers):
                    r = bench.dnsperf(s.port, qf, duration=args.duration)
                    qps[k].append(r["qps"])
                    print(f"run {rep} {k}: {r['qps']:.0f} q/s ({r['rcodes']})", flush=True)
            for s in servers:
                s.stop()
            base = bench.median(qps[kinds[0]])
            for k in kinds:
                m = bench.median(qps[k])
                print(f"{k}: median {m:.0f} q/s over {args.runs} runs of {args.duration} s; ratio to {kinds[0]} {m / base:.3f}")
        else:
            ir_warm, ir_run, answered = cgkit.warm_vs_run(env, args, up_port, warm, qf, args.corefile,
                                                          body(args.corefile, env, up_port),
                                                          settle=2 if cap else 0)
            rl_warm = reload_ir(f"/tmp/cg_{args.corefile}.warm.out")
            rl_run = reload_ir(f"/tmp/cg_{args.corefile}.{args.corefile}.out")
            per = ((ir_run - rl_run) - (ir_warm - rl_warm)) / answered
            print(f"Ir warm-up only {ir_warm:,} (reload checks {rl_warm:,}); warm-up + queries {ir_run:,}"
                  f" (reload checks {rl_run:,}); queries {answered:,}")
            print(f"instructions per cluster-name query ({args.corefile}): {per:,.0f}")
    finally:
        if cap:
            cap.terminate()
            cap.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
