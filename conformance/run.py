#!/usr/bin/env python3
"""Protocol conformance matrix: the EDNS compliance checks DNS Flag Day used (ISC genreport's
EDNS group, restated in faults.md §3.2) plus the RFC 1035/9619/6891/7766 checks of §3.3 that
apply to a server without DNSSEC or cookies. Runs every check against Knot DNS (the reference,
started here on a loopback port with a small `cluster.local` zone) and against Sextant in the
same run (Sextant serving a small cluster with the `kubernetes` plugin from manifests, in the
same zone), prints both side by side, and exits 1 when Sextant shows a deviation that is not in
ACCEPTED (each with its reason).

    python3 conformance/run.py --sextant target/debug/sextant [--knotd /usr/sbin/knotd]

Needs dnspython (`pip install dnspython` or Debian `python3-dnspython`) and Debian `knot`.
Traffic goes to 127.0.0.1 only.
"""
import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

try:
    import dns.edns
    import dns.flags
    import dns.message
    import dns.opcode
    import dns.query
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype
except ImportError:  # pragma: no cover
    sys.exit("conformance: dnspython is missing (pip install dnspython / apt-get install python3-dnspython)")

ZONE = "cluster.local."
ZONE_TEXT = """$TTL 30
@ 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30
@ 30 IN NS ns.dns
ns.dns 30 IN A 10.96.0.10
kubernetes.default.svc 5 IN A 10.96.0.1
"""
TIMEOUT = 2.0

# Sextant deviations that are known and accepted, with the reason. Key: (check, tag).
# Empty since the Sextant side serves cluster.local with the kubernetes plugin (SOA at the apex,
# NODATA with SOA for other types), like Knot does from its zone file.
ACCEPTED = {}

# The small cluster Sextant serves (`kubernetes` with `manifests`): the same names as Knot's zone.
CLUSTER_YAML = """apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {clusterIP: 10.96.0.10, ports: [{name: dns, port: 53, protocol: UDP}]}
"""


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_answer(port, proc, what):
    q = dns.message.make_query(ZONE, "SOA")
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"conformance: {what} exited with {proc.returncode}")
        try:
            dns.query.udp(q, "127.0.0.1", port=port, timeout=0.2)
            return
        except Exception:
            time.sleep(0.05)
    sys.exit(f"conformance: {what} did not answer on port {port}")


def start_knot(knotd, tmp):
    port = free_port()
    d = os.path.join(tmp, "knot")
    os.makedirs(os.path.join(d, "db"))
    with open(os.path.join(d, "zone.db"), "w") as f:
        f.write(f"$ORIGIN {ZONE}\n{ZONE_TEXT}")
    with open(os.path.join(d, "knot.conf"), "w") as f:
        f.write(
            f"server:\n    listen: 127.0.0.1@{port}\n    rundir: \"{d}\"\n"
            f"    pidfile: \"{d}/knot.pid\"\n    udp-workers: 1\n    tcp-workers: 1\n"
            f"    background-workers: 1\n"
            f"database:\n    storage: \"{d}/db\"\n"
            f"control:\n    listen: \"{d}/knot.sock\"\n"
            f"log:\n  - target: stderr\n    any: warning\n"
            f"zone:\n  - domain: \"{ZONE}\"\n    storage: \"{d}\"\n    file: \"zone.db\"\n"
        )
    log = open(os.path.join(d, "knot.log"), "w")
    p = subprocess.Popen([knotd, "-c", os.path.join(d, "knot.conf")], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, cwd=d)
    wait_answer(port, p, "knotd")
    return p, port


def start_sextant(binary, tmp):
    port = free_port()
    d = os.path.join(tmp, "sextant")
    os.makedirs(d)
    corefile = os.path.join(d, "Corefile")
    with open(corefile, "w") as f:
        f.write(f"{ZONE}:{port} {{\n    kubernetes {ZONE} {{\n        manifests cluster.yaml\n"
                f"        ttl 30\n    }}\n}}\n")
    with open(os.path.join(d, "cluster.yaml"), "w") as f:
        f.write(CLUSTER_YAML)
    log = open(os.path.join(d, "sextant.log"), "w")
    p = subprocess.Popen([binary, "-conf", corefile], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, cwd=d)
    wait_answer(port, p, "sextant")
    return p, port


# ------------------------------------------------------------------------------------------
# Sending


def send(port, wire, tcp=False):
    """Raw exchange; returns reply bytes, or None on silence/close."""
    if tcp:
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        try:
            s.sendall(struct.pack(">H", len(wire)) + wire)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                chunk = s.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            return buf[2:2 + struct.unpack(">H", buf[:2])[0]]
        except (socket.timeout, ConnectionError):
            return None
        finally:
            s.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        s.sendto(wire, ("127.0.0.1", port))
        return s.recv(65536)
    except socket.timeout:
        return None
    finally:
        s.close()


def query(name, rdtype, *, edns=-1, payload=1232, do=False, rd=False, aa=False, ad=False,
          cd=False, z=False, ednsflags=0, options=(), opcode=0):
    q = dns.message.make_query(name, rdtype, use_edns=edns if edns >= 0 else False,
                               payload=payload, want_dnssec=do, options=list(options))
    q.flags = 0
    for on, bit in ((rd, dns.flags.RD), (aa, dns.flags.AA), (ad, dns.flags.AD),
                    (cd, dns.flags.CD)):
        if on:
            q.flags |= bit
    if edns >= 0 and ednsflags:
        q.ednsflags |= ednsflags
    wire = bytearray(q.to_wire())
    if z:
        wire[3] |= 0x40
    if opcode:
        wire[2] = (wire[2] & 0x87) | (opcode << 3)
    return bytes(wire)


def header_only(opcode):
    return struct.pack(">HHHHHH", 0x1234, opcode << 11, 0, 0, 0, 0)


# ------------------------------------------------------------------------------------------
# Checks: each returns a list of tags ("ok" when empty)


def generic(q, r, tags, *, expect_opt):
    """genreport's checks applied to every reply."""
    if r[:2] != q[:2]:
        tags.append("id")
    if not r[2] & 0x80:
        tags.append("noqr")
    if (r[2] >> 3) & 0xF != (q[2] >> 3) & 0xF:
        tags.append("opcode")
    if r[3] & 0x40:
        tags.append("z")
    if not q[3] & 0x20 and r[3] & 0x20:
        # AD only if AD or DO was in the query; DO is checked by the caller.
        pass
    try:
        m = dns.message.from_wire(r, ignore_trailing=False)
    except Exception as e:  # noqa: BLE001
        tags.append("malformed")
        return None
    if expect_opt and m.edns < 0:
        tags.append("noopt")
    if not expect_opt and m.edns >= 0:
        tags.append("opt")
    if m.edns >= 0:
        if m.edns != 0:
            tags.append("version")
        if m.ednsflags & 0x7FFF:
            tags.append("mbz")
        if any(o.otype == 100 for o in m.options):
            tags.append("echo")
    if q[3] & 0x01 == 0 and m.flags & dns.flags.RD and not (q[2] & 0x01):
        tags.append("rd")
    if q[2] & 0x01 and not m.flags & dns.flags.RD:
        tags.append("nord")
    return m


def has_soa(m):
    return any(rr.rdtype == dns.rdatatype.SOA for rr in m.answer)


def check_soa(port, wire, *, tcp=False, expect_opt=False, do=False):
    r = send(port, wire, tcp)
    tags = []
    if r is None:
        return ["timeout"]
    m = generic(wire, r, tags, expect_opt=expect_opt)
    if m is None:
        return tags
    if m.rcode() != dns.rcode.NOERROR:
        tags.append(dns.rcode.to_text(m.rcode()).lower())
    if not has_soa(m):
        tags.append("nosoa")
    if not m.flags & dns.flags.AA:
        tags.append("noaa")
    if m.flags & dns.flags.AD and not (wire[3] & 0x20 or do):
        tags.append("ad")
    if m.flags & dns.flags.TC and tcp:
        tags.append("tc")
    if do and m.edns >= 0 and not m.ednsflags & dns.flags.DO:
        tags.append("nodo")
    return tags


def check_badvers(port, wire):
    r = send(port, wire)
    if r is None:
        return ["timeout"]
    tags = []
    m = generic(wire, r, tags, expect_opt=True)
    if m is None:
        return tags
    if m.rcode() != dns.rcode.BADVERS:
        tags.append("nobadvers:" + dns.rcode.to_text(m.rcode()).lower())
    if has_soa(m):
        tags.append("soa")
    return tags


def check_rcode(port, wire, rcode, *, tcp=False):
    r = send(port, wire, tcp)
    if r is None:
        return ["timeout"]
    tags = []
    got = r[3] & 0x0F
    if got != rcode:
        tags.append("rcode:" + dns.rcode.to_text(got).lower())
    if not r[2] & 0x80:
        tags.append("noqr")
    return tags


def run_checks(port):
    soa = lambda **kw: query(ZONE, "SOA", **kw)  # noqa: E731
    out = {}
    out["dns"] = check_soa(port, soa())
    out["aa"] = check_soa(port, soa(aa=True))
    out["ad"] = check_soa(port, soa(ad=True))
    out["cd"] = check_soa(port, soa(cd=True))
    out["rd"] = check_soa(port, soa(rd=True))
    out["zflag"] = check_soa(port, soa(z=True))
    # opcode: NOTIMP, opcode echoed, no AA/RA/RD/AD/CD.
    w = header_only(15)
    r = send(port, w)
    if r is None:
        out["opcode"] = ["timeout"]
    else:
        t = []
        if r[3] & 0x0F != 4:
            t.append("rcode:" + dns.rcode.to_text(r[3] & 0x0F).lower())
        if (r[2] >> 3) & 0xF != 15:
            t.append("opcode")
        if r[2] & 0x05 or r[3] & 0xB0:
            t.append("flags")
        out["opcode"] = t
    # type666: NOERROR, nothing in the answer section.
    w = query(ZONE, 666)
    r = send(port, w)
    if r is None:
        out["type666"] = ["timeout"]
    else:
        t = []
        m = generic(w, r, t, expect_opt=False)
        if m is not None:
            if m.rcode() != dns.rcode.NOERROR:
                t.append(dns.rcode.to_text(m.rcode()).lower())
            if m.answer:
                t.append("answer")
            if not any(rr.rdtype == dns.rdatatype.SOA for rr in m.authority):
                t.append("nosoa")
        out["type666"] = t
    out["tcp"] = check_soa(port, soa(), tcp=True)
    out["edns"] = check_soa(port, soa(edns=0), expect_opt=True)
    out["edns1"] = check_badvers(port, soa(edns=1))
    # edns@512: reply must fit 512 bytes (TC allowed).
    w = query(ZONE, "DNSKEY", edns=0, do=True, payload=512)
    r = send(port, w)
    out["edns@512"] = ["timeout"] if r is None else (["toobig"] if len(r) > 512 else [])
    out["ednsopt"] = check_soa(port, soa(edns=0, options=[dns.edns.GenericOption(100, b"")]),
                               expect_opt=True)
    out["edns1opt"] = check_badvers(port, soa(edns=1, options=[dns.edns.GenericOption(100, b"")]))
    out["do"] = check_soa(port, soa(edns=0, do=True), expect_opt=True, do=True)
    out["ednsflags"] = check_soa(port, soa(edns=0, ednsflags=0x0080), expect_opt=True)
    optlist = [
        dns.edns.GenericOption(3, b""),  # NSID
        dns.edns.ECSOption("192.0.2.0", 24),
        dns.edns.GenericOption(9, b""),  # EXPIRE
        dns.edns.GenericOption(10, b"\x01\x02\x03\x04\x05\x06\x07\x08"),  # client COOKIE
    ]
    out["optlist"] = check_soa(port, soa(edns=0, options=optlist), expect_opt=True)
    # ednstcp: complete DNSKEY answer over TCP, no TC.
    w = query(ZONE, "DNSKEY", edns=0, do=True, payload=512)
    r = send(port, w, tcp=True)
    if r is None:
        out["ednstcp"] = ["timeout"]
    else:
        t = []
        m = generic(w, r, t, expect_opt=True)
        if m is not None:
            if m.rcode() != dns.rcode.NOERROR:
                t.append(dns.rcode.to_text(m.rcode()).lower())
            if m.flags & dns.flags.TC:
                t.append("tc")
        out["ednstcp"] = t
    # --- RFC checklist (§3.3) ---
    out["qdcount0"] = check_rcode(port, struct.pack(">HHHHHH", 7, 0, 0, 0, 0, 0), 1)
    two = bytearray(query(ZONE, "SOA"))
    two[5] = 2
    two += bytes(query("x." + ZONE, "A")[12:])
    out["qdcount2"] = check_rcode(port, bytes(two), 1)
    twoopt = bytearray(query(ZONE, "SOA", edns=0))
    twoopt[11] = 2
    twoopt += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    out["two-opt"] = check_rcode(port, bytes(twoopt), 1)
    loop = struct.pack(">HHHHHH", 8, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    out["ptr-loop"] = check_rcode(port, loop, 1)
    qr = bytearray(query(ZONE, "SOA"))
    qr[2] |= 0x80
    out["qr-drop"] = [] if send(port, bytes(qr)) is None else ["answered"]
    # Case preserved in the question, matched case-insensitively.
    w = query("CLUSTER.Local.", "SOA")
    t = check_soa(port, w)
    r = send(port, w)
    if r is not None and dns.message.from_wire(r).question[0].name.to_text() != "CLUSTER.Local.":
        t.append("case")
    out["case"] = t
    # Payload below 512 is treated as 512: still an answer.
    out["edns@100"] = check_soa(port, soa(edns=0, payload=100), expect_opt=True)
    # RFC 7766: 100 sequential and 50 pipelined queries on one connection.
    out["tcp-reuse"] = tcp_many(port, 100, pipelined=False)
    out["tcp-pipeline"] = tcp_many(port, 50, pipelined=True)
    return out


def tcp_many(port, n, pipelined):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    got = 0
    try:
        def one_reply(buf):
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                c = s.recv(65536)
                if not c:
                    raise ConnectionError("closed")
                buf += c
            ln = struct.unpack(">H", buf[:2])[0]
            return buf[2 + ln:]

        buf = b""
        qs = [query(ZONE, "SOA") for _ in range(n)]
        if pipelined:
            s.sendall(b"".join(struct.pack(">H", len(q)) + q for q in qs))
            for _ in range(n):
                buf = one_reply(buf)
                got += 1
        else:
            for q in qs:
                s.sendall(struct.pack(">H", len(q)) + q)
                buf = one_reply(buf)
                got += 1
    except (socket.timeout, ConnectionError):
        pass
    finally:
        s.close()
    return [] if got == n else [f"answered:{got}/{n}"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sextant", required=True)
    ap.add_argument("--knotd", default="/usr/sbin/knotd")
    args = ap.parse_args()
    if not os.path.exists(args.knotd):
        sys.exit(f"conformance: {args.knotd} missing (apt-get install knot)")
    tmp = tempfile.mkdtemp(prefix="conformance-")
    procs = []
    try:
        knot, kport = start_knot(args.knotd, tmp)
        procs.append(knot)
        sext, sport = start_sextant(args.sextant, tmp)
        procs.append(sext)
        k = run_checks(kport)
        s = run_checks(sport)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    fmt = lambda t: "ok" if not t else ",".join(t)  # noqa: E731
    print(f"{'check':<14} {'knot':<22} {'sextant':<22} verdict")
    failures = 0
    for name in k:
        kt, st = k[name], s[name]
        bad = [t for t in st if (name, t) not in ACCEPTED]
        acc = [t for t in st if (name, t) in ACCEPTED]
        verdict = "FAIL" if bad else ("accepted: " + "; ".join(ACCEPTED[(name, t)] for t in acc)
                                      if acc else "ok")
        if bad:
            failures += 1
        print(f"{name:<14} {fmt(kt):<22} {fmt(st):<22} {verdict}")
    print(f"{len(k) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
