"""Instructions per forwarded query (cache miss) for `cache 30` + `forward` (issue 6), with
callgrind. Every query is a distinct name under the upstream's wildcard (`*.example.com`), so each
one misses the cache, is forwarded to Knot on loopback (not under valgrind) and is then stored.
Ir(start + warm-up + N misses) - Ir(start + warm-up), divided by N. Only talks to 127.0.0.1. Usage:
  python3 bench/cg_miss.py --bin target/release/sextant [--misses 20000] [--keep] [--no-cache]
With --unbound, the same measurement for Unbound (one thread, forwarding to the same upstream)."""

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
    ap.add_argument("--misses", type=int, default=20000)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-cache", action="store_true", help="Sextant without the cache plugin")
    ap.add_argument("--unbound", action="store_true", help="measure Unbound instead of Sextant")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="sextant-cgmiss-")
    env = bench.Env(args, work)
    zdir = env.path("zones")
    os.makedirs(zdir)
    gen.external_zone(zdir, 10)
    # Warm-up: distinct names too, so the warm-up already went through every code path once.
    warm = env.path("warm.txt")
    gen.write_queries(warm, [(f"warm-{i}.{gen.EXT_ZONE}.", "A") for i in range(2000)])
    miss = env.path("miss.txt")
    gen.write_queries(miss, [(f"miss-{i}.{gen.EXT_ZONE}.", "A") for i in range(args.misses)])
    up_port = bench.free_port()
    up = bench.knot(env, "upstream", [gen.EXT_ZONE, gen.HOST_SEARCH], zdir, up_port, core=bench.CLIENT_CORE)
    up.start()
    try:
        cache = "" if args.no_cache else "    cache 30\n"
        body = f"    errors\n{cache}    forward . 127.0.0.1:{up_port}\n"
        ir_warm, ir_run, answered = cgkit.warm_vs_run(env, args, up_port, warm, miss, "miss", body)
    finally:
        up.stop()
    per = (ir_run - ir_warm) / answered
    print(f"Ir warm-up only {ir_warm:,}; warm-up + misses {ir_run:,}; misses {answered:,}")
    print(f"instructions per forwarded query: {per:,.0f}")
    print("profiles: /tmp/cg_miss.warm.out /tmp/cg_miss.miss.out")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
