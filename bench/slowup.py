#!/usr/bin/env python3
"""A deliberately slow upstream for the overload scenario: a UDP DNS server on 127.0.0.1 that
answers every query after a fixed delay (without holding back the others), A with 198.51.100.1,
AAAA with 2001:db8::1 (TTL 3600), any other type NOERROR without answers; a query it cannot
parse is dropped. Prints the port on its first line, then serves until killed or until its
hard time limit (`--max-seconds`) ends.

    bench/slowup.py --delay-ms 250 [--port 0] [--max-seconds 3600]"""
import argparse
import socket
import struct
import sys

A = struct.pack(">HHIH", 1, 1, 3600, 4) + bytes([198, 51, 100, 1])
AAAA = struct.pack(">HHIH", 28, 1, 3600, 16) + bytes.fromhex("20010db8000000000000000000000001")


def reply(q):
    """The answer to query `q` (bytes), or None when it is not a plain one-question query."""
    if len(q) < 17 or q[2] & 0x80 or struct.unpack(">H", q[4:6])[0] != 1:
        return None
    i = 12
    while True:  # the question's name: plain labels only
        if i >= len(q):
            return None
        n = q[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0:
            return None
        i += 1 + n
    if i + 4 > len(q):
        return None
    qtype = struct.unpack(">H", q[i:i + 2])[0]
    question = q[12:i + 4]
    rr = {1: A, 28: AAAA}.get(qtype)
    flags = 0x8000 | (q[2] & 0x01) << 8 | 0x0080  # QR, RD copied, RA
    head = q[:2] + struct.pack(">HHHHH", flags, 1, 1 if rr else 0, 0, 0)
    return head + question + (b"\xc0\x0c" + rr if rr else b"")


def serve(s, delay, until):
    """Replies leave in arrival order, each `delay` after its query came (the delay is the same
    for all, so a FIFO is the whole timer wheel)."""
    import collections
    import select
    import time
    s.setblocking(False)
    due = collections.deque()
    while True:
        now = time.monotonic()
        if now >= until:
            return
        while due and due[0][0] <= now:
            _, r, addr = due.popleft()
            try:
                s.sendto(r, addr)
            except OSError:
                pass  # a full buffer drops the reply, as a network would
        wait = min(until - now, due[0][0] - now if due else 1.0)
        if not select.select([s], [], [], max(0.0, wait))[0]:
            continue
        for _ in range(256):
            try:
                data, addr = s.recvfrom(4096)
            except BlockingIOError:
                break
            r = reply(data)
            if r is not None:
                due.append((time.monotonic() + delay, r, addr))


def main():
    import time
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--delay-ms", type=float, default=250)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=3600)
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind(("127.0.0.1", a.port))
    print(s.getsockname()[1], flush=True)
    serve(s, a.delay_ms / 1000, time.monotonic() + a.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
