//! Fuzz target functions for Sextant. Each takes arbitrary bytes and panics only on a real bug
//! (a crash in the code under test, or an invariant broken). The libFuzzer binaries in
//! `fuzz_targets/` call them; `tests/replay.rs` replays the checked-in corpus and every past
//! crash in `regressions/` through them on stable Rust.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use hickory_proto::op::Message as HMessage;
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use sextant::plugin::Proto;
use sextant::server::site::Site;
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
];

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
            assert!(
                t.len() <= 512 || !tc,
                "limited encoding is {} bytes",
                t.len()
            );
            let back = Message::parse(&t).unwrap_or_else(|e| panic!("truncated re-parse: {e}"));
            assert_eq!(back.header.tc, tc || m.header.tc);
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
}

struct Served {
    rt: tokio::runtime::Runtime,
    site: Arc<Site>,
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
            let cf = sextant_corefile::parse_str("Corefile", text, Path::new("."))
                .expect("fuzz Corefile parses");
            let gen = match sextant::server::config::build(&cf, 53) {
                Ok(g) => g,
                Err(e) => panic!("fuzz Corefile does not set up: {e:?}"),
            };
            gen.sites.into_values().next().expect("one listen address")
        });
        Served { rt, site }
    })
}

/// The whole request path (`Site::handle`: parse, accept checks, routing, the plugin chain
/// `errors any chaos whoami`, EDNS finishing and truncation) over UDP and TCP: no panic; a
/// reply, when there is one, parses, answers the query's id with QR set, Z clear, and fits the
/// transport's size limit.
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
            assert!(r.len() <= 1232, "UDP reply of {} bytes", r.len());
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
