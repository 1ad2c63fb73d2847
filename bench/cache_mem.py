#!/usr/bin/env python3
"""Bytes per cache entry (issue 17): resident memory of a forwarding cache before and after it
is filled with N distinct names, for Sextant (`forward` + `cache 30`, nothing else in the block)
and (`--unbound`) Unbound (forwarding, cache-max-ttl 30), upstream Knot on loopback serving
bench/gen.py's external zones. The names are the forwarded half of the search-path scenario's
lookups: `<tag>-<i>.example.com.` A (a wildcard answer: the success cache) and
`<tag>-<i>.example.com.corp.example.net.` A (NXDOMAIN with the SOA: the denial cache).

Prints, per fill step, VmRSS, the entries the server reports (Sextant: coredns_cache_entries
from /metrics; Unbound: msg.cache.count and rrset.cache.count from `unbound-control
stats_noreset`) and the RSS growth per entry since the idle state (before any query).

    python3 bench/cache_mem.py --bin target/release/sextant [--unbound] [--steps 5000,10000,20000]

Servers on core 0, dnsperf and Knot on core 1, 127.0.0.1 only; bounded (one pass per step)."""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import gen  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--unbound", action="store_true", help="measure Unbound instead of Sextant")
    ap.add_argument("--unbound-extra", default="", help="more `server:` lines for Unbound (cache sizes)")
    ap.add_argument("--corefile-extra", default="", help="more lines for Sextant's block (`cache` options go in --cache)")
    ap.add_argument("--cache", default="cache 30", help="Sextant's cache directive")
    ap.add_argument("--steps", default="5000,10000,20000", help="cumulative lookups (2 names each)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sextant-cachemem-")

    class A:
        pass

    a = A()
    a.bin, a.coredns, a.fakeapi = args.bin, None, None
    env = bench.Env(a, work)
    zdir = env.path("zones")
    os.makedirs(zdir)
    gen.external_zone(zdir, 10)
    up = bench.knot(env, "upstream knot", [gen.EXT_ZONE, gen.HOST_SEARCH], zdir, bench.free_port(),
                    core=bench.CLIENT_CORE)
    procs = [up]
    try:
        up.start()
        p = bench.free_port()
        if args.unbound:
            srv = bench.unbound(env, "unbound", p, [(".", up.port, False)], args.unbound_extra, control=True)
            entries = lambda: bench.unbound_cache_counts(srv)  # noqa: E731
        else:
            mport = bench.free_port()
            cf = (f".:{p} {{\n    forward . 127.0.0.1:{up.port}\n    {args.cache}\n"
                  f"    prometheus 127.0.0.1:{mport}\n{args.corefile_extra}}}\n")
            srv = bench.sextant(env, "sextant", cf, p, probe_name="localhost.")
            entries = lambda: bench.sextant_cache_counts(mport)  # noqa: E731
        procs.append(srv)
        srv.start()
        time.sleep(1)
        idle, _ = srv.mem()
        print(f"idle: RSS {idle} KiB, entries {entries()}", flush=True)
        done = 0
        for step in (int(x) for x in args.steps.split(",")):
            qs = []
            for i in range(done, step):
                name = f"fill-{i}.{gen.EXT_ZONE}"
                qs += [(f"{name}.", "A"), (f"{name}.{gen.HOST_SEARCH}.", "A")]
            qf = env.path(f"q-{step}.txt")
            gen.write_queries(qf, qs)
            r = bench.dnsperf(p, qf, runs=1, clients=1, outstanding=50)
            done = step
            time.sleep(0.5)
            rss, _ = srv.mem()
            e = entries()
            n = sum(e.values()) if not args.unbound else e.get("msg.cache.count", 0)
            per = (rss - idle) * 1024 / n if n else float("nan")
            print(f"{step} lookups ({int(r['completed'])} answered, lost {int(r['lost'])}): RSS {rss} KiB "
                  f"(+{rss - idle}), entries {e}, {per:.0f} B per (message) entry", flush=True)
    finally:
        for x in reversed(procs):
            x.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
