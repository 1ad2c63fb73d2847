#!/usr/bin/env python3
"""One DNS query over DoT, DoH (HTTP/1.1, HTTP/2 GET or POST), DoH3, DoQ or gRPC with the real
Python clients (dnspython with httpx/h2/aioquic, grpcio with protobuf), printed as JSON: rcode,
flags, the sections as text, and transport details. Used by tests/transports.rs.

    transport_client.py KIND HOST PORT QNAME QTYPE [--ca FILE] [--sni NAME] [--post]
                        [--id N] [--count N] [--raw-hex HEX] [--keepalive]

KIND: tls, https (HTTP/2), https1 (HTTP/1.1), https3, quic, grpc, grpc-tls.
"""

import argparse
import json
import ssl
import sys


def message_json(m):
    import dns.flags
    import dns.rcode

    def section(rrs):
        out = []
        for rrset in rrs:
            for line in rrset.to_text().splitlines():
                out.append(line)
        return out

    return {
        "id": m.id,
        "rcode": dns.rcode.to_text(m.rcode()),
        "flags": dns.flags.to_text(m.flags).lower().split(),
        "question": [q.to_text() for q in m.question],
        "answer": section(m.answer),
        "authority": section(m.authority),
        "additional": section(m.additional),
        "edns": m.edns,
        "payload": m.payload if m.edns >= 0 else None,
    }


def grpc_stub(channel):
    """coredns.dns.DnsService/Query with DnsPacket built from a descriptor (pb/dns.proto)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto()
    fdp.name = "dns.proto"
    fdp.package = "coredns.dns"
    fdp.syntax = "proto3"
    msg = fdp.message_type.add()
    msg.name = "DnsPacket"
    f = msg.field.add()
    f.name = "msg"
    f.number = 1
    f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    f.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("coredns.dns.DnsPacket"))
    call = channel.unary_unary(
        "/coredns.dns.DnsService/Query",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=cls.FromString,
    )
    return cls, call


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("qname")
    p.add_argument("qtype")
    p.add_argument("--ca")
    p.add_argument("--sni", default="localhost")
    p.add_argument("--post", action="store_true")
    p.add_argument("--id", type=int, default=None)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--raw-hex", default=None, help="send these bytes instead of a query")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--keepalive", action="store_true",
                   help="add an EDNS TCP keepalive option (not allowed over DoQ)")
    a = p.parse_args()

    import dns.message
    import dns.query

    import dns.edns

    options = [dns.edns.GenericOption(11, b"")] if a.keepalive else None
    q = dns.message.make_query(a.qname, a.qtype, use_edns=0, options=options)
    if a.id is not None:
        q.id = a.id
    out = {"results": []}
    for _ in range(a.count):
        if a.kind == "tls":
            ctx = ssl.create_default_context(cafile=a.ca)
            r = dns.query.tls(q, a.host, port=a.port, ssl_context=ctx, server_hostname=a.sni,
                              timeout=a.timeout)
        elif a.kind in ("https", "https1", "https3"):
            version = {
                "https": dns.query.HTTPVersion.H2,
                "https1": dns.query.HTTPVersion.H1,
                "https3": dns.query.HTTPVersion.H3,
            }[a.kind]
            url = f"https://{a.sni}:{a.port}/dns-query"
            r = dns.query.https(q, url, port=a.port, bootstrap_address=a.host, verify=a.ca or True,
                                post=a.post, http_version=version, timeout=a.timeout)
        elif a.kind == "quic":
            q.id = 0 if a.id is None else a.id
            r = dns.query.quic(q, a.host, port=a.port, verify=a.ca or True,
                               server_hostname=a.sni, timeout=a.timeout)
        elif a.kind in ("grpc", "grpc-tls"):
            import grpc

            target = f"{a.host}:{a.port}"
            if a.kind == "grpc-tls":
                with open(a.ca, "rb") as f:
                    creds = grpc.ssl_channel_credentials(root_certificates=f.read())
                channel = grpc.secure_channel(
                    target, creds, options=[("grpc.ssl_target_name_override", a.sni)])
            else:
                channel = grpc.insecure_channel(target)
            cls, call = grpc_stub(channel)
            payload = bytes.fromhex(a.raw_hex) if a.raw_hex is not None else q.to_wire()
            try:
                reply = call(cls(msg=payload), timeout=a.timeout)
            except grpc.RpcError as e:
                out["results"].append({"grpc_error": e.code().name, "details": e.details()})
                continue
            finally:
                channel.close()
            r = dns.message.from_wire(reply.msg)
        else:
            print(f"unknown kind {a.kind}", file=sys.stderr)
            return 2
        out["results"].append(message_json(r))
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
