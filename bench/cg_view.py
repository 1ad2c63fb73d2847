"""Instructions per query that `view` adds, with callgrind (issue 19: under 300 with 2 blocks).
The same cluster queries (kubernetes plugin on a generated cluster, kubeadm options) are
answered by three Corefiles:
  base     one `.` block, no view (the kubeadm shape);
  miss     a `.` block whose view does not match the client (incidr on 10.0.0.0/8), then the
           same block without a view: every query evaluates one view and falls through;
  hit      a `.` block whose view matches (incidr on 127.0.0.0/8), then a catch-all: every query
           evaluates one view and runs the view's (pass-through) handler.
Cost = (Ir(start + N queries) - Ir(start)) / N for each, printed with the differences to base.
Those totals also carry the background work of each process (the second block's own kubernetes
watch, cache and timers) over a run whose length varies under valgrind, so the routing cost is
also printed from the profiles themselves: Site::route inclusive (block choice, views included)
and the view filter inclusive, per query of the first pass.
With --base-bin, base is also measured on that binary (e.g. a build of main) to show that the
no-view path did not change. Talks only to 127.0.0.1. Usage:
  python3 bench/cg_view.py --bin target/release/sextant [--base-bin /tmp/sextant-main] [--queries 20000]"""

import argparse
import os
import re
import subprocess
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import gen  # noqa: E402


def inclusive(path, pattern):
    """Sum of the inclusive Ir of the functions whose name matches `pattern` in a callgrind
    profile: callgrind lists a function once per source file its inlined code comes from, so
    every file's entry is added."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    total = 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S+?):(.*?)( \[[^\]]*\])?$", line)
        if m and re.search(pattern, m.group(3)) and "=>" not in line:
            total += int(m.group(1).replace(",", ""))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--base-bin", help="another build to measure the no-view Corefile on")
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="sextant-cgview-")
    env = bench.Env(args, work)
    cl = gen.Cluster(args.services, 3, 10**9, 1)
    manifests = env.path("cluster.json")
    cl.write_manifests(manifests)
    qf = env.path("queries.txt")
    gen.write_queries(qf, cl.cluster_queries(args.queries, 21))
    block = bench.k8s_block(env, manifests) + "    cache 30\n    loadbalance\n"

    def view(net):
        return f"    view v {{\n        expr incidr(client_ip(), '{net}')\n    }}\n"

    corefiles = {
        "base": lambda p: f".:{p} {{\n    errors\n{block}}}\n",
        "miss": lambda p: (f".:{p} {{\n    errors\n{view('10.0.0.0/8')}{block}}}\n"
                           f".:{p} {{\n    errors\n{block}}}\n"),
        "hit": lambda p: (f".:{p} {{\n    errors\n{view('127.0.0.0/8')}{block}}}\n"
                          f".:{p} {{\n    errors\n{block}}}\n"),
    }
    res = {}
    runs = [(name, args.bin, cf) for name, cf in corefiles.items()]
    if args.base_bin:
        runs.insert(0, ("base@base-bin", os.path.abspath(args.base_bin), corefiles["base"]))
    for name, binary, cf in runs:
        env.bin = binary

        def make(p, wrap, cf=cf, name=name):
            return bench.sextant(env, f"cg {name}", cf(p), p, probe_name="cluster.local.",
                                 timeout=300, wrap=wrap)

        r = bench.callgrind_ir(make, qf, name.replace("@", "-"), env)
        if not r:
            sys.exit(f"{name}: callgrind run failed (see {work})")
        res[name] = r
        print(f"{name:14} {r['per_query']:8.0f} Ir/query (first pass), "
              f"{r['warm_per_query'] or 0:8.0f} Ir/query (second pass), answered {r['answered']}",
              flush=True)
    base = res["base"]
    route, filt = {}, {}
    for name in ("base", "miss", "hit"):
        prof = env.path(f"callgrind.{name}.run.out")
        n = res[name]["answered"]
        route[name] = inclusive(prof, r"^sextant::server::site::Site::route$") / n
        filt[name] = inclusive(prof, r"as sextant::plugin::ViewFilter>::matches$") / n
    print(f"routing (Site::route inclusive), Ir/query: base {route['base']:.0f}, "
          f"miss {route['miss']:.0f} ({route['miss'] - route['base']:+.0f}), "
          f"hit {route['hit']:.0f} ({route['hit'] - route['base']:+.0f}); "
          f"view filter alone: miss {filt['miss']:.0f}, hit {filt['hit']:.0f}", flush=True)
    for name in ("miss", "hit"):
        d1 = res[name]["per_query"] - base["per_query"]
        d2 = (res[name]["warm_per_query"] or 0) - (base["warm_per_query"] or 0)
        print(f"view cost ({name}): {d1:+.0f} Ir/query first pass, {d2:+.0f} second pass")
    if args.base_bin:
        b = res["base@base-bin"]
        for key in ("per_query", "warm_per_query"):
            if b[key] and base[key]:
                print(f"no-view Corefile, this build vs base-bin ({key}): "
                      f"{(base[key] - b[key]) / b[key] * 100:+.2f}%")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
