"""Instructions per cache hit for `cache 30` + `forward` (issue 6), with callgrind.
Ir(start + warm-up + N hits) - Ir(start + warm-up), divided by N. Upstream: Knot on loopback
(not under valgrind). Only talks to 127.0.0.1. Usage:
  python3 bench/cg_hits.py --bin target/release/sextant [--hits 20000] [--hosts 200] [--keep]
With --unbound, the same measurement for Unbound (one thread, same upstream) as the reference."""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import gen  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--hits", type=int, default=20000)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--unbound", action="store_true", help="measure Unbound instead of Sextant")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="sextant-cghits-")
    env = bench.Env(args, work)
    zdir = env.path("zones")
    os.makedirs(zdir)
    gen.external_zone(zdir, args.hosts)
    warm = env.path("warm.txt")
    gen.write_queries(warm, [(f"host-{i}.{gen.EXT_ZONE}.", t) for i in range(args.hosts) for t in ("A", "AAAA")])
    hits = env.path("hits.txt")
    gen.write_queries(hits, gen.hit_queries(args.hosts, args.hits, 11))
    up_port = bench.free_port()
    up = bench.knot(env, "upstream", [gen.EXT_ZONE, gen.HOST_SEARCH], zdir, up_port, core=bench.CLIENT_CORE)
    up.start()
    irs = {}
    try:
        for mode in ("warm", "hits"):
            p = bench.free_port()
            outf = env.path(f"callgrind.{mode}.out")
            wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}"]
            if args.unbound:
                s = bench.unbound(env, f"cg {mode}", p, [(".", up_port, False)])
                s.argv = wrap + s.argv
                s.ready_timeout = 300
            else:
                corefile = f".:{p} {{\n    errors\n    cache 30\n    forward . 127.0.0.1:{up_port}\n}}\n"
                s = bench.sextant(env, f"cg {mode}", corefile, p, probe_name="localhost.", timeout=300,
                                  wrap=wrap)
            s.start()
            r = bench.dnsperf(p, warm, runs=1, clients=1, outstanding=20)
            print(f"{mode}: warm-up answered {int(r['completed'])} ({r['rcodes']})", flush=True)
            if mode == "hits":
                r = bench.dnsperf(p, hits, runs=1, clients=1, outstanding=20)
                irs["answered"] = int(r["completed"])
                print(f"hits: answered {int(r['completed'])} lost {int(r['lost'])} ({r['rcodes']})", flush=True)
            s.stop()
            with open(outf) as f:
                for line in f:
                    if line.startswith("summary:") or line.startswith("totals:"):
                        irs[mode] = int(line.split()[1])
            shutil.copy(outf, f"/tmp/cg_hits.{mode}.out")
    finally:
        up.stop()
    per = (irs["hits"] - irs["warm"]) / irs["answered"]
    print(f"Ir warm-up only {irs['warm']:,}; warm-up + hits {irs['hits']:,}; hits {irs['answered']:,}")
    print(f"instructions per cache hit: {per:,.0f}")
    print("profiles: /tmp/cg_hits.warm.out /tmp/cg_hits.hits.out")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
