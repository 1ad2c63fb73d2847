//! Unit tests of the cache with an injected clock and a scripted next plugin.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sextant_wire::{Edns, RData, Record, Soa};

use super::*;
use crate::pkg::clock::ManualClock;
use crate::pkg::testing::eventually;

type Script = Box<dyn Fn(&Message) -> Option<Message> + Send + Sync>;

/// The next plugin: answers with whatever the script makes of the query; None = error outcome.
struct Upstream {
    script: Mutex<Script>,
    calls: AtomicUsize,
    /// Published on the bus while answering (to test the in-flight race).
    publish: Mutex<Option<(Arc<InvalidationBus>, Invalidation)>>,
}

impl Upstream {
    fn new(f: impl Fn(&Message) -> Option<Message> + Send + Sync + 'static) -> Arc<Upstream> {
        Arc::new(Upstream {
            script: Mutex::new(Box::new(f)),
            calls: AtomicUsize::new(0),
            publish: Mutex::new(None),
        })
    }

    fn set(&self, f: impl Fn(&Message) -> Option<Message> + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Box::new(f);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Handler for Upstream {
    fn name(&self) -> &'static str {
        "forward"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let r = (self.script.lock().unwrap())(&req.msg);
            if let Some((bus, inv)) = self.publish.lock().unwrap().take() {
                bus.publish(&inv);
            }
            match r {
                Some(m) => Outcome::reply("forward", m),
                None => Outcome::error("forward", Rcode::SERVFAIL, "upstream down"),
            }
        })
    }
}

fn n(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    Record::new(
        n(zone),
        ttl,
        RData::Soa(Soa {
            mname: n("ns.dns.example.org."),
            rname: n("hostmaster.example.org."),
            serial: 1,
            refresh: 7200,
            retry: 1800,
            expire: 86400,
            minimum,
        }),
    )
}

/// An upstream answering every query with A 10.0.0.<octet> at `ttl`.
fn a_reply(ttl: u32, octet: u8) -> impl Fn(&Message) -> Option<Message> + Send + Sync {
    move |q| {
        let mut m = Message::reply_to(q);
        m.header.ra = true;
        let name = q.questions[0].name.clone();
        m.answers.push(Record::new(
            name,
            ttl,
            RData::A(Ipv4Addr::new(10, 0, 0, octet)),
        ));
        Some(m)
    }
}

fn rcode_reply(
    rc: Rcode,
    soa_rr: Option<Record>,
) -> impl Fn(&Message) -> Option<Message> + Send + Sync {
    move |q| {
        let mut m = Message::reply_to(q);
        m.set_rcode(rc);
        m.authority.extend(soa_rr.clone());
        Some(m)
    }
}

struct T {
    cache: Cache,
    clock: ManualClock,
    bus: Arc<InvalidationBus>,
    up: Arc<Upstream>,
}

fn cfg(line: &str) -> Config {
    let text = format!(". {{\n    {line}\n}}\n");
    let cf = sextant_corefile::parse_str("Corefile", &text, std::path::Path::new(".")).unwrap();
    let d = cf.blocks[0]
        .directives
        .iter()
        .find(|d| d.name.text == "cache")
        .unwrap();
    config::parse(d, &[".".to_string()]).unwrap()
}

fn mk(line: &str, up: Arc<Upstream>) -> T {
    let clock = ManualClock::new();
    let bus = Arc::new(InvalidationBus::default());
    let cache = Cache::new(
        cfg(line),
        clock.clock(),
        bus.clone(),
        crate::server::lifecycle::Spawner::for_tests(),
    );
    T {
        cache,
        clock,
        bus,
        up,
    }
}

fn q(name: &str, qtype: RType) -> Message {
    let mut m = Message::query(4242, n(name), qtype);
    m.edns = Some(Edns::new(1232));
    m
}

impl T {
    /// Sends `msg` through the cache; returns the decoded reply and whether it was a wire hit.
    async fn ask(&self, msg: Message) -> (Option<Message>, bool) {
        let chain: Vec<Arc<dyn Handler>> = vec![self.up.clone()];
        let mut req = Request::new(msg, "127.0.0.1:5353".parse().unwrap(), Proto::Udp);
        let out = self.cache.serve(&mut req, Next::new(&chain)).await;
        match &out.reply {
            Some(sextant_wire::Reply::Encoded(w)) => {
                assert_eq!(out.writer, "cache");
                (Some(Message::parse(&w.bytes).unwrap()), true)
            }
            Some(sextant_wire::Reply::Parsed(m)) => (Some(m.clone()), false),
            None => (None, false),
        }
    }

    async fn a(&self, name: &str) -> (Message, bool) {
        let (m, hit) = self.ask(q(name, RType::A)).await;
        (m.unwrap(), hit)
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Waits (bounded) until the upstream saw `n` queries, then lets the background refresh
    /// that sent the last one finish storing.
    async fn wait_calls(&self, n: usize) {
        eventually(&format!("{n} upstream queries"), || self.up.calls() >= n).await;
        settle().await;
    }
}

/// Lets every task the test runtime has ready run (background refreshes are spawned on it).
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

fn ttls(m: &Message) -> Vec<u32> {
    m.answers
        .iter()
        .chain(&m.authority)
        .chain(&m.additional)
        .map(|r| r.ttl)
        .collect()
}

#[tokio::test]
async fn positive_ttl_counts_down_and_expires() {
    let t = mk("cache", Upstream::new(a_reply(300, 1)));
    let (m, hit) = t.a("a.example.org.").await;
    assert!(!hit);
    assert_eq!(ttls(&m), vec![300]);
    assert!(!m.header.aa, "a miss is relayed as the upstream sent it");
    t.advance(10);
    let (m, hit) = t.a("a.example.org.").await;
    assert!(hit);
    assert_eq!(ttls(&m), vec![290]);
    assert!(m.header.aa && m.header.ra && m.header.qr && m.header.rd);
    assert_eq!(m.rcode(), Rcode::NOERROR);
    assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(t.up.calls(), 1);
    t.advance(289);
    let (m, _) = t.a("a.example.org.").await;
    assert_eq!(ttls(&m), vec![1]);
    t.advance(1);
    let (m, hit) = t.a("a.example.org.").await;
    assert!(!hit, "expired at TTL 0");
    assert_eq!(ttls(&m), vec![300]);
    assert_eq!(t.up.calls(), 2);
}

#[tokio::test]
async fn ttls_are_clamped_to_min_and_max() {
    let t = mk("cache 30", Upstream::new(a_reply(300, 1)));
    let (m, _) = t.a("a.example.org.").await;
    assert_eq!(ttls(&m), vec![30], "the miss is clamped too");
    t.up.set(a_reply(0, 2));
    let (m, _) = t.a("zero.example.org.").await;
    assert_eq!(ttls(&m), vec![5], "TTL 0 is raised to MINTTL 5");
    t.advance(4);
    let (m, hit) = t.a("zero.example.org.").await;
    assert!(hit);
    assert_eq!(ttls(&m), vec![1]);
    t.up.set(a_reply(0x7fff_ffff, 3));
    let (m, _) = t.a("big.example.org.").await;
    assert_eq!(ttls(&m), vec![30]);
    t.up.set(a_reply(0x8000_0000, 3));
    let (m, _) = t.a("high-bit.example.org.").await;
    assert_eq!(ttls(&m), vec![30]);

    let t2 = t_with("cache {\n success 1000 60 0\n }", a_reply(0, 1));
    let (m, _) = t2.a("zero.example.org.").await;
    assert_eq!(ttls(&m), vec![0]);
    t2.a("zero.example.org.").await;
    assert_eq!(t2.up.calls(), 2, "MINTTL 0 and TTL 0: not cached");
}

fn t_with(line: &str, f: impl Fn(&Message) -> Option<Message> + Send + Sync + 'static) -> T {
    mk(line, Upstream::new(f))
}

#[tokio::test]
async fn every_rr_gets_the_minimum_ttl() {
    let t = t_with("cache", |q| {
        let mut m = Message::reply_to(q);
        let name = q.questions[0].name.clone();
        m.answers.push(Record::new(
            name.clone(),
            120,
            RData::Cname(n("b.example.org.")),
        ));
        m.answers.push(Record::new(
            n("b.example.org."),
            60,
            RData::A(Ipv4Addr::LOCALHOST),
        ));
        m.authority.push(Record::new(
            n("example.org."),
            600,
            RData::Ns(n("ns.example.org.")),
        ));
        m.additional.push(Record::new(
            n("ns.example.org."),
            90,
            RData::A(Ipv4Addr::LOCALHOST),
        ));
        Some(m)
    });
    let (m, _) = t.a("a.example.org.").await;
    assert_eq!(ttls(&m), vec![60, 60, 60, 60]);
    t.advance(7);
    let (m, hit) = t.a("a.example.org.").await;
    assert!(hit);
    assert_eq!(ttls(&m), vec![53, 53, 53, 53]);
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.authority.len(), 1);
    assert_eq!(m.additional.len(), 1);
}

#[tokio::test]
async fn negative_answers_use_the_soa() {
    let t = t_with(
        "cache",
        rcode_reply(Rcode::NXDOMAIN, Some(soa("example.org.", 3600, 60))),
    );
    let (m, _) = t.a("nx.example.org.").await;
    assert_eq!(m.rcode(), Rcode::NXDOMAIN);
    assert_eq!(ttls(&m), vec![60], "min(SOA TTL, SOA MINIMUM)");
    t.advance(20);
    let (m, hit) = t.a("nx.example.org.").await;
    assert!(hit);
    assert_eq!(m.rcode(), Rcode::NXDOMAIN);
    assert_eq!(ttls(&m), vec![40]);
    assert_eq!(m.authority[0].rtype, RType::SOA);

    // NODATA is kept apart from NXDOMAIN (another qtype is another key).
    t.up.set(rcode_reply(
        Rcode::NOERROR,
        Some(soa("example.org.", 30, 30)),
    ));
    let (m, _) = t.ask(q("nx.example.org.", RType::AAAA)).await;
    let m = m.unwrap();
    assert_eq!(m.rcode(), Rcode::NOERROR);
    assert!(m.answers.is_empty());
    let (m, hit) = t.ask(q("nx.example.org.", RType::AAAA)).await;
    assert!(hit);
    assert_eq!(m.unwrap().rcode(), Rcode::NOERROR);
    let (m, hit) = t.a("nx.example.org.").await;
    assert!(hit);
    assert_eq!(m.rcode(), Rcode::NXDOMAIN);
    assert_eq!(t.up.calls(), 2);

    // The denial cap.
    let t = t_with(
        "cache {\n denial 100 10\n }",
        rcode_reply(Rcode::NXDOMAIN, Some(soa("example.org.", 3600, 3600))),
    );
    let (m, _) = t.a("nx.example.org.").await;
    assert_eq!(ttls(&m), vec![10]);
}

#[tokio::test]
async fn negative_answers_without_soa_are_not_cached() {
    let t = t_with("cache", rcode_reply(Rcode::NXDOMAIN, None));
    t.a("nx.example.org.").await;
    t.a("nx.example.org.").await;
    assert_eq!(t.up.calls(), 2);
    let t = t_with("cache", rcode_reply(Rcode::NOERROR, None));
    t.a("empty.example.org.").await;
    t.a("empty.example.org.").await;
    assert_eq!(t.up.calls(), 2, "SOA-less NODATA");
    // A CNAME that does not reach the asked type and no SOA: not cached either.
    let t = t_with("cache", |q| {
        let mut m = Message::reply_to(q);
        m.answers.push(Record::new(
            q.questions[0].name.clone(),
            300,
            RData::Cname(n("elsewhere.example.net.")),
        ));
        Some(m)
    });
    t.a("c.example.org.").await;
    t.a("c.example.org.").await;
    assert_eq!(t.up.calls(), 2);
}

#[tokio::test]
async fn servfail_is_cached_for_the_servfail_duration_only() {
    let t = t_with("cache", rcode_reply(Rcode::SERVFAIL, None));
    let (m, _) = t.a("sf.example.org.").await;
    assert_eq!(m.rcode(), Rcode::SERVFAIL);
    t.advance(4);
    let (m, hit) = t.a("sf.example.org.").await;
    assert!(hit);
    assert_eq!(m.rcode(), Rcode::SERVFAIL);
    t.advance(1);
    let (_, hit) = t.a("sf.example.org.").await;
    assert!(!hit, "5 s by default");

    let t = t_with(
        "cache {\n servfail 0\n }",
        rcode_reply(Rcode::SERVFAIL, None),
    );
    t.a("sf.example.org.").await;
    t.a("sf.example.org.").await;
    assert_eq!(t.up.calls(), 2, "servfail 0 disables it");

    let t = t_with(
        "cache {\n servfail 2m\n }",
        rcode_reply(Rcode::SERVFAIL, None),
    );
    t.a("sf.example.org.").await;
    t.advance(119);
    let (_, hit) = t.a("sf.example.org.").await;
    assert!(hit);

    // An error outcome with no reply (upstream unreachable) is never cached.
    let t = t_with("cache", |_| None);
    let (m, _) = t.ask(q("down.example.org.", RType::A)).await;
    assert!(m.is_none());
    t.ask(q("down.example.org.", RType::A)).await;
    assert_eq!(t.up.calls(), 2);
}

#[tokio::test]
async fn refused_formerr_and_truncated_are_never_cached() {
    for rc in [Rcode::REFUSED, Rcode::FORMERR, Rcode::NOTAUTH] {
        let t = t_with("cache", rcode_reply(rc, Some(soa("example.org.", 30, 30))));
        t.a("x.example.org.").await;
        let (m, hit) = t.a("x.example.org.").await;
        assert!(!hit);
        assert_eq!(m.rcode(), rc);
        assert_eq!(t.up.calls(), 2, "{rc} is not cached");
    }
    let t = t_with("cache", |q| {
        let mut m = a_reply(300, 1)(q)?;
        m.header.tc = true;
        Some(m)
    });
    let (m, _) = t.a("tc.example.org.").await;
    assert!(m.header.tc);
    t.a("tc.example.org.").await;
    assert_eq!(t.up.calls(), 2, "TC is never cached");
}

#[tokio::test]
async fn key_has_do_cd_class_and_ignores_case() {
    let t = mk("cache", Upstream::new(a_reply(300, 1)));
    t.a("Mixed.Example.ORG.").await;
    let (m, hit) = t.a("mixed.example.org.").await;
    assert!(hit, "case does not matter");
    assert_eq!(m.answers.len(), 1);
    let mut do_q = q("mixed.example.org.", RType::A);
    do_q.edns.as_mut().unwrap().dnssec_ok = true;
    let (_, hit) = t.ask(do_q.clone()).await;
    assert!(!hit, "DO is part of the key");
    let (_, hit) = t.ask(do_q).await;
    assert!(hit);
    let mut cd_q = q("mixed.example.org.", RType::A);
    cd_q.header.cd = true;
    let (_, hit) = t.ask(cd_q.clone()).await;
    assert!(!hit, "CD is part of the key");
    let (m, hit) = t.ask(cd_q).await;
    assert!(hit);
    assert!(m.unwrap().header.cd, "CD is echoed on hits");
    let mut ch = q("mixed.example.org.", RType::A);
    ch.questions[0].qclass = Class::CH;
    let (_, hit) = t.ask(ch).await;
    assert!(!hit, "class is part of the key");
    let (_, hit) = t.ask(q("mixed.example.org.", RType::AAAA)).await;
    assert!(!hit, "type is part of the key");
    assert_eq!(t.up.calls(), 5);
}

#[tokio::test]
async fn ad_bit_only_for_clients_that_want_it() {
    let t = t_with("cache", |q| {
        assert!(q.header.ad, "the cache asks upstream with AD set");
        let mut m = a_reply(300, 1)(q)?;
        m.header.ad = true;
        Some(m)
    });
    let (m, _) = t.a("ad.example.org.").await;
    assert!(!m.header.ad, "miss: AD cleared for a client without DO/AD");
    let (m, hit) = t.a("ad.example.org.").await;
    assert!(hit && !m.header.ad);
    let mut adq = q("ad.example.org.", RType::A);
    adq.header.ad = true;
    let (m, hit) = t.ask(adq).await;
    assert!(
        hit && m.unwrap().header.ad,
        "AD kept for a client that set AD"
    );
}

#[tokio::test]
async fn mismatched_replies_are_dropped() {
    let t = t_with("cache", |q| {
        let mut m = a_reply(300, 1)(q)?;
        m.questions[0].name = n("other.example.org.");
        Some(m)
    });
    t.a("a.example.org.").await;
    t.a("a.example.org.").await;
    assert_eq!(t.up.calls(), 2);
}

#[tokio::test]
async fn disable_zones() {
    let t = t_with(
        "cache {\n disable denial sub.example.org\n }",
        rcode_reply(Rcode::NXDOMAIN, Some(soa("example.org.", 30, 30))),
    );
    t.a("x.sub.example.org.").await;
    t.a("x.sub.example.org.").await;
    assert_eq!(
        t.up.calls(),
        2,
        "denials under sub.example.org are not cached"
    );
    t.a("x.example.org.").await;
    let (_, hit) = t.a("x.example.org.").await;
    assert!(hit);

    let t = mk(
        "cache {\n disable success\n }",
        Upstream::new(a_reply(300, 1)),
    );
    t.a("x.example.org.").await;
    t.a("x.example.org.").await;
    assert_eq!(t.up.calls(), 2, "success cache disabled everywhere");
    assert_eq!(t.cache.inner().len(), (0, 0));
}

#[tokio::test]
async fn zones_limit_what_is_cached() {
    let t = mk("cache example.org", Upstream::new(a_reply(300, 1)));
    t.a("x.example.net.").await;
    t.a("x.example.net.").await;
    assert_eq!(t.up.calls(), 2);
    t.a("x.example.org.").await;
    let (_, hit) = t.a("x.example.org.").await;
    assert!(hit);
}

#[tokio::test]
async fn keepttl_serves_the_stored_ttl() {
    let t = mk("cache {\n keepttl\n }", Upstream::new(a_reply(100, 1)));
    t.a("k.example.org.").await;
    t.advance(60);
    let (m, hit) = t.a("k.example.org.").await;
    assert!(hit);
    assert_eq!(ttls(&m), vec![100]);
    t.advance(40);
    let (_, hit) = t.a("k.example.org.").await;
    assert!(!hit, "still expires");
}

#[tokio::test]
async fn prefetch_refreshes_popular_items_before_they_expire() {
    let t = mk(
        "cache {\n prefetch 2 1m 50%\n }",
        Upstream::new(a_reply(10, 1)),
    );
    t.a("p.example.org.").await;
    t.advance(5);
    t.a("p.example.org.").await; // hits 1, ttl 5 <= 5 but too few hits
    assert_eq!(t.up.calls(), 1);
    t.up.set(a_reply(10, 2));
    t.a("p.example.org.").await; // hits 2: prefetch
    t.wait_calls(2).await;
    let (m, hit) = t.a("p.example.org.").await;
    assert!(hit);
    assert_eq!(ttls(&m), vec![10], "refreshed item stored now");
    assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(t.up.calls(), 2);
}

#[tokio::test]
async fn serve_stale_immediate() {
    let t = mk(
        "cache {\n serve_stale 1h\n }",
        Upstream::new(a_reply(10, 1)),
    );
    t.a("s.example.org.").await;
    t.advance(15);
    t.up.set(|_| None); // upstream down
    let (m, hit) = t.a("s.example.org.").await;
    assert!(hit);
    assert_eq!(ttls(&m), vec![0], "stale answers carry TTL 0");
    t.wait_calls(2).await;
    let (m, hit) = t.a("s.example.org.").await;
    assert!(hit, "a failed refresh keeps the stale item");
    assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 1)));
    t.wait_calls(3).await;
    t.up.set(a_reply(10, 2));
    t.a("s.example.org.").await;
    t.wait_calls(4).await;
    let (m, _) = t.a("s.example.org.").await;
    assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(ttls(&m), vec![10]);
    // Beyond the stale window it is a miss.
    t.advance(3600 + 11);
    t.up.set(|_| None);
    let (m, hit) = t.ask(q("s.example.org.", RType::A)).await;
    assert!(!hit && m.is_none());
}

#[tokio::test]
async fn serve_stale_response_ttl_and_recheck() {
    let t = mk(
        "cache {\n serve_stale 1h immediate 30s 1m\n }",
        Upstream::new(a_reply(10, 1)),
    );
    t.a("s.example.org.").await;
    t.advance(11);
    t.up.set(|_| None);
    let (m, _) = t.a("s.example.org.").await;
    assert_eq!(ttls(&m), vec![30]);
    t.wait_calls(2).await;
    t.a("s.example.org.").await;
    t.a("s.example.org.").await;
    settle().await;
    assert_eq!(t.up.calls(), 2, "no new refresh during the recheck delay");
    t.advance(60);
    t.a("s.example.org.").await;
    t.wait_calls(3).await;
}

#[tokio::test]
async fn serve_stale_verify() {
    let t = mk(
        "cache {\n serve_stale 1h verify\n }",
        Upstream::new(a_reply(10, 1)),
    );
    t.a("v.example.org.").await;
    t.advance(11);
    t.up.set(a_reply(10, 2));
    let (m, hit) = t.a("v.example.org.").await;
    assert!(!hit, "verify answers with the fresh reply");
    assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 2)));
    t.advance(11);
    t.up.set(rcode_reply(Rcode::SERVFAIL, None));
    let (m, hit) = t.a("v.example.org.").await;
    assert!(hit, "upstream failing: stale served");
    assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(ttls(&m), vec![0]);

    let t = mk(
        "cache {\n serve_stale 1h verify 50ms 15s\n }",
        Upstream::new(a_reply(10, 1)),
    );
    t.a("v.example.org.").await;
    t.advance(11);
    t.up.set(a_reply(10, 3));
    let (m, hit) = t.a("v.example.org.").await;
    assert!(hit);
    assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 3)));
    t.advance(11);
    t.up.set(|_| None);
    let (m, _) = t.a("v.example.org.").await;
    assert_eq!(ttls(&m), vec![15], "RESPONSE_TTL on stale answers");
}

#[tokio::test]
async fn invalidation_drops_names_subtrees_and_denials() {
    let up = Upstream::new(|q| {
        let name = q.questions[0].name.to_lowercase_string();
        if name.starts_with("nx") {
            rcode_reply(Rcode::NXDOMAIN, Some(soa("cluster.local.", 30, 30)))(q)
        } else {
            a_reply(30, 1)(q)
        }
    });
    let t = mk("cache 30", up);
    let names = [
        "svc.ns.svc.cluster.local.",
        "_http._tcp.svc.ns.svc.cluster.local.",
        "other.ns.svc.cluster.local.",
        "nx.ns.svc.cluster.local.",
        "1.0.0.10.in-addr.arpa.",
        "2.0.0.10.in-addr.arpa.",
    ];
    for nm in names {
        t.a(nm).await;
    }
    assert_eq!(t.cache.inner().len(), (5, 1));
    t.bus.publish(&Invalidation {
        subtrees: vec![n("svc.ns.svc.cluster.local.")],
        negative_subtrees: vec![n("ns.svc.cluster.local.")],
        names: vec![n("1.0.0.10.in-addr.arpa.")],
        all: false,
    });
    assert_eq!(t.cache.inner().len(), (2, 0));
    for (nm, cached) in [
        ("svc.ns.svc.cluster.local.", false),
        ("_http._tcp.svc.ns.svc.cluster.local.", false),
        ("other.ns.svc.cluster.local.", true),
        ("nx.ns.svc.cluster.local.", false),
        ("1.0.0.10.in-addr.arpa.", false),
        ("2.0.0.10.in-addr.arpa.", true),
    ] {
        let (_, hit) = t.a(nm).await;
        assert_eq!(hit, cached, "{nm}");
    }
    t.bus.publish(&Invalidation {
        all: true,
        ..Invalidation::default()
    });
    assert_eq!(t.cache.inner().len(), (0, 0));
}

#[tokio::test]
async fn an_answer_racing_an_invalidation_is_not_stored() {
    let t = mk("cache 30", Upstream::new(a_reply(30, 1)));
    *t.up.publish.lock().unwrap() = Some((
        t.bus.clone(),
        Invalidation {
            subtrees: vec![n("ns.svc.cluster.local.")],
            ..Invalidation::default()
        },
    ));
    let (m, _) = t.a("svc.ns.svc.cluster.local.").await;
    assert_eq!(m.answers.len(), 1, "the answer still goes to the client");
    assert_eq!(t.cache.inner().len(), (0, 0));
    t.a("svc.ns.svc.cluster.local.").await;
    assert_eq!(t.cache.inner().len(), (1, 0));
}

#[tokio::test]
async fn servfail_does_not_shadow_a_positive_answer() {
    let t = mk(
        "cache {\n serve_stale 1h verify\n }",
        Upstream::new(a_reply(10, 1)),
    );
    t.a("x.example.org.").await;
    t.advance(11);
    t.up.set(rcode_reply(Rcode::SERVFAIL, None));
    // Verify gets SERVFAIL (not a usable refresh): the stale positive answer is served.
    let (m, hit) = t.a("x.example.org.").await;
    assert!(hit);
    assert_eq!(m.rcode(), Rcode::NOERROR);
}

#[test]
fn default_config() {
    let c = cfg("cache");
    assert_eq!(c, Config::new(vec![Name::root()]));
    assert_eq!((c.pttl, c.nttl, c.minpttl, c.minnttl), (3600, 1800, 5, 5));
    assert_eq!(Store::new(c.pcap).capacity(), 9984);
    assert_eq!(c.failttl, Duration::from_secs(5));
    assert_eq!(
        (c.prefetch_window, c.prefetch_pct),
        (Duration::from_secs(60), 10)
    );
}

#[test]
fn every_option_parses() {
    let c = cfg("cache 300 example.org 10.0.0.0/24 {\n success 5000 600 10\n denial 2500 60 1\n prefetch 10 2m 20%\n serve_stale 2h verify 100ms 30s 1m\n serve_stale_policy prefer_positive\n servfail 10s\n disable success a.example.org b.example.org\n disable denial\n keepttl\n }");
    assert_eq!(c.zones, vec![n("example.org."), n("0.0.10.in-addr.arpa.")]);
    assert_eq!((c.pcap, c.pttl, c.minpttl), (5000, 600, 10));
    assert_eq!((c.ncap, c.nttl, c.minnttl), (2500, 60, 1));
    assert_eq!(c.prefetch, 10);
    assert_eq!(c.prefetch_window, Duration::from_secs(120));
    assert_eq!(c.prefetch_pct, 20);
    assert_eq!(c.stale_up_to, Duration::from_secs(7200));
    assert!(c.verify_stale);
    assert_eq!(c.verify_timeout, Duration::from_millis(100));
    assert_eq!(c.stale_ttl, 30);
    assert_eq!(c.stale_recheck, Duration::from_secs(60));
    assert!(c.prefer_positive);
    assert_eq!(c.failttl, Duration::from_secs(10));
    assert_eq!(c.pexcept, vec![n("a.example.org."), n("b.example.org.")]);
    assert_eq!(c.nexcept, vec![Name::root()]);
    assert!(c.keepttl);
    let c = cfg("cache 30");
    assert_eq!((c.pttl, c.nttl), (30, 30));
    let c = cfg("cache {\n serve_stale\n }");
    assert_eq!(c.stale_up_to, Duration::from_secs(3600));
    assert!(!c.verify_stale);
    let c = cfg("cache {\n serve_stale 10m immediate 30s 30s\n }");
    assert_eq!(
        (c.stale_ttl, c.stale_recheck),
        (30, Duration::from_secs(30))
    );
    let c = cfg("cache {\n prefetch 1\n }");
    assert_eq!((c.prefetch, c.prefetch_pct), (1, 10));
}

fn parse_err(body: &str) -> String {
    let text = format!(". {{\n    {body}\n}}\n");
    let cf = sextant_corefile::parse_str("Corefile", &text, std::path::Path::new(".")).unwrap();
    match crate::server::config::build(&cf, 1053, Default::default(), Default::default()) {
        Ok(_) => panic!("{body:?} parsed"),
        Err(e) => e[0].to_string(),
    }
}

#[test]
fn errors_name_position_and_directive() {
    for (body, want) in [
        ("cache 0", "Corefile:2:11: cache: cache TTL can not be zero or negative: 0"),
        ("cache -5", "Corefile:2:11: cache: cache TTL can not be zero or negative: -5"),
        ("cache {\n success\n }", "Corefile:3:2: success: wrong argument count: expected at least 1, got 0"),
        ("cache {\n success x\n }", "Corefile:3:10: success: strconv.Atoi: parsing \"x\": invalid syntax"),
        ("cache {\n success 10 0\n }", "Corefile:3:13: success: cache TTL can not be zero or negative: 0"),
        ("cache {\n denial 10 5 -1\n }", "Corefile:3:14: denial: cache min TTL can not be negative: -1"),
        ("cache {\n prefetch\n }", "Corefile:3:2: prefetch: wrong argument count: expected 1 to 3, got 0"),
        ("cache {\n prefetch -1\n }", "Corefile:3:11: prefetch: prefetch amount should be positive: -1"),
        ("cache {\n prefetch 1 xm\n }", "Corefile:3:13: prefetch: invalid prefetch duration: time: invalid duration \"xm\""),
        ("cache {\n prefetch 1 1m 20\n }", "Corefile:3:16: prefetch: last character of percentage should be `%`, but is: '0'"),
        ("cache {\n prefetch 1 1m 95%\n }", "Corefile:3:16: prefetch: percentage should fall in range [10, 90]: 95"),
        ("cache {\n serve_stale 1h sometimes\n }", "Corefile:3:17: serve_stale: invalid value for serve_stale refresh mode: sometimes"),
        ("cache {\n serve_stale 1h immediate 1s 1s 1s\n }", "Corefile:3:33: serve_stale: wrong argument count: expected 0 to 4, got 5"),
        ("cache {\n serve_stale 1h immediate 1500ms\n }", "Corefile:3:27: serve_stale: serve_stale response TTL must be a whole number of seconds"),
        ("cache {\n serve_stale 1h immediate 30s 6m\n }", "Corefile:3:31: serve_stale: serve_stale failure recheck cannot exceed 5 minutes"),
        ("cache {\n serve_stale_policy prefer_positive\n }", "Corefile:2:5: cache: serve_stale_policy requires serve_stale"),
        ("cache {\n serve_stale\n serve_stale_policy newest\n }", "Corefile:4:21: serve_stale_policy: invalid serve_stale_policy: newest"),
        ("cache {\n servfail 6m\n }", "Corefile:3:11: servfail: caching SERVFAIL responses over 5 minutes is not permitted"),
        ("cache {\n servfail\n }", "Corefile:3:2: servfail: wrong argument count: expected 1, got 0"),
        ("cache {\n disable everything\n }", "Corefile:3:10: disable: cache type for disable must be \"success\" or \"denial\""),
        ("cache {\n keepttl 1\n }", "Corefile:3:10: keepttl: wrong argument count: expected 0, got 1"),
        ("cache {\n frobnicate\n }", "Corefile:3:2: frobnicate: unknown property 'frobnicate'"),
        ("cache\n    cache", "Corefile:3:5: cache: this plugin can only be used once per Server Block"),
    ] {
        assert_eq!(parse_err(body), want, "{body:?}");
    }
}

#[test]
fn ascii_lower8_matches_per_byte_lowercase() {
    for b in 0..=255u8 {
        for pos in 0..8 {
            let mut bytes = [b'Q', 0, 0xC1, b'z', b'@', b'[', 0xFF, b'A'];
            bytes[pos] = b;
            let want = u64::from_le_bytes(bytes.map(|x| x.to_ascii_lowercase()));
            assert_eq!(
                ascii_lower8(u64::from_le_bytes(bytes)),
                want,
                "byte {b:#x} at {pos}"
            );
        }
    }
}

#[test]
fn key_hash_ignores_case_at_every_length_and_separates_names() {
    let t = mk("cache", Upstream::new(a_reply(300, 1)));
    let inner = t.cache.inner();
    let hash = |msg: Message| {
        let req = Request::new(msg, "127.0.0.1:5353".parse().unwrap(), Proto::Udp);
        inner.probe(&req).hash
    };
    let mut seen = std::collections::HashSet::new();
    for len in 1..40 {
        let label: String = (0..len)
            .map(|i| if i % 3 == 0 { 'X' } else { 'y' })
            .collect();
        let upper = format!("{label}.Example.ORG.");
        let h = hash(q(&upper, RType::A));
        assert_eq!(h, hash(q(&upper.to_lowercase(), RType::A)), "{upper}");
        assert_ne!(h, hash(q(&upper, RType::AAAA)), "{upper}");
        assert!(seen.insert(h), "{upper} collides");
    }
    // Another cache keys with another seed.
    let other = mk("cache", Upstream::new(a_reply(300, 1)));
    let req = Request::new(
        q("a.example.org.", RType::A),
        "127.0.0.1:5353".parse().unwrap(),
        Proto::Udp,
    );
    assert_ne!(inner.probe(&req).hash, other.cache.inner().probe(&req).hash);
}

#[test]
fn store_counts_items_through_add_replace_evict_and_remove() {
    let now = std::time::Instant::now();
    let mut m = Message::reply_to(&q("a.example.org.", RType::A));
    m.answers.push(Record::new(
        n("a.example.org."),
        30,
        RData::A(Ipv4Addr::new(10, 0, 0, 1)),
    ));
    let it =
        Arc::new(store::Item::from_reply(&mut m.clone(), false, false, true, 30, now).unwrap());
    let s = Store::new(1024);
    assert!(s.is_empty() && s.get(1).is_none());
    for k in 0..6u64 {
        s.add(k << 32, it.clone()); // shard 0..5, one each
    }
    s.add(5 << 32, it.clone()); // a replacement
    assert_eq!(s.len(), 6);
    // Shard 0 holds at most 4: the fifth and sixth evict.
    for k in 1..6u64 {
        s.add(k, it.clone());
    }
    assert_eq!(s.len(), 9);
    s.remove(5 << 32);
    s.remove(5 << 32);
    assert_eq!(s.len(), 8);
    assert_eq!(s.remove_if(|_| true), 8);
    assert!(s.is_empty());
}

#[tokio::test]
async fn metric_handles_follow_each_server_label() {
    let t = mk("cache", Upstream::new(a_reply(300, 1)));
    let labels = ["dns://:9101", "dns://:9102"];
    let read = |server: &str, c: &prometheus::CounterVec, typ: Option<&str>| {
        let z = t.cache.inner().metrics.zones().to_string();
        match typ {
            Some(ty) => c.with_label_values(&[server, ty, &z, ""]).get(),
            None => c.with_label_values(&[server, &z, ""]).get(),
        }
    };
    let before: Vec<f64> = labels
        .iter()
        .map(|s| read(s, &metrics::HITS, Some("success")))
        .collect();
    let chain: Vec<Arc<dyn Handler>> = vec![t.up.clone()];
    for (i, server) in labels.iter().enumerate() {
        for _ in 0..=i {
            let mut req = Request::new(
                q("m.example.org.", RType::A),
                "127.0.0.1:5353".parse().unwrap(),
                Proto::Udp,
            );
            req.server = Arc::from(*server);
            t.cache.serve(&mut req, Next::new(&chain)).await;
        }
    }
    // The first query was the miss (on the first label); the second label had two hits.
    assert_eq!(
        read(labels[0], &metrics::HITS, Some("success")) - before[0],
        0.0
    );
    assert_eq!(
        read(labels[1], &metrics::HITS, Some("success")) - before[1],
        2.0
    );
    assert_eq!(read(labels[0], &metrics::MISSES, None), 1.0);
    assert_eq!(read(labels[1], &metrics::REQUESTS, None), 2.0);
}

/// A next plugin that never answers.
struct Stall;

impl Handler for Stall {
    fn name(&self) -> &'static str {
        "forward"
    }

    fn serve<'a>(&'a self, _req: &'a mut Request, _next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(std::future::pending())
    }
}

/// `serve_stale verify TIMEOUT`: when the verifying refresh does not answer, the stale answer is
/// served once TIMEOUT has passed on the cache's clock, not before.
#[tokio::test]
async fn serve_stale_verify_timeout_runs_on_the_clock() {
    let t = mk(
        "cache {\n serve_stale 1h verify 5s 30s\n }",
        Upstream::new(a_reply(10, 1)),
    );
    t.a("v.example.org.").await;
    t.advance(11);
    let chain: Vec<Arc<dyn Handler>> = vec![Arc::new(Stall)];
    let mut req = Request::new(
        q("v.example.org.", RType::A),
        "127.0.0.1:5353".parse().unwrap(),
        Proto::Udp,
    );
    let serve = t.cache.serve(&mut req, Next::new(&chain));
    tokio::pin!(serve);
    tokio::select! {
        biased;
        _ = &mut serve => panic!("answered before the verify timeout"),
        () = t.clock.sleepers(1) => {}
    }
    t.clock.advance(Duration::from_millis(4999));
    tokio::select! {
        biased;
        _ = &mut serve => panic!("answered before the verify timeout"),
        () = settle() => {}
    }
    t.clock.advance(Duration::from_millis(1));
    let out = tokio::time::timeout(Duration::from_secs(5), serve)
        .await
        .expect("the stale answer once the timeout passed");
    let Some(sextant_wire::Reply::Encoded(w)) = out.reply else {
        panic!("served from the cache as bytes");
    };
    let m = Message::parse(&w.bytes).unwrap();
    assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(ttls(&m), vec![30], "RESPONSE_TTL on the stale answer");
}
