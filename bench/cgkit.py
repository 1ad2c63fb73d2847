"""Shared driver of the callgrind scripts (cg_hits.py, cg_miss.py): a server started under
callgrind twice, once answering a warm-up file only and once the warm-up then the measured file;
the difference in instructions, divided by the measured answers, is the cost per query."""

import shutil
import time

import bench


def warm_vs_run(env, args, up_port, warm, measured, label, corefile_body, settle=0, unbound_extra=""):
    """Ir per query of `measured` after `warm`, for Sextant (`corefile_body` inside `.:PORT { }`,
    `@PORT@` in it standing for PORT)
    or, with args.unbound, for Unbound forwarding to `up_port`. Profiles are copied to
    /tmp/cg_<label>.{warm,<label>}.out. `settle` seconds pass before each dump (background work
    triggered by the queries, such as dnstap's writer, gets done). `unbound_extra`: more lines of
    Unbound's `server:` clause. Returns (warm Ir, run Ir, answered)."""
    irs = {}
    for mode in ("warm", label):
        p = bench.free_port()
        outf = env.path(f"callgrind.{mode}.out")
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}"]
        if args.unbound:
            s = bench.unbound(env, f"cg {mode}", p, [(".", up_port, False)], unbound_extra)
            s.argv = wrap + s.argv
            s.ready_timeout = 300
        else:
            # A body may close the block and open more on the same port (`@PORT@`).
            s = bench.sextant(env, f"cg {mode}", f".:{p} {{\n{corefile_body}}}\n".replace("@PORT@", str(p)), p,
                              probe_name="localhost.", timeout=300, wrap=wrap)
        s.start()
        r = bench.dnsperf(p, warm, runs=1, clients=1, outstanding=20)
        print(f"{mode}: warm-up answered {int(r['completed'])} ({r['rcodes']})", flush=True)
        if mode == label:
            r = bench.dnsperf(p, measured, runs=1, clients=1, outstanding=20)
            irs["answered"] = int(r["completed"])
            print(f"{label}: answered {int(r['completed'])} lost {int(r['lost'])} ({r['rcodes']})", flush=True)
        time.sleep(settle)
        # Counted until the last answer (a dump before the stop): freeing what the run cached at
        # exit is not a cost per query.
        irs[mode] = bench.callgrind_dump(s, outf)
        s.stop()
        shutil.copy(outf + ".1", f"/tmp/cg_{label}.{mode}.out")
    return irs["warm"], irs[label], irs["answered"]
