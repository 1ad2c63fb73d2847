//! Malformed and hostile input against the real binary over UDP and TCP on 127.0.0.1: a seeded
//! random/mutated packet corpus (CI profile ~50 000 packets; `SEXTANT_MALFORMED_LONG=1` runs
//! 1 000 000) and every row of faults.md §5.5 as an explicit case with its expected answer.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use sextant_testkit::*;

const T: Duration = Duration::from_secs(3);
/// How long "no reply" is waited for.
const SILENT: Duration = Duration::from_millis(300);

fn start(corefile_body: &str) -> (Sextant, SocketAddr) {
    let port = free_port();
    let mut s = Sextant::start(
        Path::new(env!("CARGO_BIN_EXE_sextant")),
        &format!(".:{port} {{\n{corefile_body}\n}}\n"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.wait_dns(addr, Duration::from_secs(10)).unwrap();
    (s, addr)
}

fn whoami() -> (Sextant, SocketAddr) {
    start("    whoami")
}

// ---------------------------------------------------------------------------------------------
// Packet building

/// A header: id, flags, QD/AN/NS/AR counts.
fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = Vec::with_capacity(512);
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

/// Uncompressed wire form of a dotted name.
fn wname(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// Name from raw label lengths (label bytes are `a`).
fn labels(lens: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for &l in lens {
        out.push(l as u8);
        out.extend(std::iter::repeat_n(b'a', l));
    }
    out.push(0);
    out
}

fn question(out: &mut Vec<u8>, name: &[u8], qtype: u16, qclass: u16) {
    out.extend_from_slice(name);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
}

/// An OPT record: owner, payload size, version, flags, rdata.
fn opt(out: &mut Vec<u8>, owner: &[u8], size: u16, version: u8, flags: u16, rdata: &[u8]) {
    out.extend_from_slice(owner);
    out.extend_from_slice(&41u16.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.push(0);
    out.push(version);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// A plain query `example.org. A IN` with RD, id `id`, optionally with an OPT record.
fn plain(id: u16, edns: bool) -> Vec<u8> {
    let mut p = header(id, 0x0100, [1, 0, 0, edns as u16]);
    question(&mut p, &wname("example.org."), 1, 1);
    if edns {
        opt(&mut p, &[0], 1232, 0, 0, &[]);
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Reply checks on raw bytes (no parser of ours involved)

fn id_of(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn flags_of(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[2], b[3]])
}
fn count_of(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[4 + 2 * i], b[5 + 2 * i]])
}

/// Sends over UDP and over TCP; returns both replies (None = silence).
fn both(addr: SocketAddr, pkt: &[u8]) -> [Option<Vec<u8>>; 2] {
    [
        udp_raw(addr, pkt, SILENT).unwrap(),
        tcp_raw(addr, pkt, SILENT).unwrap(),
    ]
}

/// Asserts a header-level reply: QR set, the query's id, the given low rcode, and for errors no
/// answer/authority records (nothing echoed).
fn assert_rcode(what: &str, pkt: &[u8], reply: &Option<Vec<u8>>, rcode: u16) {
    let r = reply
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no reply, expected rcode {rcode}"));
    assert!(r.len() >= 12, "{what}: short reply {r:?}");
    assert_eq!(id_of(r), id_of(pkt), "{what}: id");
    assert_ne!(flags_of(r) & 0x8000, 0, "{what}: QR");
    assert_eq!(flags_of(r) & 0x000f, rcode, "{what}: rcode in {r:?}");
    if rcode == 0 {
        return;
    }
    assert_eq!(count_of(r, 1), 0, "{what}: answers echoed");
    assert_eq!(count_of(r, 2), 0, "{what}: authority echoed");
    assert!(count_of(r, 3) <= 1, "{what}: additional echoed");
    assert!(count_of(r, 0) <= 1, "{what}: questions echoed");
}

fn assert_formerr(what: &str, addr: SocketAddr, pkt: &[u8]) {
    for (proto, r) in ["udp", "tcp"].iter().zip(both(addr, pkt)) {
        assert_rcode(&format!("{what} over {proto}"), pkt, &r, 1);
    }
}

fn assert_silent(what: &str, addr: SocketAddr, pkt: &[u8]) {
    for (proto, r) in ["udp", "tcp"].iter().zip(both(addr, pkt)) {
        assert!(r.is_none(), "{what} over {proto}: unexpected reply {r:?}");
    }
}

/// The server still answers a normal query correctly over both transports.
fn assert_healthy(s: &mut Sextant, addr: SocketAddr) {
    assert!(s.exited().is_none(), "server exited:\n{}", s.output());
    for proto in ["udp", "tcp"] {
        let q = Query::new("Health.Example.ORG.", RecordType::A).edns(1232);
        let r = if proto == "udp" {
            udp(addr, &q, T)
        } else {
            tcp(addr, &q, T)
        }
        .unwrap_or_else(|e| panic!("{proto}: healthy query failed: {e}"));
        assert_eq!(r.id(), q.get_id());
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.flags(), "qr,aa,rd");
        assert_eq!(
            r.question().unwrap(),
            "Health.Example.ORG. IN A",
            "case kept"
        );
        assert_eq!(r.additional().len(), 2, "{:?}", r.additional());
        assert_eq!(r.edns().unwrap().version, 0);
    }
    assert_eq!(s.count_lines("panic"), 0, "{}", s.output());
}

// ---------------------------------------------------------------------------------------------
// §5.5 rows

#[test]
fn under_twelve_bytes_is_dropped() {
    let (mut s, addr) = whoami();
    let mut rng = Rng::seeded(11);
    for n in 0..12usize {
        for fill in [0u8, 0xff] {
            let mut p = vec![fill; n];
            assert!(
                udp_raw(addr, &p, Duration::from_millis(100))
                    .unwrap()
                    .is_none(),
                "{n} bytes of {fill:#x}"
            );
            p.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
            assert!(udp_raw(addr, &p, Duration::from_millis(100))
                .unwrap()
                .is_none());
        }
        if n > 0 {
            // Over TCP: no reply, and the connection stays usable.
            let mut c = TcpConn::connect(addr, T).unwrap();
            c.send(&vec![0u8; n]).unwrap();
            let q = plain(0x4242, false);
            c.send(&q).unwrap();
            let r = c.recv(T).unwrap();
            assert_eq!(id_of(&r), 0x4242, "{n}-byte message got a reply");
        }
    }
    assert_healthy(&mut s, addr);
}

#[test]
fn compression_loops_and_bad_pointers_are_formerr() {
    let (mut s, addr) = whoami();
    let q = |name: &[u8]| {
        let mut p = header(0x1001, 0x0100, [1, 0, 0, 0]);
        question(&mut p, name, 1, 1);
        p
    };
    // Pointer to itself (offset 12).
    assert_formerr("self pointer", addr, &q(&[0xc0, 12]));
    // Two-cycle: 12 -> 14 -> 12.
    assert_formerr("2-cycle", addr, &q(&[0xc0, 14, 0xc0, 12]));
    // Label then a pointer back to its own start: a.a.a.... forever.
    assert_formerr("label loop", addr, &q(&[1, b'a', 0xc0, 12]));
    // Into the header.
    for target in [0u8, 2, 5, 11] {
        assert_formerr("into header", addr, &q(&[0xc0, target]));
    }
    // Beyond the end, and the largest possible offset.
    assert_formerr("beyond end", addr, &q(&[0xc0, 200]));
    assert_formerr("max offset", addr, &q(&[0xff, 0xff]));
    // Pointer cut in half at the end of the packet.
    let mut p = header(0x1002, 0x0100, [1, 0, 0, 0]);
    p.push(0xc0);
    assert_formerr("half pointer", addr, &p);

    // Backward chains kept in an unknown-type record, used by the next record's owner.
    let chain = |hops: usize, end_in_header: bool| {
        let mut p = header(0x1003, 0x0100, [1, 0, 0, 2]);
        question(&mut p, &wname("chain.example."), 1, 1);
        // Record 1: owner root, TYPE65280, rdata = the chain.
        p.extend_from_slice(&[0, 0xff, 0x00, 0, 1, 0, 0, 0, 0]);
        let rdlen_at = p.len();
        p.extend_from_slice(&[0, 0]);
        let start = p.len();
        // First element ends the chain: in the header, or at the question name.
        p.extend_from_slice(&[0xc0, if end_in_header { 4 } else { 12 }]);
        for i in 1..hops {
            let prev = start + 2 * (i - 1);
            p.extend_from_slice(&[0xc0 | (prev >> 8) as u8, prev as u8]);
        }
        let last = start + 2 * (hops - 1);
        let rdlen = (p.len() - start) as u16;
        p[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        // Record 2: owner = pointer to the last element, TYPE65280, empty rdata.
        p.extend_from_slice(&[0xc0 | (last >> 8) as u8, last as u8]);
        p.extend_from_slice(&[0xff, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        p
    };
    assert_formerr("100-hop chain into the header", addr, &chain(100, true));
    assert_formerr("130-hop chain (over the hop cap)", addr, &chain(130, false));
    assert_formerr("2000-hop chain", addr, &chain(2000, false));
    // A 100-hop chain that ends at a real name is legal DNS (miekg allows 126 pointers): answered.
    for r in both(addr, &chain(100, false)) {
        assert_rcode("100-hop legal chain", &chain(100, false), &r, 0);
    }
    assert_healthy(&mut s, addr);
}

#[test]
fn bad_labels_and_long_names_are_formerr() {
    let (mut s, addr) = whoami();
    let q = |name: &[u8]| {
        let mut p = header(0x2001, 0x0100, [1, 0, 0, 0]);
        question(&mut p, name, 1, 1);
        p
    };
    // Label "lengths" 64..=255: 0x40 and 0x80 label types, and 0xc0.. pointers that lead
    // nowhere.
    for len in 64..=255usize {
        let mut name = vec![len as u8];
        name.extend(std::iter::repeat_n(b'a', len.min(80)));
        name.push(0);
        assert_formerr(&format!("label {len:#x}"), addr, &q(&name));
    }
    // 0x40 / 0x80 label types followed by a plausible label.
    assert_formerr("0x41", addr, &q(&[0x41, b'a', 0]));
    assert_formerr("0x81", addr, &q(&[0x81, b'a', 0]));
    // 255 octets is the limit: accepted. 256 is not.
    let ok = labels(&[63, 63, 63, 61]);
    assert_eq!(ok.len(), 255);
    for r in both(addr, &q(&ok)) {
        assert_rcode("255-octet name", &q(&ok), &r, 0);
    }
    let long = labels(&[63, 63, 63, 62]);
    assert_eq!(long.len(), 256);
    assert_formerr("256-octet name", addr, &q(&long));
    assert_formerr("321-octet name", addr, &q(&labels(&[63; 5])));
    // 127 one-octet labels fit (255 octets); 128 do not.
    for r in both(addr, &q(&labels(&[1; 127]))) {
        assert_rcode("127 labels", &q(&labels(&[1; 127])), &r, 0);
    }
    assert_formerr("128 labels", addr, &q(&labels(&[1; 128])));
    // A name made long through compression: a 200-octet name, then 100 octets + pointer.
    let mut p = header(0x2002, 0x0100, [1, 0, 0, 1]);
    question(&mut p, &labels(&[50, 50, 50, 46]), 1, 1);
    let mut owner = labels(&[60]);
    owner.pop();
    owner.extend_from_slice(&[0xc0, 12]);
    p.extend_from_slice(&owner);
    p.extend_from_slice(&[0xff, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_formerr("long through compression", addr, &p);
    // Missing root label: the name runs to the end of the packet.
    let mut p = header(0x2003, 0x0100, [1, 0, 0, 0]);
    p.extend_from_slice(&[3, b'f', b'o', b'o']);
    assert_formerr("no root label", addr, &p);
    assert_healthy(&mut s, addr);
}

#[test]
fn question_counts_other_than_one_are_formerr() {
    let (mut s, addr) = whoami();
    // QDCOUNT=0, header only; and with an OPT (the COOKIE-only exception is not implemented:
    // CoreDNS's accept filter also answers FORMERR).
    assert_formerr("qdcount 0", addr, &header(0x3001, 0x0100, [0, 0, 0, 0]));
    let mut p = header(0x3002, 0x0100, [0, 0, 0, 1]);
    opt(&mut p, &[0], 1232, 0, 0, &[]);
    assert_formerr("qdcount 0 with OPT", addr, &p);
    // QDCOUNT 2..65535 with one question.
    for qd in [2u16, 3, 100, 65535] {
        let mut p = header(0x3003, 0x0100, [qd, 0, 0, 0]);
        question(&mut p, &wname("example.org."), 1, 1);
        assert_formerr(&format!("qdcount {qd}, one question"), addr, &p);
    }
    // Two complete questions (RFC 9619).
    let mut p = header(0x3004, 0x0100, [2, 0, 0, 0]);
    question(&mut p, &wname("a.example.org."), 1, 1);
    question(&mut p, &wname("b.example.org."), 28, 1);
    assert_formerr("two questions", addr, &p);
    // QDCOUNT=1, no question.
    assert_formerr(
        "qdcount 1, none",
        addr,
        &header(0x3005, 0x0100, [1, 0, 0, 0]),
    );
    // Section counts 65535 with empty sections: each alone and all at once.
    for counts in [
        [1, 65535, 0, 0],
        [1, 0, 65535, 0],
        [1, 0, 0, 65535],
        [65535, 65535, 65535, 65535],
    ] {
        let mut p = header(0x3006, 0x0100, counts);
        question(&mut p, &wname("example.org."), 1, 1);
        let started = Instant::now();
        assert_formerr(&format!("counts {counts:?}"), addr, &p);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    // Trailing garbage after a complete question.
    let mut p = plain(0x3007, false);
    p.extend_from_slice(b"garbage");
    assert_formerr("trailing bytes", addr, &p);
    assert_healthy(&mut s, addr);
}

#[test]
fn opt_abuse_is_formerr_and_never_echoed() {
    let (mut s, addr) = whoami();
    let base = |ar: u16| {
        let mut p = header(0x4001, 0x0100, [1, 0, 0, ar]);
        question(&mut p, &wname("example.org."), 1, 1);
        p
    };
    let mut p = base(2);
    opt(&mut p, &[0], 1232, 0, 0, &[]);
    opt(&mut p, &[0], 4096, 0, 0, &[]);
    assert_formerr("two OPTs", addr, &p);
    let mut p = base(1);
    opt(&mut p, &wname("example.org."), 1232, 0, 0, &[]);
    assert_formerr("OPT not at root", addr, &p);
    // OPT in the answer section.
    let mut p = header(0x4002, 0x0100, [1, 1, 0, 0]);
    question(&mut p, &wname("example.org."), 1, 1);
    opt(&mut p, &[0], 1232, 0, 0, &[]);
    assert_formerr("OPT in answer", addr, &p);
    // OPT in the authority section.
    let mut p = header(0x4003, 0x0100, [1, 0, 1, 0]);
    question(&mut p, &wname("example.org."), 1, 1);
    opt(&mut p, &[0], 1232, 0, 0, &[]);
    assert_formerr("OPT in authority", addr, &p);
    // Option length past the end of the RDATA.
    let mut p = base(1);
    opt(&mut p, &[0], 1232, 0, 0, &[0, 10, 0, 40, 1, 2, 3, 4]);
    assert_formerr("option length past end", addr, &p);
    // Half an option header.
    let mut p = base(1);
    opt(&mut p, &[0], 1232, 0, 0, &[0, 10, 0]);
    assert_formerr("half option header", addr, &p);
    // RDLENGTH past the end of the packet.
    let mut p = base(1);
    opt(&mut p, &[0], 1232, 0, 0, &[]);
    let n = p.len();
    p[n - 2..].copy_from_slice(&200u16.to_be_bytes());
    assert_formerr("OPT rdlength past end", addr, &p);

    // 1 000 well-formed unknown options (RDLENGTH 65 000): a normal answer, nothing echoed.
    let mut rdata = Vec::new();
    for i in 0..1000u16 {
        rdata.extend_from_slice(&(60000 + (i % 100)).to_be_bytes());
        rdata.extend_from_slice(&61u16.to_be_bytes());
        rdata.extend(std::iter::repeat_n(0xaa, 61));
    }
    assert_eq!(rdata.len(), 65000);
    let mut p = header(0x4004, 0x0100, [1, 0, 0, 1]);
    question(&mut p, &wname("o.example.org."), 1, 1);
    opt(&mut p, &[0], 1232, 0, 0, &rdata);
    // Too big for one UDP datagram on some stacks; TCP carries it (prefix 65 0xx fits u16).
    let mut c = TcpConn::connect(addr, T).unwrap();
    c.send(&p).unwrap();
    let r = c.recv_reply(T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    let e = r.edns().unwrap();
    assert!(e.options.is_empty(), "options echoed: {:?}", e.options);
    assert!(r.len() < 200, "{} bytes", r.len());
    // A smaller variant over UDP.
    let mut p = header(0x4005, 0x0100, [1, 0, 0, 1]);
    question(&mut p, &wname("o.example.org."), 1, 1);
    opt(&mut p, &[0], 1232, 0, 0, &rdata[..65 * 100]);
    let r = udp(addr, &p, T).unwrap();
    assert_eq!(r.rcode_name(), "NOERROR");
    assert!(r.edns().unwrap().options.is_empty());
    assert_healthy(&mut s, addr);
}

#[test]
fn edns_versions_above_zero_are_badvers() {
    let (mut s, addr) = whoami();
    for v in 1..=255u8 {
        let q = Query::new("example.org.", RecordType::SOA)
            .edns(1232)
            .edns_version(v)
            .edns_option(100, b"unknown");
        let proto_tcp = v % 16 == 0;
        let r = if proto_tcp {
            tcp(addr, &q, T)
        } else {
            udp(addr, &q, T)
        }
        .unwrap_or_else(|e| panic!("version {v}: {e}"));
        assert_eq!(r.rcode_name(), "BADVERS", "version {v}");
        assert_eq!(r.id(), q.get_id());
        let e = r.edns().expect("OPT in a BADVERS reply");
        assert_eq!(e.version, 0, "version {v}");
        assert_eq!(e.ext_rcode, 1);
        assert!(e.options.is_empty(), "option echoed");
        assert!(r.answers().is_empty() && r.authority().is_empty());
    }
    assert_healthy(&mut s, addr);
}

#[test]
fn opcodes_other_than_query_are_notimp() {
    let (mut s, addr) = whoami();
    // NOTIFY (4) passes miekg's accept filter like QUERY: the plugins see it (whoami answers),
    // and a body that does not parse or has no question is FORMERR.
    let mut m = header(0x5204, 4 << 11, [1, 2, 0, 0]);
    m.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
    for r in both(addr, &m) {
        assert_rcode("malformed NOTIFY", &m, &r, 1);
    }
    let h = header(0x5104, 4 << 11, [0, 0, 0, 0]);
    for r in both(addr, &h) {
        assert_rcode("header-only NOTIFY", &h, &r, 1);
    }
    let mut p = header(0x5004, 4 << 11, [1, 0, 0, 0]);
    question(&mut p, &wname("example.org."), 6, 1);
    for r in both(addr, &p) {
        assert_rcode("NOTIFY to whoami", &p, &r, 0);
    }
    for op in (1..=15u8).filter(|&op| op != 4) {
        // With RD, CD, AD and AA set in the query: none of them may come back.
        let mut p = header(0x5000 + op as u16, 0x0100, [1, 0, 0, 0]);
        p[2] |= (op << 3) | 0x04; // opcode, AA
        p[3] |= 0x30; // AD, CD
        question(&mut p, &wname("example.org."), 6, 1);
        for (proto, r) in ["udp", "tcp"].iter().zip(both(addr, &p)) {
            let what = format!("opcode {op} over {proto}");
            assert_rcode(&what, &p, &r, 4);
            let f = flags_of(r.as_ref().unwrap());
            assert_eq!((f >> 11) & 0xf, op as u16, "{what}: opcode echoed");
            assert_eq!(
                f & 0x07f0,
                0,
                "{what}: flags {f:#06x} (AA/TC/RD/RA/Z/AD/CD)"
            );
        }
        // A body that does not parse: CoreDNS (miekg's accept filter) looks at the opcode
        // before the body, so this is NOTIMP too, not FORMERR.
        let mut m = header(0x5200 + op as u16, (op as u16) << 11, [1, 2, 0, 0]);
        m.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
        for r in both(addr, &m) {
            assert_rcode(&format!("malformed opcode {op}"), &m, &r, 4);
        }
        // Header only (genreport `opcode`: +header-only +opcode=15).
        let h = header(0x5100 + op as u16, (op as u16) << 11, [0, 0, 0, 0]);
        for r in both(addr, &h) {
            assert_rcode(&format!("header-only opcode {op}"), &h, &r, 4);
        }
    }
    assert_healthy(&mut s, addr);
}

#[test]
fn responses_get_no_reply() {
    let (mut s, addr) = whoami();
    let mut p = plain(0x6001, true);
    p[2] |= 0x80;
    assert_silent("QR=1", addr, &p);
    // A malformed response is ignored too (no FORMERR ping-pong).
    let mut p = header(0x6002, 0x8100, [1, 0, 0, 0]);
    p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_silent("malformed QR=1", addr, &p);
    // A response with an answer, as a reflected reply would look.
    let r = udp(addr, &Query::new("example.org.", RecordType::A), T).unwrap();
    assert_silent("reflected reply", addr, r.bytes());
    assert_healthy(&mut s, addr);
}

#[test]
fn odd_classes_and_types_get_a_defined_answer() {
    let (mut s, addr) = whoami();
    // Non-IN classes without `chaos`: REFUSED (CoreDNS core/dnsserver/server.go).
    for (class, name) in [(3u16, "CH"), (4, "HS"), (254, "NONE"), (255, "ANY")] {
        let q = Query::new("version.bind.", RecordType::TXT).class(class);
        for proto in ["udp", "tcp"] {
            let r = if proto == "udp" {
                udp(addr, &q, T)
            } else {
                tcp(addr, &q, T)
            }
            .unwrap_or_else(|e| panic!("class {name} over {proto}: {e}"));
            assert_eq!(r.rcode_name(), "REFUSED", "class {name} over {proto}");
            assert!(r.answers().is_empty());
            assert_eq!(r.flags(), "qr,rd", "class {name}");
        }
    }
    // Types: CoreDNS hands these to the plugin chain like any other type (no server-level
    // special case); with `whoami` that is a NOERROR answer for every one of them.
    for (qtype, name) in [
        (0u16, "TYPE0"),
        (65535, "TYPE65535"),
        (252, "AXFR"),
        (251, "IXFR"),
        (666, "TYPE666"),
        (255, "ANY"),
    ] {
        let mut p = header(0x7000 ^ qtype, 0x0100, [1, 0, 0, 0]);
        question(&mut p, &wname("example.org."), qtype, 1);
        for (proto, r) in ["udp", "tcp"].iter().zip(both(addr, &p)) {
            let r = r.unwrap_or_else(|| panic!("{name} over {proto}: silence"));
            assert_eq!(id_of(&r), id_of(&p));
            assert_eq!(
                flags_of(&r) & 0x800f,
                0x8000,
                "{name} over {proto}: NOERROR"
            );
            assert_eq!(count_of(&r, 0), 1);
        }
    }
    assert_healthy(&mut s, addr);
}

#[test]
fn tcp_framing_edge_cases() {
    let (mut s, addr) = whoami();
    // Length 0: the connection is closed, nothing sent.
    let mut c = TcpConn::connect(addr, T).unwrap();
    c.send_raw(&[0, 0]).unwrap();
    assert!(c.is_closed(Duration::from_secs(1)), "length 0 not closed");

    // Length 1: no reply, connection still serves the next message.
    let mut c = TcpConn::connect(addr, T).unwrap();
    c.send_raw(&[0, 1, 0x42]).unwrap();
    c.send(&plain(0x8001, false)).unwrap();
    assert_eq!(id_of(&c.recv(T).unwrap()), 0x8001);

    // Two messages in one segment: both answered.
    let mut c = TcpConn::connect(addr, T).unwrap();
    let mut seg = Vec::new();
    for id in [0x8002u16, 0x8003] {
        let q = plain(id, true);
        seg.extend_from_slice(&(q.len() as u16).to_be_bytes());
        seg.extend_from_slice(&q);
    }
    c.send_raw(&seg).unwrap();
    let mut ids = [id_of(&c.recv(T).unwrap()), id_of(&c.recv(T).unwrap())];
    ids.sort();
    assert_eq!(ids, [0x8002, 0x8003]);

    // One ~512-byte message split over 514 one-byte segments (prefix split too).
    let q = Query::new("split.example.org.", RecordType::A)
        .id(0x8004)
        .edns(1232)
        .edns_option(65001, &[0x55; 460])
        .to_bytes();
    assert!(q.len() >= 500, "{}", q.len());
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let mut c = TcpConn::connect(addr, T).unwrap();
    let started = Instant::now();
    for b in &framed {
        c.send_raw(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    assert!(started.elapsed() < Duration::from_millis(2500));
    let r = c.recv_reply(T).unwrap();
    assert_eq!((r.id(), r.rcode_name().as_str()), (0x8004, "NOERROR"));

    // Length 65535 with 10 bytes, then idle: closed by the 3 s read timeout, not before ~3 s.
    let mut c = TcpConn::connect(addr, T).unwrap();
    let started = Instant::now();
    c.send_raw(&[0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .unwrap();
    assert!(c.is_closed(Duration::from_secs(6)), "not closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2700) && took < Duration::from_millis(4500),
        "closed after {took:?}"
    );

    // Half a length prefix, then idle: the same read timeout.
    let mut c = TcpConn::connect(addr, T).unwrap();
    let started = Instant::now();
    c.send_raw(&[0x00]).unwrap();
    assert!(c.is_closed(Duration::from_secs(6)));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2700) && took < Duration::from_millis(4500));
    assert_healthy(&mut s, addr);
}

/// `chaos` with many authors gives an `authors.bind. CH TXT` answer of a few KiB.
fn big_answer_server() -> (Sextant, SocketAddr) {
    let authors: Vec<String> = (0..150)
        .map(|i| format!("author-{i:03}-with-a-longer-name"))
        .collect();
    start(&format!(
        "    chaos Sextant-1 {}\n    whoami",
        authors.join(" ")
    ))
}

#[test]
fn huge_answers_are_truncated_over_udp() {
    let (mut s, addr) = big_answer_server();
    let q = Query::new("authors.bind.", RecordType::TXT).class(3);
    // TCP: the whole answer, no TC.
    let full = tcp(addr, &q, T).unwrap();
    assert_eq!(full.rcode_name(), "NOERROR");
    assert_eq!(full.answers().len(), 150);
    assert!(!full.truncated());
    assert!(full.len() > 4000, "{}", full.len());
    // UDP without EDNS: at most 512 bytes with TC.
    let r = udp(addr, &q, T).unwrap();
    assert!(r.len() <= 512, "{}", r.len());
    assert!(r.truncated());
    assert!(r.edns().is_none());
    // UDP with EDNS 4096: capped at 1232 with TC, OPT kept with the client's size.
    let r = udp(addr, &q.clone().edns(4096), T).unwrap();
    assert!(r.len() <= 1232, "{}", r.len());
    assert!(r.truncated());
    assert_eq!(r.edns().unwrap().udp_size, 4096);
    // UDP with EDNS below 512: treated as 512.
    let r = udp(addr, &q.clone().edns(100), T).unwrap();
    assert!(r.len() <= 512 && r.truncated());
    let started = Instant::now();
    for _ in 0..200 {
        udp(addr, &q, T).unwrap();
    }
    eprintln!("200 truncated big answers in {:?}", started.elapsed());
    assert_healthy(&mut s, addr);
}

// ---------------------------------------------------------------------------------------------
// Seeded random and mutated corpus

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// Valid queries the mutator starts from.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let names = [
        "example.org.",
        "a.b.c.d.e.f.g.example.",
        "kubernetes.default.svc.cluster.local.",
        ".",
        "xn--bcher-kva.example.",
        "_http._tcp.svc.ns.svc.cluster.local.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::PTR,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::SOA,
    ];
    for (i, n) in names.iter().enumerate() {
        for (j, t) in types.iter().enumerate() {
            let mut q = Query::new(n, *t);
            if (i + j) % 2 == 0 {
                q = q.edns(1232);
            }
            if (i + j) % 3 == 0 {
                q = q
                    .edns(4096)
                    .do_bit()
                    .edns_option(10, &[1, 2, 3, 4, 5, 6, 7, 8]);
            }
            out.push(q.to_bytes());
        }
    }
    // Hand-made shapes: compression in the question's record, OPT with options.
    let mut p = header(1, 0x0100, [1, 0, 0, 2]);
    question(&mut p, &wname("www.example.org."), 1, 1);
    p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    opt(&mut p, &[0], 1232, 0, 0x8000, &[0, 8, 0, 4, 0, 1, 24, 0]);
    out.push(p);
    out
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.chance(0.2) {
        // Pure random, 12..=512 bytes.
        let n = 12 + below(rng, 501);
        return (0..n).map(|_| rng.next_u64() as u8).collect();
    }
    let mut p = seeds[below(rng, seeds.len())].clone();
    let rounds = 1 + below(rng, 4);
    for _ in 0..rounds {
        if p.is_empty() {
            p.push(0);
        }
        let at = below(rng, p.len());
        match below(rng, 9) {
            0 => p[at] ^= 1 << below(rng, 8),
            1 => p[at] = rng.next_u64() as u8,
            2 => p.truncate(at.max(12)),
            3 => {
                let extra: Vec<u8> = (0..1 + below(rng, 16))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                let at = at.min(p.len());
                p.splice(at..at, extra);
            }
            4 if p.len() >= 12 => {
                let c = [0u16, 1, 2, 3, 0xffff, rng.next_u64() as u16][below(rng, 6)];
                let i = 4 + 2 * below(rng, 4);
                p[i..i + 2].copy_from_slice(&c.to_be_bytes());
            }
            5 if at + 1 < p.len() => {
                let target = below(rng, p.len() + 20) as u16;
                p[at] = 0xc0 | (target >> 8) as u8;
                p[at + 1] = target as u8;
            }
            6 if p.len() >= 4 => {
                // Flag bits: opcode, QR, Z, rcode.
                p[2] ^= 1 << below(rng, 8);
                p[3] ^= 1 << below(rng, 8);
            }
            7 => {
                let l = [0u8, 63, 64, 0x80, 0xc0, 0xff][below(rng, 6)];
                p[at] = l;
            }
            _ => {
                let n = below(rng, 64);
                p.extend((0..n).map(|_| rng.next_u64() as u8));
            }
        }
    }
    if p.len() > 4096 {
        p.truncate(4096);
    }
    p
}

#[derive(Default)]
struct CorpusStats {
    sent: usize,
    replies: usize,
    rcodes: BTreeMap<u16, usize>,
}

/// What was sent with each id, to judge the reply.
#[derive(Clone, Copy, Default)]
struct Sent {
    len: usize,
    qr: bool,
    replies: u8,
}

fn check_reply(table: &mut [Sent], r: &[u8], stats: &mut CorpusStats, max: usize) {
    assert!(r.len() >= 12, "short reply {r:?}");
    assert!(r.len() <= max, "reply of {} bytes over {max}", r.len());
    let sent = &mut table[id_of(r) as usize];
    assert!(sent.len >= 12, "reply to a {}-byte packet", sent.len);
    assert!(!sent.qr, "reply to a QR=1 packet: {r:?}");
    sent.replies += 1;
    assert_eq!(sent.replies, 1, "two replies to one packet");
    let f = flags_of(r);
    assert_ne!(f & 0x8000, 0, "QR clear in reply");
    assert_eq!(f & 0x0040, 0, "Z set in reply");
    let reply = Reply::parse(r.to_vec())
        .unwrap_or_else(|e| panic!("reply does not parse with hickory: {e}: {r:?}"));
    let rc = reply.rcode_value();
    assert!(
        matches!(rc, 0 | 1 | 3 | 4 | 5 | 16),
        "unexpected rcode {rc} in {r:?}"
    );
    stats.replies += 1;
    *stats.rcodes.entry(rc).or_default() += 1;
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the state field.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn random_and_mutated_corpus() {
    let long = std::env::var_os("SEXTANT_MALFORMED_LONG").is_some();
    let total: usize = if long { 1_000_000 } else { 50_000 };
    let tcp_share = total / 10;
    let (mut s, addr) = whoami();
    let seeds = seeds();
    let mut rng = Rng::seeded(0x5e47_a47f);
    let mut stats = CorpusStats::default();
    let ticks0 = cpu_ticks(s.pid());
    let started = Instant::now();

    // UDP: batches of 128 from one socket, then drain until 15 ms of quiet.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    let mut table = vec![Sent::default(); 65536];
    let mut seq: usize = 0;
    let mut buf = vec![0u8; 65535];
    while seq < total - tcp_share {
        for _ in 0..128 {
            let mut p = mutate(&mut rng, &seeds);
            let id = (seq % 65536) as u16;
            if p.len() >= 2 {
                p[..2].copy_from_slice(&id.to_be_bytes());
            }
            table[id as usize] = Sent {
                len: p.len(),
                qr: p.len() > 2 && p[2] & 0x80 != 0,
                replies: 0,
            };
            let _ = sock.send(&p);
            seq += 1;
            stats.sent += 1;
        }
        sock.set_read_timeout(Some(Duration::from_millis(15)))
            .unwrap();
        while let Ok(n) = sock.recv(&mut buf) {
            check_reply(&mut table, &buf[..n], &mut stats, 1232);
        }
    }
    let udp_time = started.elapsed();

    // TCP: 50 pipelined packets per connection, then FIN; read until the server closes.
    while seq < total {
        let mut c = TcpConn::connect(addr, T).unwrap();
        for _ in 0..50 {
            let mut p = mutate(&mut rng, &seeds);
            let id = (seq % 65536) as u16;
            p[..2].copy_from_slice(&id.to_be_bytes());
            table[id as usize] = Sent {
                len: p.len(),
                qr: p[2] & 0x80 != 0,
                replies: 0,
            };
            c.send(&p).unwrap();
            seq += 1;
            stats.sent += 1;
        }
        c.shutdown_write().unwrap();
        loop {
            match c.recv(T) {
                Ok(r) => check_reply(&mut table, &r, &mut stats, 65535),
                Err(Error::Closed) => break,
                Err(e) => panic!("TCP corpus: {e}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let ticks = cpu_ticks(s.pid()) - ticks0;
    let cpu_per_packet = Duration::from_millis(ticks * 10) / stats.sent as u32;
    eprintln!(
        "corpus: {} packets ({} UDP in {udp_time:?}, {tcp_share} TCP), {} replies, rcodes {:?}, \
         total {elapsed:?}, server CPU {} ms = {cpu_per_packet:?}/packet",
        stats.sent,
        total - tcp_share,
        stats.replies,
        stats.rcodes,
        ticks * 10
    );
    assert!(stats.replies > stats.sent / 10, "too few replies");
    assert!(
        stats.rcodes.get(&1).copied().unwrap_or(0) > 0,
        "no FORMERR seen"
    );
    assert!(
        stats.rcodes.get(&0).copied().unwrap_or(0) > 0,
        "no NOERROR seen"
    );
    assert!(
        cpu_per_packet < Duration::from_millis(1),
        "{cpu_per_packet:?} CPU per packet"
    );
    assert_healthy(&mut s, addr);
}

/// The protocol conformance matrix (conformance/run.py, needs python3 with dnspython and Debian
/// `knot`): Sextant and Knot side by side; fails on a Sextant deviation not listed as accepted.
#[test]
fn conformance_matrix_against_knot() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/run.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg("--sextant")
        .arg(env!("CARGO_BIN_EXE_sextant"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "conformance matrix failed:\n{stdout}{stderr}\n(its Python packages: python3 -m pip install -r requirements-test.txt, or run ./test.sh)"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
