"""Generators for the side-by-side benchmark: one synthetic Kubernetes cluster rendered both as
manifests (for Sextant's `kubernetes` plugin) and as zone files (for Knot DNS and NSD), the
external zones the upstream serves, and dnsperf query files. Deterministic for a given seed.
No network, no processes: files only."""

import ipaddress
import json
import os
import random

ZONE = "cluster.local"
TTL = 30  # kubeadm's `ttl 30`
SOA_TTL = min(TTL, 300)
EXT_ZONE = "example.com"  # names the upstream serves (external-looking)
HOST_SEARCH = "corp.example.net"  # the node's own search domain (4th search-path element)
PORTS = [
    ("http", 80, "TCP"),
    ("https", 443, "TCP"),
    ("grpc", 9090, "TCP"),
    ("metrics", 9153, "TCP"),
    ("dns", 53, "UDP"),
]


def dashed(ip):
    """CoreDNS's endpoint name for an address without hostname."""
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return str(a).replace(".", "-")
    s = str(a).replace(":", "-")
    return s + "0" if s.endswith("-") else s


def rev(ip):
    return ipaddress.ip_address(ip).reverse_pointer + "."


class Cluster:
    """services: list of dicts {name, ns, kind, cips, ports, eps:[(ip, hostname|None, pod)], ext}"""

    def __init__(self, services, eps_per_svc, pods_cap, seed):
        rnd = random.Random(seed)
        self.nns = max(1, services // 50)
        self.namespaces = ["default", "kube-system"] + [f"ns-{k}" for k in range(self.nns)]
        self.services = []
        v4svc = int(ipaddress.ip_address("10.96.1.0"))
        v6svc = int(ipaddress.ip_address("fd00:10:96::1:0"))
        v4pod = int(ipaddress.ip_address("10.128.0.10"))
        self.services.append(
            dict(name="kube-dns", ns="kube-system", kind="ClusterIP", cips=["10.96.0.10"],
                 ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")],
                 eps=[], ext=None)
        )
        pods = 0
        for i in range(services):
            ns = f"ns-{i % self.nns}"
            m = i % 10
            if m <= 6:
                kind, name = "ClusterIP", f"svc-{i}"
            elif m <= 8:
                kind, name = "Headless", f"hl-{i}"
            else:
                kind, name = "ExternalName", f"ext-{i}"
            s = dict(name=name, ns=ns, kind=kind, cips=[], ports=[], eps=[], ext=None)
            if kind == "ExternalName":
                s["ext"] = f"www.site-{i}.example.org"
                self.services.append(s)
                continue
            off = rnd.randrange(len(PORTS))
            s["ports"] = [PORTS[(off + k) % len(PORTS)] for k in range(1 + i % 3)]
            if kind == "ClusterIP":
                s["cips"] = [str(ipaddress.ip_address(v4svc))]
                v4svc += 1
                if i % 5 == 0:  # dual-stack
                    s["cips"].append(str(ipaddress.ip_address(v6svc)))
                    v6svc += 1
            n = max(1, eps_per_svc + rnd.randint(-(eps_per_svc // 2), eps_per_svc // 2))
            for k in range(n):
                ip = str(ipaddress.ip_address(v4pod))
                v4pod += 1
                host = f"{name}-{k}" if kind == "Headless" else None
                pod = f"{name}-{k}" if pods < pods_cap else None
                pods += 1 if pod else 0
                s["eps"].append((ip, host, pod))
            self.services.append(s)

    def counts(self):
        eps = sum(len(s["eps"]) for s in self.services)
        pods = sum(1 for s in self.services for e in s["eps"] if e[2])
        return dict(namespaces=len(self.namespaces), services=len(self.services),
                     endpointslices=sum(1 for s in self.services if s["eps"]), endpoints=eps, pods=pods)

    # ---- manifests -------------------------------------------------------------------------

    def manifest_items(self, client_pod_ip=None):
        items = []
        for ns in self.namespaces:
            items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for s in self.services:
            meta = {"name": s["name"], "namespace": s["ns"]}
            if s["kind"] == "ExternalName":
                spec = {"type": "ExternalName", "externalName": s["ext"]}
            else:
                spec = {"type": "ClusterIP",
                        "ports": [{"name": n, "port": p, "protocol": pr, "targetPort": p}
                                  for n, p, pr in s["ports"]]}
                if s["kind"] == "Headless":
                    spec["clusterIP"] = "None"
                    spec["clusterIPs"] = ["None"]
                else:
                    spec["clusterIP"] = s["cips"][0]
                    spec["clusterIPs"] = list(s["cips"])
                    spec["ipFamilies"] = ["IPv4"] + (["IPv6"] if len(s["cips"]) > 1 else [])
            items.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
            if s["eps"]:
                eps = []
                for ip, host, pod in s["eps"]:
                    e = {"addresses": [ip], "conditions": {"ready": True}}
                    if host:
                        e["hostname"] = host
                    if pod:
                        e["targetRef"] = {"kind": "Pod", "name": pod, "namespace": s["ns"]}
                    eps.append(e)
                items.append({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": s["name"] + "-abcde", "namespace": s["ns"],
                                 "labels": {"kubernetes.io/service-name": s["name"]}},
                    "addressType": "IPv4", "endpoints": eps,
                    "ports": [{"name": n, "port": p, "protocol": pr} for n, p, pr in s["ports"]],
                })
                for ip, host, pod in s["eps"]:
                    if pod:
                        pspec = {"containers": [{"name": "c", "image": "x"}]}
                        if host:
                            pspec["hostname"] = host
                            pspec["subdomain"] = s["name"]
                        items.append({"apiVersion": "v1", "kind": "Pod",
                                      "metadata": {"name": pod, "namespace": s["ns"]},
                                      "spec": pspec,
                                      "status": {"phase": "Running", "podIP": ip,
                                                 "podIPs": [{"ip": ip}]}})
        if client_pod_ip:
            items.append({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "bench-client", "namespace": "ns-0"},
                          "spec": {"containers": [{"name": "c", "image": "x"}]},
                          "status": {"phase": "Running", "podIP": client_pod_ip,
                                     "podIPs": [{"ip": client_pod_ip}]}})
        return items

    def write_manifests(self, path, client_pod_ip=None):
        with open(path, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "List",
                       "items": self.manifest_items(client_pod_ip)}, f)

    # ---- zone files ------------------------------------------------------------------------

    def zone_records(self):
        """(forward, in-addr, ip6) lists of (owner, type, rdata), owners absolute."""
        fwd, r4, r6 = [], [], []
        z = ZONE + "."

        def ptr(ip, target):
            (r4 if ":" not in ip else r6).append((rev(ip), "PTR", target))

        for s in self.services:
            base = f"{s['name']}.{s['ns']}.svc.{z}"
            if s["kind"] == "ExternalName":
                fwd.append((base, "CNAME", s["ext"] + "."))
                continue
            named = [p for p in s["ports"] if p[0]]
            if s["kind"] == "ClusterIP":
                for ip in s["cips"]:
                    fwd.append((base, "AAAA" if ":" in ip else "A", ip))
                    ptr(ip, base)
                n = len(s["cips"])
                for pn, port, proto in named:
                    fwd.append((f"_{pn}._{proto.lower()}.{base}", "SRV",
                                f"0 {max(1, 100 // n)} {port} {base}"))
                nall = n * len(s["ports"])
                for pn, port, proto in s["ports"]:
                    fwd.append((base, "SRV", f"0 {max(1, 100 // nall)} {port} {base}"))
                for ip, host, _ in s["eps"]:
                    t = f"{host or dashed(ip)}.{base}"
                    fwd.append((t, "AAAA" if ":" in ip else "A", ip))
                    ptr(ip, t)
            else:  # headless
                n = len(s["eps"])
                for ip, host, _ in s["eps"]:
                    t = f"{host or dashed(ip)}.{base}"
                    fwd.append((base, "AAAA" if ":" in ip else "A", ip))
                    fwd.append((t, "AAAA" if ":" in ip else "A", ip))
                    ptr(ip, t)
                    for pn, port, proto in named:
                        fwd.append((f"_{pn}._{proto.lower()}.{base}", "SRV",
                                    f"0 {max(1, 100 // n)} {port} {t}"))
                    for pn, port, proto in s["ports"]:
                        fwd.append((base, "SRV",
                                    f"0 {max(1, 100 // (n * len(s['ports'])))} {port} {t}"))
        return fwd, r4, r6

    def write_zones(self, d):
        """Writes cluster.local.zone, in-addr.arpa.zone, ip6.arpa.zone into d; returns zone names."""
        fwd, r4, r6 = self.zone_records()
        out = []
        for zone, recs in ((ZONE, fwd), ("in-addr.arpa", r4), ("ip6.arpa", r6)):
            z = zone + "."
            lines = [f"$TTL {TTL}",
                     f"{z} {SOA_TTL} IN SOA ns.dns.{z} hostmaster.{z} 1 7200 1800 86400 {TTL}",
                     f"{z} {TTL} IN NS ns.dns.{z}",
                     f"ns.dns.{z} {TTL} IN A 10.96.0.10"]
            if zone == ZONE:
                lines.append(f'dns-version.{z} 28800 IN TXT "1.1.0"')
            seen = set()
            for o, t, r in recs:
                if (o.lower(), t, r) in seen:
                    continue
                seen.add((o.lower(), t, r))
                lines.append(f"{o} {TTL} IN {t} {r}")
            with open(os.path.join(d, zone + ".zone"), "w") as f:
                f.write("\n".join(lines) + "\n")
            out.append(zone)
        return out

    # ---- query mixes -----------------------------------------------------------------------

    def cluster_queries(self, n, seed):
        """The way pods ask: A and AAAA together, SRV for named ports, PTR, and the NXDOMAINs the
        ndots:5 search path produces before the right name."""
        rnd = random.Random(seed)
        cip = [s for s in self.services if s["kind"] == "ClusterIP" and s["name"] != "kube-dns"]
        hl = [s for s in self.services if s["kind"] == "Headless"]
        q = []
        fq = lambda s: f"{s['name']}.{s['ns']}.svc.{ZONE}."  # noqa: E731
        while len(q) < n:
            r = rnd.random()
            if r < 0.50:  # A + AAAA of a ClusterIP service
                s = rnd.choice(cip)
                q += [(fq(s), "A"), (fq(s), "AAAA")]
            elif r < 0.58:  # headless service
                s = rnd.choice(hl)
                q += [(fq(s), "A"), (fq(s), "AAAA")]
            elif r < 0.63:  # a StatefulSet pod by hostname
                s = rnd.choice(hl)
                ip, host, _ = rnd.choice(s["eps"])
                q.append((f"{host}.{fq(s)}", "A"))
            elif r < 0.73:  # SRV for a named port
                s = rnd.choice(cip + hl)
                pn, _, proto = rnd.choice(s["ports"])
                q.append((f"_{pn}._{proto.lower()}.{fq(s)}", "SRV"))
            elif r < 0.80:  # PTR of a service or endpoint address
                s = rnd.choice(cip + hl)
                ips = list(s["cips"]) + [e[0] for e in s["eps"]]
                q.append((rev(rnd.choice(ips)), "PTR"))
            else:  # search-path NXDOMAINs: short name `svc.ns` from another namespace, external
                pns = f"ns-{rnd.randrange(self.nns)}"
                if rnd.random() < 0.5:
                    s = rnd.choice(cip)
                    nm = f"{s['name']}.{s['ns']}.{pns}.svc.{ZONE}."
                else:
                    host = f"www.site-{rnd.randrange(1000)}.com"
                    nm = rnd.choice([f"{host}.{pns}.svc.{ZONE}.", f"{host}.svc.{ZONE}.",
                                     f"{host}.{ZONE}."])
                q += [(nm, "A"), (nm, "AAAA")]
        return q[:n]


def external_zone(d, hosts):
    """example.com (hosts host-<i> with A and AAAA, a wildcard for unique miss names) and the
    node search domain corp.example.net (empty, so every name under it is NXDOMAIN)."""
    z = EXT_ZONE + "."
    lines = ["$TTL 3600", f"{z} 3600 IN SOA ns1.{z} hostmaster.{z} 1 7200 1800 86400 300",
             f"{z} 3600 IN NS ns1.{z}", f"ns1.{z} 3600 IN A 127.0.0.1",
             f"*.{z} 3600 IN A 198.51.100.1"]
    for i in range(hosts):
        lines.append(f"host-{i}.{z} 3600 IN A 198.51.{100 + (i >> 8) % 20}.{i & 255}")
        lines.append(f"host-{i}.{z} 3600 IN AAAA 2001:db8::{i:x}")
    with open(os.path.join(d, EXT_ZONE + ".zone"), "w") as f:
        f.write("\n".join(lines) + "\n")
    z = HOST_SEARCH + "."
    with open(os.path.join(d, HOST_SEARCH + ".zone"), "w") as f:
        f.write(f"$TTL 300\n{z} 300 IN SOA ns1.{z} hostmaster.{z} 1 7200 1800 86400 300\n"
                f"{z} 300 IN NS ns1.{z}\nns1.{z} 300 IN A 127.0.0.1\n")
    return [EXT_ZONE, HOST_SEARCH]


def hit_queries(hosts, n, seed):
    rnd = random.Random(seed)
    q = []
    while len(q) < n:
        i = rnd.randrange(hosts)
        q += [(f"host-{i}.{EXT_ZONE}.", "A"), (f"host-{i}.{EXT_ZONE}.", "AAAA")]
    return q[:n]


def search_path_queries(lookups, tag, autopath):
    """External names as a pod in ns-0 looks them up with ndots:5: five A queries per lookup (four
    NXDOMAIN) without autopath; only the first with autopath (the server answers the rest)."""
    q = []
    for i in range(lookups):
        name = f"{tag}-{i}.{EXT_ZONE}"
        forms = [f"{name}.ns-0.svc.{ZONE}.", f"{name}.svc.{ZONE}.", f"{name}.{ZONE}.",
                 f"{name}.{HOST_SEARCH}.", f"{name}."]
        q += [(f, "A") for f in (forms[:1] if autopath else forms)]
    return q


def nodecache_queries(cluster, hosts, n, seed):
    """Pods behind a node cache: 70% cluster mix, 30% external hosts."""
    rnd = random.Random(seed)
    cq = cluster.cluster_queries(n, seed)
    hq = hit_queries(hosts, n, seed + 1)
    return [cq[i] if rnd.random() < 0.7 else hq[i] for i in range(n)]


def write_queries(path, qs):
    with open(path, "w") as f:
        for name, t in qs:
            f.write(f"{name} {t}\n")
