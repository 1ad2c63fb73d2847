//! Fuzz target functions for Sextant. Each takes arbitrary bytes and panics only on a real bug
//! (a crash in the code under test, or an invariant broken). The libFuzzer binaries in
//! `fuzz_targets/` call them; `tests/replay.rs` replays the checked-in corpus and every past
//! crash in `regressions/` through them on stable Rust.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

use hickory_proto::op::Message as HMessage;
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use sextant::fuzzing::{Proto, Site};
use sextant_wire::{scan_query as scan, Message, ParseError, ScanError, HEADER_LEN};

/// A fuzz target: arbitrary bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("wire_parse", wire_parse),
    ("scan_query", scan_query),
    ("differential", differential),
    ("request_path", request_path),
    ("corefile", corefile),
    ("hosts_file", hosts_file),
    ("kube_objects", kube_objects),
    ("setup", setup),
    ("zone_file", zone_file),
    ("doh_request", doh_request),
    ("grpc_packet", grpc_packet),
    ("proxy_header", proxy_header),
];

/// The zone-file parser (`sextant_zone::parse_zone` into a `Zone`) never panics or hangs on any
/// text; every record it accepts is inside the origin once filed, its data encodes to wire form
/// and decodes back to the same data, and a lookup of each accepted owner name answers without
/// panicking (the plain-answer fast path agrees with the full lookup on the answer).
pub fn zone_file(data: &[u8]) {
    use sextant_wire::{Class, Message, Name, RType};
    use sextant_zone::{wire, Zone};
    let text = String::from_utf8_lossy(data);
    let Ok(origin) = Name::parse("example.org.") else {
        return;
    };
    let mut names = Vec::new();
    let _ = sextant_zone::parse_zone(&text, &origin, "fuzz", None, &mut |r| {
        let w = wire::rdata_to_wire(&r.data);
        if let Some(back) = wire::rdata_from_wire(r.rtype, &w) {
            assert_eq!(wire::rdata_to_wire(&back), w, "rdata round trip of {r}");
        }
        if names.len() < 64 {
            names.push((r.name.clone(), r.rtype));
        }
        Ok(())
    });
    let Ok(z) = Zone::parse(&text, &origin, "fuzz", None) else {
        return;
    };
    let _ = z.transfer_records();
    for (n, t) in names {
        if !n.is_subdomain_of(&origin) {
            continue;
        }
        let l = z.lookup(&n.to_lowercase(), t, true, 0);
        let _ = z.lookup(&n.to_lowercase(), RType::A, false, 0);
        if let Some(w) = z.fast_reply(1, false, false, n.wire(), t, Class::IN) {
            let m = Message::parse(&w).expect("the fast path writes messages that parse");
            let slow = z.lookup(&n.to_lowercase(), t, false, 0);
            assert_eq!(
                m.answers.len(),
                slow.answer.len(),
                "fast and full lookups of {n} {t}"
            );
            let _ = l;
        }
    }
}

/// `Message::parse` never panics; whatever it accepts encodes, and the encoding parses back to
/// the same message (parse -> encode -> parse round trip), also when truncated to 512 bytes.
pub fn wire_parse(data: &[u8]) {
    match Message::parse(data) {
        Err(ParseError::NoHeader) => assert!(data.len() < HEADER_LEN),
        Err(ParseError::Malformed { .. }) => {}
        Ok(m) => {
            let w = m.to_wire();
            let back = Message::parse(&w).unwrap_or_else(|e| panic!("re-parse failed: {e}"));
            assert_eq!(back, m, "round trip changed the message");
            let (t, tc) = m.to_wire_limited(512);
            let back = Message::parse(&t).unwrap_or_else(|e| panic!("truncated re-parse: {e}"));
            assert_eq!(back.header.tc, tc || m.header.tc);
            // Only the header, question and OPT record may take it past the limit, and then no
            // other record is in it (they are never cut; miekg/dns `Truncate` does the same).
            let records = back.answers.len() + back.authority.len() + back.additional.len();
            assert!(
                t.len() <= 512 || !tc || records == 0,
                "limited encoding is {} bytes with {records} records",
                t.len()
            );
        }
    }
}

/// The in-place scanner never panics and only accepts what it promises.
pub fn scan_query(data: &[u8]) {
    match scan(data) {
        Err(ScanError::NoHeader) => assert!(data.len() < HEADER_LEN),
        Err(ScanError::Unusual) => assert!(data.len() >= HEADER_LEN),
        Ok(v) => {
            assert_eq!(v.packet.len(), data.len());
            assert!(v.question_end <= data.len());
            assert_eq!(v.qname.last(), Some(&0));
            assert!(v.qname.len() <= 255);
            if let Some(o) = v.opt {
                assert!(o.offset >= v.question_end && o.offset < data.len());
            }
        }
    }
}

/// `scan_query`, `Message::parse` and hickory-proto must agree: whatever the scanner accepts
/// the full parser accepts with the same question and EDNS data, and hickory too; a plain
/// one-question message that both full parsers accept has the same question in both.
pub fn differential(data: &[u8]) {
    let scanned = scan(data);
    let parsed = Message::parse(data);
    let hickory = HMessage::from_bytes(data);
    if let Ok(v) = &scanned {
        let m = parsed
            .as_ref()
            .unwrap_or_else(|e| panic!("scanner accepted, parser rejected: {e}"));
        assert_eq!(
            &v.to_message(),
            m,
            "scanned message differs from the parsed one"
        );
        assert_eq!(m.questions.len(), 1);
        let q = &m.questions[0];
        assert_eq!(q.name.wire(), v.qname, "qname");
        assert_eq!((q.qtype, q.qclass), (v.qtype, v.qclass));
        assert_eq!(m.header.id, v.id);
        assert_eq!(m.edns.is_some(), v.opt.is_some(), "OPT presence");
        if let (Some(e), Some(o)) = (&m.edns, v.opt) {
            assert_eq!(
                (e.udp_size, e.version, e.dnssec_ok),
                (o.udp_size, o.version, o.dnssec_ok)
            );
        }
        // hickory-proto validates the contents of EDNS options it knows (ECS, cookies, ...);
        // a server ignores what it does not use (miekg/dns accepts e.g. ECS family 0), so when
        // hickory rejects, judge it again on the packet with the OPT's options cut off.
        let stripped;
        let h = match (&hickory, v.opt) {
            (Ok(h), _) => h,
            (Err(_), Some(o)) => {
                let mut b = data[..o.offset + 9].to_vec();
                b.extend_from_slice(&[0, 0]);
                stripped = HMessage::from_bytes(&b)
                    .unwrap_or_else(|e| panic!("scanner accepted, hickory rejected: {e}"));
                &stripped
            }
            (Err(e), None) => panic!("scanner accepted, hickory rejected: {e}"),
        };
        assert_eq!(h.queries.len(), 1);
        let hq = &h.queries[0];
        let hname = hq.name().to_bytes().unwrap_or_default();
        assert!(hname.eq_ignore_ascii_case(v.qname), "hickory qname differs");
        assert_eq!(u16::from(hq.query_type()), v.qtype.0, "hickory qtype");
        assert_eq!(u16::from(hq.query_class()), v.qclass.0, "hickory qclass");
        let d =
            domain_view(data).unwrap_or_else(|e| panic!("scanner accepted, domain rejected: {e}"));
        assert!(
            d.qname.eq_ignore_ascii_case(v.qname),
            "domain qname differs"
        );
        assert_eq!(
            (d.qtype, d.qclass),
            (v.qtype.0, v.qclass.0),
            "domain qtype/qclass"
        );
        assert_eq!(d.id, v.id, "domain id");
        let dopt = d.opt;
        let sopt = v.opt.map(|o| (o.udp_size, o.version, o.dnssec_ok));
        assert_eq!(dopt, sopt, "domain OPT");
        return;
    }
    if let (Ok(m), Ok(h)) = (&parsed, &hickory) {
        if m.questions.len() == 1 && h.queries.len() == 1 {
            let hname = h.queries[0].name().to_bytes().unwrap_or_default();
            assert!(
                hname.eq_ignore_ascii_case(m.questions[0].name.wire()),
                "parsers disagree on the question name"
            );
            assert_eq!(u16::from(h.queries[0].query_type()), m.questions[0].qtype.0);
        }
    }
    if let (Ok(m), Ok(d)) = (&parsed, domain_view(data)) {
        if m.questions.len() == 1 {
            let q = &m.questions[0];
            assert!(
                d.qname.eq_ignore_ascii_case(q.name.wire()),
                "parser and domain disagree on the question name"
            );
            assert_eq!((d.qtype, d.qclass), (q.qtype.0, q.qclass.0));
        }
    }
}

/// What NLnet Labs' `domain` makes of a one-question message: the question (name in wire
/// form, uncompressed), the id and the OPT's (payload size, version, DO). `Err` when `domain`
/// rejects the header, the question, or any record of the other sections (record headers and
/// the OPT's option list; other RDATA is left unparsed, as `domain` does lazily).
pub struct DomainView {
    /// Message id.
    pub id: u16,
    /// Question name, uncompressed wire form.
    pub qname: Vec<u8>,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// (UDP payload size, EDNS version, DO) of the first OPT in ADDITIONAL.
    pub opt: Option<(u16, u8, bool)>,
}

/// Parses `data` with `domain` (see [`DomainView`]).
pub fn domain_view(data: &[u8]) -> Result<DomainView, String> {
    use domain::base::name::ToName;
    use domain::base::opt::Opt;
    use domain::base::Message as DMessage;
    let msg = DMessage::from_octets(data).map_err(|e| e.to_string())?;
    let q = msg.sole_question().map_err(|e| e.to_string())?;
    let (_, an, ns, ar) = msg.sections().map_err(|e| e.to_string())?;
    for section in [an, ns, ar] {
        for rr in section {
            let rr = rr.map_err(|e| e.to_string())?;
            if rr.rtype() == domain::base::iana::Rtype::OPT {
                rr.to_record::<Opt<_>>().map_err(|e| e.to_string())?;
            }
        }
    }
    let opt = msg
        .opt()
        .map(|o| (o.udp_payload_size(), o.version(), o.dnssec_ok()));
    Ok(DomainView {
        id: msg.header().id(),
        qname: q.qname().to_vec().into_octets(),
        qtype: q.qtype().to_int(),
        qclass: q.qclass().to_int(),
        opt,
    })
}

struct Served {
    rt: tokio::runtime::Runtime,
    site: Site,
}

fn served() -> &'static Served {
    static S: OnceLock<Served> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let text = ".:53 {\n    errors\n    any\n    chaos Sextant-1 a b c\n    whoami\n}\n\
                    example.org:53 {\n    whoami\n}\n";
        let site = rt.block_on(async {
            sextant::fuzzing::first_site(text)
                .unwrap_or_else(|e| panic!("fuzz Corefile does not set up: {e}"))
        });
        Served { rt, site }
    })
}

/// The whole request path (`Site::handle`: parse, accept checks, routing, the plugin chain
/// `errors any chaos whoami`, EDNS finishing and truncation) over UDP and TCP: no panic; a
/// reply, when there is one, parses, answers the query's id with QR set, Z clear, and fits the
/// client's size limit.
pub fn request_path(data: &[u8]) {
    let s = served();
    let client: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let local: SocketAddr = ([127, 0, 0, 1], 53).into();
    for proto in [Proto::Udp, Proto::Tcp] {
        let out = s.rt.block_on(s.site.handle(data, client, local, proto));
        let Some(r) = out else {
            continue;
        };
        assert!(
            data.len() >= HEADER_LEN,
            "reply to a packet without a header"
        );
        assert_eq!(data[2] & 0x80, 0, "reply to a response");
        let m = Message::parse(&r).unwrap_or_else(|e| panic!("our reply does not parse: {e}"));
        assert_eq!(&r[..2], &data[..2], "id");
        assert!(m.header.qr && !m.header.z);
        if proto == Proto::Udp {
            // CoreDNS's request.Size (the client's EDNS size, at least 512; 512 without),
            // capped at 1232 (docs/replies.md).
            let limit = Message::parse(data)
                .ok()
                .and_then(|q| q.edns)
                .map_or(512, |e| usize::from(e.udp_size).clamp(512, 1232));
            assert!(
                r.len() <= limit,
                "UDP reply of {} bytes for {limit}",
                r.len()
            );
        }
        HMessage::from_bytes(&r).unwrap_or_else(|e| panic!("hickory rejects our reply: {e}"));
    }
}

/// The Corefile parser never panics or hangs on any text (imports are resolved against a
/// directory with no files in it).
pub fn corefile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sextant_corefile::parse_str("Corefile", text, Path::new("/nonexistent-fuzz-dir"));
}

/// The hosts-file parser never panics, and what it stores is consistent: every address it
/// returns for a line's name is the line's address, every automatic PTR name maps back to an
/// address with that name, and reverse-name decoding of the address's own reverse name gives
/// the address back. Input is hosts-file text (invalid UTF-8 is replaced, as a lossy reader
/// would).
pub fn hosts_file(data: &[u8]) {
    use sextant::fuzzing::{parse_ip, Map, ParseOpts};
    use sextant_wire::Name;
    let text = String::from_utf8_lossy(data);
    let Ok(root) = Name::parse(".") else {
        return;
    };
    let opts = ParseOpts {
        origins: vec![root],
        auto_reverse: true,
    };
    let m = Map::parse(&text, &opts);
    let _ = m.len();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_ascii_whitespace();
        let Some(ip) = fields.next().and_then(parse_ip) else {
            continue;
        };
        for name in m.names(&ip) {
            match ip {
                std::net::IpAddr::V4(a) => assert!(m.v4(name).contains(&a), "PTR without A"),
                std::net::IpAddr::V6(a) => assert!(m.v6(name).contains(&a), "PTR without AAAA"),
            }
        }
        assert_eq!(
            Name::reverse_of(ip).reverse_address(),
            Some(ip),
            "reverse round trip"
        );
        for f in fields {
            if let Ok(n) = Name::parse(f) {
                let _ = (m.v4(&n), m.v6(&n));
            }
        }
    }
    // Reverse-name decoding of arbitrary names.
    for line in text.lines() {
        if let Ok(n) = Name::parse(line.trim()) {
            let _ = n.reverse_address();
        }
    }
}

/// The Kubernetes object decoder and index fold (`Index::apply_objects`, the path that turns
/// API JSON into index entries; watch events `{"type":..,"object":..}` are unwrapped) never
/// panics; the snapshot it builds is consistent (counts match what iterates, every ClusterIP
/// finds its service by address); applying the same objects again changes no count, and a
/// re-list with nothing in it empties the index.
pub fn kube_objects(data: &[u8]) {
    use serde_json::Value;
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let unwrap_event = |v: Value| match v {
        Value::Object(mut o) if o.contains_key("type") && o.contains_key("object") => {
            o.remove("object").unwrap_or(Value::Null)
        }
        v => v,
    };
    let objs: Vec<Value> = match v {
        Value::Array(a) => a.into_iter().map(unwrap_event).collect(),
        v => vec![unwrap_event(v)],
    };
    let idx = sextant_kube::Index::new_static();
    let _ = idx.apply_objects(objs.clone());
    let first = {
        let snap = idx.snapshot();
        let c = snap.counts();
        assert_eq!(c.services, snap.services().count(), "service count");
        for s in snap.services() {
            assert!(snap.service(&s.namespace, &s.name).is_some());
            for ip in s.cluster_ips() {
                assert!(
                    snap.services_by_ip(*ip).any(|x| x.name == s.name),
                    "ClusterIP {ip} does not find {}",
                    s.name
                );
            }
            for e in snap.endpoints(&s.namespace, &s.name) {
                let _ = e;
            }
        }
        c
    };
    let _ = idx.apply_objects(objs);
    assert_eq!(
        idx.snapshot().counts(),
        first,
        "applying again changed the counts"
    );
    let _ = idx.apply_objects(Vec::new());
    let c = idx.snapshot().counts();
    assert_eq!(
        (c.services, c.endpoints, c.pods),
        (0, 0, 0),
        "empty re-list left {c:?}"
    );
}

/// Corefile text that names device or kernel files (`hosts /dev/stdin` would block, `/dev/zero`
/// never ends) is skipped: reading those is not a parser bug.
fn names_special_files(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "dev/", "proc/", "sys/", "/dev", "/proc", "/sys", "stdin", "fd/",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// Parse and set up a whole Corefile the way `sextant -check` does (`Runtime::build`: parse
/// with imports, every plugin's setup, routing, listener keys), without binding anything or
/// running what setup schedules (a runtime is entered, never driven, then dropped, so no watch
/// or health check starts and nothing goes on the network). No panic, no hang; errors are
/// fine. Relative paths resolve against the current directory.
pub fn setup(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if names_special_files(text) {
        return;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    {
        let _guard = rt.enter();
        // An empty Corefile sets up with no listener at all: only the hash is checked.
        if let Some(hash) = sextant::fuzzing::build_generation(text) {
            assert_eq!(hash.len(), 128, "SHA512 hex");
        }
    }
    drop(rt);
}

/// DoH request decoding (`GET /dns-query?dns=`, `POST` bodies, other methods and paths): no
/// panic; a request it accepts holds at most 64 KiB that pass the transport request check, and
/// a GET's message re-encoded as base64url decodes to the same bytes. The first byte picks the
/// method, the bytes up to the first NUL are the request target, the rest is the body.
pub fn doh_request(data: &[u8]) {
    let _ = doh_request_inner(data);
}

fn doh_request_inner(data: &[u8]) -> Result<(), ()> {
    use sextant::fuzzing::{doh_request as decode, transport_request_ok};
    let Some((&m, rest)) = data.split_first() else {
        return Ok(());
    };
    let method = match m % 4 {
        0 => http::Method::GET,
        1 => http::Method::POST,
        2 => http::Method::PUT,
        _ => http::Method::HEAD,
    };
    let (target, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let Ok(uri) = http::Uri::try_from(target) else {
        return Ok(());
    };
    let Ok(packet) = decode(&method, &uri, body) else {
        return Ok(());
    };
    assert!(packet.len() <= 65536, "{} bytes accepted", packet.len());
    assert!(
        transport_request_ok(&packet),
        "accepted a message the check refuses"
    );
    assert_eq!(uri.path(), "/dns-query");
    if method == http::Method::GET {
        let again = format!("/dns-query?dns={}", b64url(&packet));
        let uri = http::Uri::try_from(again.as_str()).map_err(|_| ())?;
        assert_eq!(decode(&method, &uri, None).as_deref(), Ok(&packet[..]));
    }
    Ok(())
}

fn b64url(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | (x as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// gRPC `DnsPacket` bodies: the protobuf decoder never panics; what it decodes re-encodes and
/// decodes to the same message; the transport check never panics on the message inside.
pub fn grpc_packet(data: &[u8]) {
    use sextant::fuzzing::{decode_dns_packet, encode_dns_packet, transport_request_ok};
    if let Ok(msg) = decode_dns_packet(data) {
        let again = encode_dns_packet(&msg);
        assert_eq!(decode_dns_packet(&again).as_deref(), Ok(&msg[..]));
        let _ = transport_request_ok(&msg);
    }
}

/// The PROXY protocol header decoder (v1 and v2, streams and datagrams) and a UDP listener's
/// handling of it: no panic; a header lies inside the bytes and within the protocol's sizes
/// (v1 at most 107 bytes, v2 at most 16 + 4096); a stream's answer is the datagram answer for
/// the header's own bytes; any shorter prefix of a stream's header is still undecided, and a
/// stream still undecided never holds a header once complete; a datagram's DNS payload is a
/// suffix of it and its client is the header's source or the sender.
pub fn proxy_header(data: &[u8]) {
    use sextant::fuzzing::{proxy_datagram, proxy_header as decode, ProxyHeader};
    let whole = decode(data, true);
    assert_ne!(
        whole,
        Ok(ProxyHeader::Incomplete),
        "a complete input is decided"
    );
    let stream = decode(data, false);
    match &stream {
        Ok(ProxyHeader::Header { len, version, .. }) => {
            assert!(
                *len <= data.len(),
                "header of {len} bytes in {}",
                data.len()
            );
            let max = if *version == 1 { 107 } else { 16 + 4096 };
            assert!(*len <= max, "v{version} header of {len} bytes");
            assert_eq!(
                decode(&data[..*len], true),
                stream,
                "the header's own bytes"
            );
            assert_eq!(whole, stream, "more bytes after a header change nothing");
            for cut in [0, 1, 4, 5, 11, 12, 15, 16, len / 2, len.saturating_sub(1)] {
                if cut < *len {
                    let early = decode(&data[..cut], false);
                    assert!(
                        early == Ok(ProxyHeader::Incomplete),
                        "{cut} of {len} bytes decided early: {early:?}"
                    );
                }
            }
        }
        Ok(ProxyHeader::Incomplete) => {
            assert!(
                !matches!(whole, Ok(ProxyHeader::Header { .. })),
                "an undecided stream holds a header once complete: {whole:?}"
            );
        }
        Ok(ProxyHeader::None) => assert_eq!(whole, stream),
        Err(_) => assert!(whole.is_err(), "a stream error is a datagram error"),
    }
    // The UDP side, with and without sessions; the same bytes twice from one proxy.
    let peer = SocketAddr::from(([127, 0, 0, 1], 4000));
    for sessions in [false, true] {
        let mut state = None;
        for _ in 0..2 {
            if let Some((off, client)) = proxy_datagram(&mut state, sessions, data, peer) {
                assert!(off <= data.len());
                let from_header = match &whole {
                    Ok(ProxyHeader::Header { len, source, .. }) => {
                        assert_eq!(off, *len, "payload after the header");
                        *source
                    }
                    _ => {
                        assert_eq!(off, 0, "no header: the whole datagram");
                        None
                    }
                };
                assert!(
                    client == peer || Some(client) == from_header,
                    "client {client} from nowhere"
                );
            }
        }
    }
}
