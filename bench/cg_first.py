"""First answers with every name new (issue 17): instructions per query under callgrind for
N distinct A questions (services, headless services, endpoint names) of a generated cluster, each
asked once, then the same N again (warm repeats), Sextant (the kubernetes plugin, the bench's
callgrind body) beside Knot serving the same cluster as zone files. Cost = (Ir(start + queries) -
Ir(start)) / answered, as bench.py's callgrind scenario. The profiles are copied to
/tmp/cg_first.{sextant,knot}.{idle,run,run2}.out (bench/cg_diff.py, callgrind_annotate).
Only talks to 127.0.0.1. Usage:
  python3 bench/cg_first.py --bin target/release/sextant [--queries 20000] [--no-knot]"""

import argparse
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import gen  # noqa: E402


def distinct_a_names(cl, n, seed):
    """n distinct A questions among the names Knot's zone holds for the cluster."""
    names = []
    for s in cl.services:
        if s["kind"] == "ExternalName" or s["name"] == "kube-dns":
            continue
        base = f"{s['name']}.{s['ns']}.svc.{gen.ZONE}."
        names.append(base)
        for ip, host, _ in s["eps"]:
            names.append(f"{host or gen.dashed(ip)}.{base}")
    if len(names) < n:
        raise SystemExit(f"the cluster has {len(names)} A names, fewer than {n}: raise --services")
    rnd = random.Random(seed)
    return [(x, "A") for x in rnd.sample(names, n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--services", type=int, default=8000)
    ap.add_argument("--no-knot", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="sextant-cgfirst-")
    env = bench.Env(args, work)
    cl = gen.Cluster(args.services, 3, 10**9, 1)
    cl.write_manifests(env.path("cluster.json"))
    os.makedirs(env.path("zones"), exist_ok=True)
    zones = cl.write_zones(env.path("zones"))
    qf = env.path("queries.txt")
    gen.write_queries(qf, distinct_a_names(cl, args.queries, 7))
    body = bench.k8s_block(env, env.path("cluster.json"))
    out = {}
    try:
        out["sextant"] = bench.callgrind_ir(
            lambda p, wrap: bench.sextant(env, "cgfirst", f".:{p} {{\n    errors\n{body}}}\n", p,
                                          probe_name="cluster.local.", timeout=300, wrap=wrap),
            qf, "sextant", env)
        if not args.no_knot:
            def mk_knot(p, wrap):
                k = bench.knot(env, "cgfirst-knot", zones, env.path("zones"), p)
                k.argv = wrap + k.argv
                return k
            out["knot"] = bench.callgrind_ir(mk_knot, qf, "knot", env)
        for label in out:
            for mode in ("idle", "run", "run2"):
                src = env.path(f"callgrind.{label}.{mode}.out.1")
                if os.path.exists(src):
                    shutil.copy(src, f"/tmp/cg_first.{label}.{mode}.out")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for label, r in out.items():
        if not r:
            print(f"{label}: no figure")
            continue
        print(f"{label}: answered {r['answered']}, every name new {r['per_query']:.0f} Ir/query, "
              f"repeats {r['warm_per_query']:.0f} Ir/query")
    if out.get("knot") and out.get("sextant"):
        s, k = out["sextant"], out["knot"]
        print(f"ratio to Knot: new {s['per_query'] / k['per_query']:.2f}x, "
              f"repeats {s['warm_per_query'] / k['warm_per_query']:.2f}x")


if __name__ == "__main__":
    main()
