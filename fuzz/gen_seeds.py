#!/usr/bin/env python3
"""Writes the checked-in seed corpus for the packet targets (valid queries and faults.md §5.5
single-packet kills) and the Corefile target. Re-run after changing it; files are stable."""
import os, struct, hashlib

HERE = os.path.dirname(os.path.abspath(__file__))

def hdr(i, flags, qd, an, ns, ar):
    return struct.pack(">HHHHHH", i, flags, qd, an, ns, ar)

def name(n):
    out = b""
    for l in n.strip(".").split("."):
        if l:
            out += bytes([len(l)]) + l.encode()
    return out + b"\0"

def q(n, t=1, c=1):
    return name(n) + struct.pack(">HH", t, c)

def opt(owner=b"\0", size=1232, ver=0, flags=0, rdata=b""):
    return owner + struct.pack(">HHBBHH", 41, size, 0, ver, flags, len(rdata)) + rdata

packets = {
    "plain_a": hdr(1, 0x0100, 1, 0, 0, 0) + q("example.org."),
    "edns_aaaa": hdr(2, 0x0100, 1, 0, 0, 1) + q("Kubernetes.default.svc.cluster.local.", 28) + opt(),
    "edns_do_opts": hdr(3, 0x0110, 1, 0, 0, 1) + q("_http._tcp.web.ns.svc.cluster.local.", 33)
        + opt(size=4096, flags=0x8000, rdata=struct.pack(">HH", 10, 8) + b"abcdefgh" + struct.pack(">HH", 3, 0)),
    "root_ns": hdr(4, 0, 1, 0, 0, 0) + q(".", 2),
    "any": hdr(5, 0x0100, 1, 0, 0, 0) + q("example.org.", 255),
    "chaos": hdr(6, 0x0100, 1, 0, 0, 0) + q("version.bind.", 16, 3),
    "type666": hdr(7, 0, 1, 0, 0, 1) + q("cluster.local.", 666) + opt(),
    "edns1": hdr(8, 0, 1, 0, 0, 1) + q("cluster.local.", 6) + opt(ver=1, rdata=struct.pack(">HH", 100, 0)),
    "opcode15": hdr(9, 15 << 11, 0, 0, 0, 0),
    "notify": hdr(10, 4 << 11, 1, 1, 0, 0) + q("example.org.", 6) + b"\xc0\x0c" + struct.pack(">HHIH", 6, 1, 0, 0),
    "qr1": hdr(11, 0x8180, 1, 0, 0, 0) + q("example.org."),
    "self_pointer": hdr(12, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1",
    "two_cycle": hdr(13, 0x0100, 1, 0, 0, 0) + b"\xc0\x0e\xc0\x0c\0\1\0\1",
    "into_header": hdr(14, 0x0100, 1, 0, 0, 0) + b"\xc0\x04\0\1\0\1",
    "beyond_end": hdr(15, 0x0100, 1, 0, 0, 0) + b"\xff\xff\0\1\0\1",
    "label_0x40": hdr(16, 0x0100, 1, 0, 0, 0) + b"\x41a\0\0\1\0\1",
    "label_0x80": hdr(17, 0x0100, 1, 0, 0, 0) + b"\x81a\0\0\1\0\1",
    "name_256": hdr(18, 0x0100, 1, 0, 0, 0) + b"".join(bytes([l]) + b"a" * l for l in (63, 63, 63, 62)) + b"\0\0\1\0\1",
    "labels_128": hdr(19, 0x0100, 1, 0, 0, 0) + b"\1a" * 128 + b"\0\0\1\0\1",
    "qdcount0": hdr(20, 0x0100, 0, 0, 0, 0),
    "qdcount_max": hdr(21, 0x0100, 65535, 0, 0, 0) + q("example.org."),
    "qdcount1_none": hdr(22, 0x0100, 1, 0, 0, 0),
    "counts_max": hdr(23, 0x0100, 1, 65535, 65535, 65535) + q("example.org."),
    "two_opts": hdr(24, 0x0100, 1, 0, 0, 2) + q("example.org.") + opt() + opt(size=4096),
    "opt_not_root": hdr(25, 0x0100, 1, 0, 0, 1) + q("example.org.") + opt(owner=name("example.org.")),
    "opt_in_answer": hdr(26, 0x0100, 1, 1, 0, 0) + q("example.org.") + opt(),
    "opt_len_past_end": hdr(27, 0x0100, 1, 0, 0, 1) + q("example.org.") + opt(rdata=struct.pack(">HH", 10, 40) + b"1234"),
    "trailing": hdr(28, 0x0100, 1, 0, 0, 0) + q("example.org.") + b"garbage",
    "short": b"\x00\x01\x02",
    "compressed_answer": hdr(29, 0x8180, 1, 1, 0, 0) + q("www.example.org.") + b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + b"\xc0\0\2\1",
}
# A backward chain of 100 pointers in an unknown record, used by the next owner name.
chain = hdr(30, 0x0100, 1, 0, 0, 2) + q("chain.example.")
rec = b"\0" + struct.pack(">HHI", 0xff00, 1, 0)
start = len(chain) + len(rec) + 2
rd = b"\xc0\x0c" + b"".join(struct.pack(">H", 0xc000 | (start + 2 * (i - 1))) for i in range(1, 100))
chain += rec + struct.pack(">H", len(rd)) + rd + struct.pack(">H", 0xc000 | (start + 2 * 99 - 2)) + struct.pack(">HHIH", 0xff00, 1, 0, 0)
packets["chain_100"] = chain

corefiles = {
    "k8s_default": """.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
""",
    "snippets_env": """(common) {
    errors
    log . "{remote} {type} {name}"
}
example.org:1053 10.0.0.0/24 {
    import common
    whoami
    hosts {
        192.0.2.1 a.example.org
        fallthrough
    }
}
dns://.:{$PORT} {
    chaos Sextant-1 "Some One" {$AUTHOR}
}
""",
    "import_glob": "import *.conf\n. {\n  import missing/**/x\n}\n",
    "broken": ".:53 {\n  forward . 127.0.0.1 {\n    policy random\n  \n",
    "nested": ".:53 {\n" + "  a {\n" * 50 + "  }\n" * 50 + "}\n",
}

for target in ("wire_parse", "scan_query", "differential", "request_path"):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for k, v in packets.items():
        open(os.path.join(d, k), "wb").write(v)
d = os.path.join(HERE, "corpus", "corefile")
os.makedirs(d, exist_ok=True)
for k, v in corefiles.items():
    open(os.path.join(d, k), "w").write(v)

# hosts_file: /etc/hosts text of many shapes.
hosts = {
    "etc_hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 "fe00::0 ip6-localnet\nff02::1 ip6-allnodes\n10.0.0.1 router.lan router # gateway\n",
    "many_names": "192.0.2.1 a.example.org b.example.org. C.Example.Org *.wild.example.org\n",
    "v6_zone_mapped": "fe80::1%eth0 link.local\n::ffff:192.0.2.7 mapped.example\n2001:db8::1 six.example\n",
    "bad_lines": "not-an-ip name\n300.1.1.1 big.example\n\n   \t\n# only a comment\n1.2.3.4\n1.2.3.4 bad..name\n",
    "long_label": "192.0.2.9 " + "a" * 64 + ".example " + ".".join(["b" * 63] * 4) + "\n",
    "reverse_names": "4.3.2.1.in-addr.arpa.\n1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.\n"
                     "256.0.0.1.in-addr.arpa.\nx.ip6.arpa.\n192.0.2.1 1.2.0.192.in-addr.arpa\n",
    "dup": "192.0.2.1 dup.example\n192.0.2.1 dup.example\n192.0.2.2 dup.example\n",
}
d = os.path.join(HERE, "corpus", "hosts_file")
os.makedirs(d, exist_ok=True)
for k, v in hosts.items():
    open(os.path.join(d, k), "w").write(v)

# kube_objects: API JSON (objects, arrays, watch events, Lists) from examples/cluster.yaml
# plus hand-made odd ones.
import json
try:
    import yaml
    docs = [x for x in yaml.safe_load_all(open(os.path.join(HERE, "..", "examples", "cluster.yaml"))) if x]
except ImportError:
    docs = []
kube = {
    "cluster_array": docs,
    "list": {"kind": "ServiceList", "items": [x for x in docs if x.get("kind") == "Service"]},
    "watch_added": {"type": "ADDED", "object": next((x for x in docs if x.get("kind") == "Service"), {})},
    "headless": {"kind": "Service", "metadata": {"name": "h", "namespace": "ns"},
                 "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
    "external_name": {"kind": "Service", "metadata": {"name": "e", "namespace": "ns"},
                      "spec": {"type": "ExternalName", "externalName": "example.org."}},
    "bad_ips": {"kind": "Service", "metadata": {"name": "b", "namespace": "ns"},
                "spec": {"clusterIP": "10.0.0.300", "clusterIPs": ["x", "", "::1"], "externalIPs": ["1.1.1.1", 5],
                         "ports": [{"port": 70000, "protocol": "SCTP", "name": "UPPER"}]}},
    "slice_dup": {"kind": "EndpointSlice", "metadata": {"name": "s", "namespace": "ns",
                  "labels": {"kubernetes.io/service-name": "h"}}, "addressType": "IPv4",
                  "endpoints": [{"addresses": ["10.1.1.1", "10.1.1.1"], "hostname": "x"},
                                {"addresses": ["10.1.1.2"], "conditions": {"ready": False}}],
                  "ports": [{"port": 80}]},
    "pod": {"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
            "status": {"podIP": "10.2.0.1", "podIPs": [{"ip": "10.2.0.1"}, {"ip": "fd00::1"}]}},
    "no_name": {"kind": "Service", "metadata": {}},
    "namespace": {"kind": "Namespace", "metadata": {"name": "ns", "labels": {"a": "b"}}},
}
d = os.path.join(HERE, "corpus", "kube_objects")
os.makedirs(d, exist_ok=True)
for k, v in kube.items():
    open(os.path.join(d, k), "w").write(json.dumps(v, sort_keys=True))

# setup: every `~~~ corefile` example of the plugin READMEs, the example Corefile, and a few
# Corefiles with every plugin at once.
import glob, re
setups = {}
for readme in sorted(glob.glob(os.path.join(HERE, "..", "src", "plugins", "*", "README.md"))):
    plugin = os.path.basename(os.path.dirname(readme))
    blocks = re.findall(r"^~~~ corefile\n(.*?)^~~~", open(readme).read(), re.S | re.M)
    for i, b in enumerate(blocks):
        setups[f"readme_{plugin}_{i}"] = b
setups["example"] = open(os.path.join(HERE, "..", "examples", "Corefile")).read()
setups["everything"] = """.:1053 {
    bind 127.0.0.1
    debug
    errors
    log . "{remote} {name}"
    health 127.0.0.1:18080 { lameduck 1s }
    ready 127.0.0.1:18181
    prometheus 127.0.0.1:19153
    reload 10s 2s
    any
    chaos Sextant a b
    loadbalance round_robin
    rewrite name exact a.example.org b.example.org
    autopath @kubernetes
    cache 30 { success 1000 denial 100 prefetch 2 serve_stale 1h }
    hosts { 192.0.2.1 h.example.org
        fallthrough }
    kubernetes cluster.local in-addr.arpa ip6.arpa { manifests ../examples/cluster.yaml
        pods verified
        fallthrough in-addr.arpa ip6.arpa }
    loop
    forward . 127.0.0.1:9 [::1]:9 { max_concurrent 100 policy sequential health_check 1s }
    whoami
    transfer { to * }
}
"""
setups["bad_everything"] = ".:x {\n  cache -1\n  forward\n  hosts a b c d { reload bogus }\n  kubernetes { pods nope }\n  bind 999.1.1.1\n}\n"
d = os.path.join(HERE, "corpus", "setup")
os.makedirs(d, exist_ok=True)
for k, v in setups.items():
    open(os.path.join(d, k), "w").write(v)

# doh_request: method byte, request target, NUL, body (see sextant_fuzz::doh_request).
import base64
query = packets["plain_a"]
b64 = base64.urlsafe_b64encode(query).rstrip(b"=")
doh = {
    "get": b"\x00/dns-query?dns=" + b64,
    "get_more_params": b"\x00/dns-query?ct=application/dns-message&dns=" + b64 + b"&x=%41",
    "get_escaped": b"\x00/dns-query?dns=" + b64.replace(b"-", b"%2D").replace(b"_", b"%5F"),
    "get_two": b"\x00/dns-query?dns=" + b64 + b"&dns=" + b64,
    "get_padded": b"\x00/dns-query?dns=" + base64.urlsafe_b64encode(query),
    "get_semicolon": b"\x00/dns-query?dns=" + b64 + b";x=1",
    "get_empty": b"\x00/dns-query?dns=",
    "get_other_path": b"\x00/other?dns=" + b64,
    "post": b"\x01/dns-query\x00" + query,
    "post_short": b"\x01/dns-query\x00" + query[:7],
    "post_reply": b"\x01/dns-query\x00" + query[:2] + bytes([query[2] | 0x80]) + query[3:],
    "put": b"\x02/dns-query\x00" + query,
    "head": b"\x03/dns-query?dns=" + b64,
    "absolute": b"\x00https://localhost/dns-query?dns=" + b64,
}
d = os.path.join(HERE, "corpus", "doh_request")
os.makedirs(d, exist_ok=True)
for k, v in doh.items():
    open(os.path.join(d, k), "wb").write(v)

# grpc_packet: protobuf DnsPacket bodies (field 1, bytes) and broken ones.
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
grpc = {
    "packet": b"\x0a" + varint(len(query)) + query,
    "empty": b"",
    "empty_msg": b"\x0a\x00",
    "unknown_field": b"\x12\x03abc\x0a" + varint(len(query)) + query,
    "twice": (b"\x0a" + varint(len(query)) + query) * 2,
    "short": b"\x0a" + varint(len(query) + 5) + query,
    "bad_varint": b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    "wrong_type": b"\x08\x01",
}
d = os.path.join(HERE, "corpus", "grpc_packet")
os.makedirs(d, exist_ok=True)
for k, v in grpc.items():
    open(os.path.join(d, k), "wb").write(v)

# proxy_header: PROXY protocol v1 lines and v2 headers (each family, LOCAL, TLVs), with DNS
# data after them, and broken ones.
def pp2(cmd, fam, addrs):
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([cmd, fam]) + len(addrs).to_bytes(2, "big") + addrs
v4 = bytes([10, 1, 2, 3, 192, 0, 2, 1, 0x30, 0x39, 0, 53])
v6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + b"\x03\xe8\x00\x35"
pp = {
    "v1_tcp4": b"PROXY TCP4 10.1.2.3 192.0.2.1 12345 53\r\n" + query,
    "v1_tcp6": b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 65535\r\n",
    "v1_unknown": b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    "v1_no_crlf": b"PROXY TCP4 10.1.2.3 192.0.2.1 12345 53\n",
    "v1_long": b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
    "v1_bad_port": b"PROXY TCP4 1.2.3.4 1.2.3.4 01 65536\r\n",
    "v2_udp4": pp2(0x21, 0x12, v4) + query,
    "v2_tcp4": pp2(0x21, 0x11, v4),
    "v2_udp6": pp2(0x21, 0x22, v6) + query,
    "v2_local": pp2(0x20, 0x00, b""),
    "v2_local_short": pp2(0x20, 0x11, b"\x01\x02\x03"),
    "v2_tlv": pp2(0x21, 0x11, v4 + b"\x04\x00\x01\xff"),
    "v2_unix": pp2(0x21, 0x31, bytes(216)),
    "v2_header_only": pp2(0x21, 0x12, v4),
    "v2_cut": pp2(0x21, 0x12, v4)[:20],
    "v2_bad_command": pp2(0x22, 0x11, v4),
    "v2_too_long": pp2(0x21, 0x11, bytes(4097)),
    "dns": query,
    "signature_only": b"\r\n\r\n\x00\r\nQUIT\n",
}
d = os.path.join(HERE, "corpus", "proxy_header")
os.makedirs(d, exist_ok=True)
for k, v in pp.items():
    open(os.path.join(d, k), "wb").write(v)
