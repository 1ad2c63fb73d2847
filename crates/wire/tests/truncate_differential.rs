//! Differential check of the encoder's truncation (miekg/dns `Msg.Truncate`: as many records as
//! fit, in order, compression counted, the first record that does not fit ends the message)
//! against NLnet Labs' `domain` crate, whose `MessageBuilder` with a push limit and a
//! `TreeCompressor` adds records by the same rule: a push that would exceed the limit fails
//! and leaves the message as it was. Random replies of A, AAAA, CNAME, NS, MX, SRV and TXT
//! records over a small pool of names (so compression matters), cut at random sizes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use domain::base::iana::{Class as DClass, Rtype};
use domain::base::message_builder::{MessageBuilder, PushError, TreeCompressor};
use domain::base::name::Name as DName;
use domain::base::{Record as DRecord, Ttl};
use domain::rdata::{Aaaa, Cname, Mx, Ns, Srv, Txt, A};
use sextant_wire::{Edns, Message, Name, RData, RType, Record, Srv as WSrv};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const NAMES: [&str; 8] = [
    "big.example.org.",
    "a.big.example.org.",
    "b.example.org.",
    "mail.example.org.",
    "x.y.z.example.net.",
    "example.org.",
    "web.shop.svc.cluster.local.",
    "a-much-longer-label-to-take-room.example.org.",
];

fn random_record(rng: &mut Rng) -> Record {
    let owner = Name::parse(NAMES[rng.below(NAMES.len())]).unwrap();
    let target = Name::parse(NAMES[rng.below(NAMES.len())]).unwrap();
    let data = match rng.below(7) {
        0 => RData::A(Ipv4Addr::from(rng.next() as u32)),
        1 => RData::Aaaa(Ipv6Addr::from(
            rng.next() as u128 | ((rng.next() as u128) << 64),
        )),
        2 => RData::Cname(target),
        3 => RData::Ns(target),
        4 => RData::Mx {
            preference: rng.below(100) as u16,
            exchange: target,
        },
        5 => RData::Srv(WSrv {
            priority: 1,
            weight: 2,
            port: 80,
            target,
        }),
        _ => RData::Txt(vec![vec![b't'; rng.below(120)]]),
    };
    Record::new(owner, 300, data)
}

fn dname(n: &Name) -> DName<Vec<u8>> {
    DName::from_str(&n.to_string()).unwrap()
}

/// Pushes one record into a `domain` section builder.
macro_rules! push {
    ($b:expr, $r:expr) => {{
        let r: &Record = $r;
        let owner = dname(&r.name);
        let ttl = Ttl::from_secs(r.ttl);
        let c = DClass::IN;
        match &r.data {
            RData::A(a) => $b.push(DRecord::new(owner, c, ttl, A::new(*a))),
            RData::Aaaa(a) => $b.push(DRecord::new(owner, c, ttl, Aaaa::new(*a))),
            RData::Cname(t) => $b.push(DRecord::new(owner, c, ttl, Cname::new(dname(t)))),
            RData::Ns(t) => $b.push(DRecord::new(owner, c, ttl, Ns::new(dname(t)))),
            RData::Mx {
                preference,
                exchange,
            } => $b.push(DRecord::new(
                owner,
                c,
                ttl,
                Mx::new(*preference, dname(exchange)),
            )),
            RData::Srv(s) => $b.push(DRecord::new(
                owner,
                c,
                ttl,
                Srv::new(s.priority, s.weight, s.port, dname(&s.target)),
            )),
            RData::Txt(parts) => $b.push(DRecord::new(
                owner,
                c,
                ttl,
                Txt::<Vec<u8>>::build_from_slice(&parts[0]).unwrap(),
            )),
            other => panic!("not generated: {other:?}"),
        }
    }};
}

/// `domain`'s reading of the rule: (answer, authority, additional counts, message length).
fn reference(m: &Message, budget: usize) -> (usize, usize, usize, usize) {
    let mut b = MessageBuilder::from_target(TreeCompressor::new(Vec::new())).unwrap();
    // `domain` refuses a push that reaches the limit; miekg keeps a record that fills it.
    b.set_push_limit(budget + 1);
    let mut q = b.question();
    let wq = &m.questions[0];
    q.push((dname(&wq.name), Rtype::A)).unwrap();
    let mut stopped = false;
    let mut counts = [0usize; 3];
    let mut ans = q.answer();
    for r in &m.answers {
        match push!(ans, r) {
            Ok(()) => counts[0] += 1,
            Err(PushError::LimitExceeded) | Err(PushError::ShortBuf) => {
                stopped = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let mut auth = ans.authority();
    if !stopped {
        for r in &m.authority {
            match push!(auth, r) {
                Ok(()) => counts[1] += 1,
                Err(_) => {
                    stopped = true;
                    break;
                }
            }
        }
    }
    let mut add = auth.additional();
    if !stopped {
        for r in &m.additional {
            match push!(add, r) {
                Ok(()) => counts[2] += 1,
                Err(_) => break,
            }
        }
    }
    let len = add.finish().as_ref().len();
    (counts[0], counts[1], counts[2], len)
}

#[test]
fn truncation_matches_domain_message_builder() {
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut cut = 0;
    for round in 0..600 {
        let qname = Name::parse(NAMES[rng.below(NAMES.len())]).unwrap();
        let mut m = Message::reply_to(&Message::query(1, qname, RType::A));
        for _ in 0..rng.below(60) {
            m.answers.push(random_record(&mut rng));
        }
        for _ in 0..rng.below(6) {
            m.authority.push(random_record(&mut rng));
        }
        for _ in 0..rng.below(10) {
            m.additional.push(random_record(&mut rng));
        }
        let with_opt = rng.below(2) == 0;
        if with_opt {
            m.edns = Some(Edns::new(1232));
        }
        let opt_len = if with_opt { 11 } else { 0 };
        let size = 512 + rng.below(1200);
        let (wire, tc) = m.to_wire_limited(size);
        let back = Message::parse(&wire).unwrap();
        let (an, ns, ar, len) = reference(&m, size - opt_len);
        let what = format!("round {round}, size {size}, opt {with_opt}");
        assert_eq!(
            (
                back.answers.len(),
                back.authority.len(),
                back.additional.len()
            ),
            (an, ns, ar),
            "{what}"
        );
        assert_eq!(wire.len(), len + opt_len, "{what}");
        let all = (an, ns, ar) == (m.answers.len(), m.authority.len(), m.additional.len());
        assert_eq!(tc, !all, "{what}");
        assert_eq!(back.header.tc, !all, "{what}");
        assert_eq!(back.edns.is_some(), with_opt, "{what}: OPT kept");
        cut += usize::from(!all);
    }
    // The sizes were chosen so that both outcomes are common.
    assert!(cut > 100, "only {cut} truncated");
}
