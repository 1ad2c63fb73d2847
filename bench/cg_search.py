"""Instructions per lookup on the ndots:5 search path (issue 17), with callgrind: the search-path
scenario's Corefile (bench.py `search_body`: kubeadm's kubernetes + forward + cache with
cluster.local not cached) and its query mix (gen.search_path_queries: a pod in ns-0 looks up a
new external name, five A queries of which four are NXDOMAIN, three of them from `kubernetes`;
one query with `--autopath`, the server walks the path). Upstream: Knot on loopback (not under
valgrind) serving example.com and the node's search domain.
Ir(start + warm-up + N lookups) - Ir(start + warm-up), divided by N, like cg_miss.py. Only talks
to 127.0.0.1. Usage:
  python3 bench/cg_search.py --bin target/release/sextant [--lookups 4000] [--autopath] [--keep]
With --unbound, the same lookups (five queries each) for Unbound with cluster.local a static local
zone, as in the scenario. Profiles: /tmp/cg_search.{warm,search}.out (cg_diff.py compares two)."""

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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--lookups", type=int, default=4000)
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--autopath", action="store_true", help="Sextant with `autopath` (one query a lookup)")
    ap.add_argument("--unbound", action="store_true", help="measure Unbound instead of Sextant")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="sextant-cgsearch-")
    env = bench.Env(args, work)
    cl = gen.Cluster(args.services, 3, 10**9, 1)
    cl.write_manifests(env.path("cluster.json"))
    zdir = env.path("zones")
    os.makedirs(zdir)
    gen.external_zone(zdir, 10)
    autopath = args.autopath and not args.unbound
    # Warm-up: lookups of other new names, so every code path has run once before the count.
    warm = env.path("warm.txt")
    gen.write_queries(warm, gen.search_path_queries(500, "warm", autopath))
    measured = env.path("search.txt")
    gen.write_queries(measured, gen.search_path_queries(args.lookups, "look", autopath))
    per_lookup = 1 if autopath else 5
    up_port = bench.free_port()
    up = bench.knot(env, "upstream", [gen.EXT_ZONE, gen.HOST_SEARCH], zdir, up_port, core=bench.CLIENT_CORE)
    up.start()
    try:
        body = bench.search_body(env, up_port)
        if autopath:
            body += f"    autopath {bench.search_resolv(env)}\n"
        ir_warm, ir_run, answered = cgkit.warm_vs_run(env, args, up_port, warm, measured, "search", body,
                                                      unbound_extra=bench.search_unbound_extra())
    finally:
        up.stop()
    lookups = answered / per_lookup
    who = "unbound" if args.unbound else ("sextant+autopath" if autopath else "sextant")
    print(f"Ir warm-up only {ir_warm:,}; warm-up + lookups {ir_run:,}; answers {answered:,} ({lookups:,.0f} lookups)")
    print(f"instructions per lookup ({who}): {(ir_run - ir_warm) / lookups:,.0f}"
          f" ({(ir_run - ir_warm) / answered:,.0f} per query)")
    print("profiles: /tmp/cg_search.warm.out /tmp/cg_search.search.out")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
