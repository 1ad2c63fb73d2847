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
import cgkit  # noqa: E402
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
    try:
        body = f"    errors\n    cache 30\n    forward . 127.0.0.1:{up_port}\n"
        ir_warm, ir_run, answered = cgkit.warm_vs_run(env, args, up_port, warm, hits, "hits", body)
    finally:
        up.stop()
    per = (ir_run - ir_warm) / answered
    print(f"Ir warm-up only {ir_warm:,}; warm-up + hits {ir_run:,}; hits {answered:,}")
    print(f"instructions per cache hit: {per:,.0f}")
    print("profiles: /tmp/cg_hits.warm.out /tmp/cg_hits.hits.out")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
