//! The `forward` plugin: relays queries for FROM (minus `except`) to up to 15 upstreams over
//! UDP, TCP or TLS, with CoreDNS's selection loop (policies, health, `max_fails`,
//! `max_connect_attempts`, 5 s deadline, `next`/`failover`), `max_concurrent`, and coalescing of
//! identical in-flight queries. Wire exchange and health checks live in `proxy`.

mod doh;
mod metrics;
mod proxy;
mod resolve;
pub(crate) mod setup;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::server::lifecycle::Spawner;
use rustls::pki_types::ServerName;
use sextant_corefile::{Directive, Error};
use sextant_wire::{Class, Message, Name, RType, Rcode};
use tokio::sync::watch;

use crate::pkg::clock::Clock;
use crate::pkg::tls;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Proto, Request, SetupCtx, Tapper};
use proxy::{HealthSettings, Net, Proxy, TlsSettings};
use setup::{Config, Transport};

/// Overall time one client query may spend on upstreams (CoreDNS `defaultTimeout`).
const OVERALL_DEADLINE: Duration = Duration::from_secs(5);
/// Connect attempts per upstream when `max_connect_attempts` is not set.
const DEFAULT_ATTEMPTS_PER_UPSTREAM: usize = 2;

/// What one resolution ended in; shared by every coalesced client query.
#[derive(Clone, Debug)]
enum Resolution {
    /// The reply and the upstream that gave it (metadata `forward/upstream`).
    Reply(Arc<Message>, std::net::SocketAddr),
    /// Hand the query to the next plugin (`next` / `next_on_nodata`).
    Next,
    Error(String),
}

/// Identical in-flight queries share one upstream exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    name: Name,
    qtype: RType,
    qclass: Class,
    do_bit: bool,
    cd: bool,
    rd: bool,
    net: Net,
    /// The EDNS buffer size and options sent upstream: queries that differ there (ECS set per
    /// client by `rewrite`, a smaller buffer) can get different answers and are not merged.
    edns: Option<(u16, EdnsOptions)>,
}

impl Hash for Key {
    /// The name is stored lower-cased, so its wire bytes go in as one slice (the `Name` impl
    /// folds case byte by byte); equal keys still hash alike.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.name.wire());
        self.qtype.hash(state);
        self.qclass.hash(state);
        state.write_u8(self.do_bit as u8 | (self.cd as u8) << 1 | (self.rd as u8) << 2);
        self.net.hash(state);
        self.edns.hash(state);
    }
}

/// EDNS options as (code, data) pairs.
type EdnsOptions = Vec<(u16, Vec<u8>)>;

/// Keyed with a randomly seeded foldhash (SipHash was ~5% of a forwarded query; a random seed
/// still keeps outsiders from choosing colliding names).
///
/// An entry's channel is made by the first query that waits on it: most forwarded queries have
/// no twin in flight, and a `watch` channel costs an allocation and, when its sender goes,
/// eight locked wake-ups (tokio's `BigNotify`); made for every query it was ~5% of the
/// instructions of a forwarded UDP query (`bench/cg_miss.py --no-cache`).
type Inflight = Mutex<HashMap<Key, Option<Waiters>, foldhash::quality::RandomState>>;

/// Where the leader of an in-flight query sends its result to the queries waiting on it.
type Waiters = watch::Sender<Option<Resolution>>;

struct Inner {
    cfg: Config,
    proxies: Vec<Arc<Proxy>>,
    robin: AtomicU32,
    /// The block's `dnstap` plugin, found once the block is set up.
    tap: OnceLock<Arc<dyn Tapper>>,
}

/// One `forward` line.
pub(crate) struct Forward {
    inner: Arc<Inner>,
    concurrent: AtomicU64,
    inflight: Arc<Inflight>,
    limit_error: String,
}

struct ConcurrencyGuard<'a>(&'a AtomicU64);

impl Drop for ConcurrencyGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    metrics::init();
    let spawner = ctx.spawner();
    let clock = ctx.clock();
    let mut all = Vec::new();
    for d in lines {
        let cfg = setup::parse(d)?;
        let needs = |t: Transport| cfg.to.iter().any(|u| u.transport == t);
        let tls_args = cfg.tls.as_deref().unwrap_or(&[]);
        let tls_cfg = match needs(Transport::Tls) {
            true => Some(tls::client_config(d, tls_args)?),
            false => None,
        };
        // DoH offers HTTP/2 and HTTP/1.1 in ALPN (Go's http.Transport does the same).
        let doh_cfg = match needs(Transport::Https) {
            true => {
                let mut c = (*tls::client_config(d, tls_args)?).clone();
                c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Some(Arc::new(c))
            }
            false => None,
        };
        let mut proxies = Vec::new();
        for u in &cfg.to {
            let tls = match (u.transport, &tls_cfg) {
                (Transport::Tls, Some(c)) => {
                    // `tls_servername`, else the name given with the address, else the IP.
                    let server_name = match cfg.tls_servername.as_ref().or(u.server_name.as_ref()) {
                        Some(n) => ServerName::try_from(n.clone())
                            .map_err(|_| d.err(format!("invalid tls_servername '{n}'")))?,
                        None => ServerName::IpAddress(u.addr.ip().into()),
                    };
                    Some(TlsSettings {
                        connector: tokio_rustls::TlsConnector::from(c.clone()),
                        server_name,
                    })
                }
                _ => None,
            };
            let mut p = new_proxy(&cfg, u.addr, tls, spawner.clone(), clock.clone());
            if let (Transport::Https, Some(c)) = (u.transport, &doh_cfg) {
                let server_name = match &cfg.tls_servername {
                    Some(n) => ServerName::try_from(n.clone())
                        .map_err(|_| d.err(format!("invalid tls_servername '{n}'")))?,
                    None => ServerName::IpAddress(u.addr.ip().into()),
                };
                p.doh = Some(doh::Doh::new(
                    tokio_rustls::TlsConnector::from(c.clone()),
                    server_name,
                    u.addr.to_string(),
                    cfg.doh_method,
                    // Go's DefaultMaxIdleConnsPerHost unless max_idle_conns says otherwise.
                    if cfg.max_idle_conns > 0 {
                        cfg.max_idle_conns
                    } else {
                        2
                    },
                ));
            }
            proxies.push(Arc::new(p));
        }
        let f = Arc::new(Forward::new(cfg, proxies));
        let inner = f.inner.clone();
        ctx.link(d, move |chain| {
            if let Some(t) = chain.iter().find_map(|h| h.tapper()) {
                let _ = inner.tap.set(t);
            }
            Ok(())
        });
        all.push(f.clone());
        ctx.add_handler(f);
    }
    // Close cached connections that outlived `expire` while the generation runs, and every
    // cached connection when it is retired.
    let every = all
        .iter()
        .map(|f| f.inner.cfg.expire)
        .min()
        .unwrap_or(Duration::from_secs(10))
        .max(Duration::from_millis(100));
    ctx.task(move |t| async move {
        loop {
            tokio::select! {
                _ = t.cancelled() => break,
                _ = clock.sleep(every) => {}
            }
            for f in &all {
                for p in &f.inner.proxies {
                    p.sweep();
                }
            }
        }
        for f in &all {
            for p in &f.inner.proxies {
                p.clear();
            }
        }
    });
    Ok(())
}

impl Inner {
    /// The order upstreams are tried in for one query.
    fn list(&self) -> Vec<usize> {
        self.cfg.policy.order(self.proxies.len(), &self.robin)
    }

    /// CoreDNS's `ServeDNS` loop for one query.
    async fn resolve(&self, req: &mut Request, net: Net, next_is_forward: bool) -> Resolution {
        let cfg = &self.cfg;
        let n = self.proxies.len();
        let list = self.list();
        let deadline = Instant::now() + OVERALL_DEADLINE;
        let max_attempts = match cfg.max_connect_attempts {
            Some(a) => a as usize,
            None => DEFAULT_ATTEMPTS_PER_UPSTREAM * n,
        };
        let (mut attempts, mut fails, mut failovers, mut i) = (0usize, 0usize, 0usize, 0usize);
        let mut upstream_err: Option<String> = None;
        while Instant::now() < deadline && (max_attempts == 0 || attempts < max_attempts) {
            if i >= list.len() {
                i = 0;
                fails = 0;
            }
            let mut p = &self.proxies[list[i]];
            i += 1;
            if p.down(cfg.max_fails) {
                fails += 1;
                if fails < n {
                    continue;
                }
                metrics::HC_BROKEN.inc();
                if cfg.failfast {
                    break;
                }
                // Every upstream looks down: assume the health check is broken, pick one.
                p = &self.proxies[rand::random_range(0..n)];
            }
            let mut this_net = if p.tls.is_some() { Net::Tcp } else { net };
            if req.proto == Proto::Tcp {
                // A query that came over a stream (DoH, DoT, TCP) goes upstream only once the
                // runtime has run its other ready tasks and polled for I/O, so the queries one
                // read of a connection brought in leave back to back: the upstream then reads
                // them, and its replies come back, in batches. Sent as each was decoded, they
                // left spaced by the decoding of the next; an upstream with time to spare woke
                // for each one and each reply woke this server alone, which cost both sides
                // CPU per query and, with 200 DoH streams, q/s. UDP queries are sent from
                // the listener's thread as its recvmmsg batch is read, and are left alone.
                tokio::task::yield_now().await;
            }
            // Like CoreDNS, set before the exchange: dnstap's `extra` sees it.
            req.set_meta("forward/upstream", || p.addr.to_string());
            let started = self.tap.get().map(|_| SystemTime::now());
            // The local side of the upstream socket, asked for only when tapped.
            let mut local = None;
            let mut want_local = started.is_some().then_some(&mut local);
            // CoreDNS's `connect` span, when the query is traced.
            let span = req.trace.as_mut().map(|t| t.open("connect"));
            let res = loop {
                let r = p
                    .connect_from(&req.msg, this_net, deadline, want_local.as_deref_mut())
                    .await;
                if let Ok(m) = &r {
                    if m.header.tc && this_net == Net::Udp && !cfg.force_tcp && cfg.prefer_udp {
                        this_net = Net::Tcp;
                        continue;
                    }
                }
                break r;
            };
            if let (Some(t), Some(span)) = (req.trace.as_mut(), span) {
                t.close(span, vec![("peer.address", p.addr.to_string())]);
            }
            if let (Some(t), Some(started)) = (self.tap.get(), started) {
                let reply = res.as_ref().ok();
                t.forwarded(req, p.addr, local, this_net == Net::Tcp, started, reply);
            }
            let m = match res {
                Err(e) => {
                    upstream_err = Some(e);
                    if cfg.max_fails != 0 {
                        p.healthcheck();
                    }
                    if max_attempts > 0 {
                        attempts += 1;
                        if attempts >= max_attempts {
                            break;
                        }
                    }
                    if fails < n {
                        continue;
                    }
                    break;
                }
                Ok(m) => m,
            };
            let rcode = m.rcode();
            if cfg.failover.contains(&rcode) {
                failovers += 1;
                if failovers < n {
                    continue;
                }
            }
            if next_is_forward && cfg.next.contains(&rcode) {
                return Resolution::Next;
            }
            if next_is_forward
                && cfg.next_on_nodata
                && rcode == Rcode::NOERROR
                && m.answers.is_empty()
            {
                return Resolution::Next;
            }
            return Resolution::Reply(Arc::new(m), p.addr);
        }
        Resolution::Error(upstream_err.unwrap_or_else(|| "no healthy proxies".to_string()))
    }
}

impl Forward {
    /// One `forward` line with its upstreams.
    fn new(cfg: Config, proxies: Vec<Arc<Proxy>>) -> Forward {
        let limit_error = format!("concurrent queries exceeded maximum {}", cfg.max_concurrent);
        Forward {
            inner: Arc::new(Inner {
                cfg,
                proxies,
                robin: AtomicU32::new(0),
                tap: OnceLock::new(),
            }),
            concurrent: AtomicU64::new(0),
            inflight: Arc::new(Mutex::new(HashMap::default())),
            limit_error,
        }
    }

    fn matches(&self, qname: &Name) -> bool {
        let cfg = &self.inner.cfg;
        if !qname.is_subdomain_of(&cfg.from) {
            return false;
        }
        if *qname == cfg.from {
            return true;
        }
        !cfg.except.iter().any(|e| qname.is_subdomain_of(e))
    }

    /// Runs the resolution for `req`, sharing it with identical queries already in flight. The
    /// first query for a key (the leader) runs the exchange itself; the others wait for its
    /// result. Should the leader's future be dropped before it has one, its entry goes with it
    /// and each waiting query starts over (one of them becoming the new leader).
    async fn coalesced(&self, req: &mut Request, net: Net, next_is_forward: bool) -> Resolution {
        let key = Key {
            name: req.qname().to_lowercase(),
            qtype: req.qtype(),
            qclass: req.qclass(),
            do_bit: req.do_bit(),
            cd: req.msg.header.cd,
            rd: req.msg.header.rd,
            net,
            edns: req.msg.edns.as_ref().map(|e| {
                (
                    e.udp_size,
                    e.options.iter().map(|o| (o.code, o.data.clone())).collect(),
                )
            }),
        };
        loop {
            let rx = {
                let Ok(mut map) = self.inflight.lock() else {
                    return Resolution::Error("forward: in-flight table poisoned".into());
                };
                match map.get_mut(&key) {
                    Some(tx) => Some(tx.get_or_insert_with(|| watch::channel(None).0).subscribe()),
                    None => {
                        map.insert(key.clone(), None);
                        None
                    }
                }
            };
            let Some(mut rx) = rx else {
                let mut lead = Leader {
                    inflight: &self.inflight,
                    key: Some(key),
                };
                let res = self.inner.resolve(req, net, next_is_forward).await;
                if let Some(tx) = lead.finish() {
                    if tx.receiver_count() > 0 {
                        tx.send_replace(Some(res.clone()));
                    }
                }
                return res;
            };
            let got = match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone(),
                Err(_) => None,
            };
            if let Some(res) = got {
                return res;
            }
            // The leader went away without a result: start over.
        }
    }
}

/// The leader's claim on an in-flight entry: removed when the leader finishes or is dropped.
struct Leader<'a> {
    inflight: &'a Inflight,
    key: Option<Key>,
}

impl Leader<'_> {
    /// Takes the entry out of the table, returning its sender (when a query waits).
    fn finish(&mut self) -> Option<Waiters> {
        let key = self.key.take()?;
        self.inflight.lock().ok()?.remove(&key).flatten()
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Dropping the sender wakes the waiting queries with an error; they start over.
        drop(self.finish());
    }
}

impl Handler for Forward {
    fn name(&self) -> &'static str {
        "forward"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if !self.matches(&req.qname()) {
                return next.run(req).await;
            }
            let cfg = &self.inner.cfg;
            let _guard = if cfg.max_concurrent > 0 {
                let count = self.concurrent.fetch_add(1, Ordering::Relaxed) + 1;
                let g = ConcurrencyGuard(&self.concurrent);
                if count > cfg.max_concurrent {
                    metrics::MAX_CONCURRENT_REJECTS.inc();
                    return Outcome::error("forward", Rcode::REFUSED, self.limit_error.clone());
                }
                Some(g)
            } else {
                None
            };
            let net = if cfg.force_tcp {
                Net::Tcp
            } else if cfg.prefer_udp {
                Net::Udp
            } else {
                match req.proto {
                    Proto::Udp => Net::Udp,
                    Proto::Tcp => Net::Tcp,
                }
            };
            let next_is_forward = next.name() == Some("forward");
            // HINFO is never coalesced: the `loop` plugin's probe must reach the server again
            // each time round a forwarding loop (CoreDNS does not coalesce at all), else the
            // copy coming back would wait on itself and the loop would go unnoticed.
            let res = if req.qtype() == RType::HINFO {
                self.inner.resolve(req, net, next_is_forward).await
            } else {
                self.coalesced(req, net, next_is_forward).await
            };
            match res {
                Resolution::Reply(m, upstream) => {
                    req.set_meta("forward/upstream", || upstream.to_string());
                    // The leader without followers holds the only reference: no copy.
                    let mut m = Arc::try_unwrap(m).unwrap_or_else(|m| (*m).clone());
                    m.header.id = req.msg.header.id;
                    Outcome::reply("forward", m)
                }
                Resolution::Next => next.run(req).await,
                Resolution::Error(e) => Outcome::error("forward", Rcode::SERVFAIL, e),
            }
        })
    }
}

/// The upstream `addr` with the block's timeouts, connection reuse and health-check settings.
fn new_proxy(
    cfg: &Config,
    addr: std::net::SocketAddr,
    tls: Option<TlsSettings>,
    spawner: Spawner,
    clock: Clock,
) -> Proxy {
    let mut p = Proxy::new(
        addr,
        tls,
        cfg.read_timeout,
        cfg.expire,
        cfg.max_idle_conns,
        cfg.source_address,
        HealthSettings {
            interval: cfg.hc_interval,
            recursion_desired: cfg.hc_recursion_desired,
            domain: cfg.hc_domain.clone(),
            tcp: cfg.force_tcp,
        },
        spawner,
        clock,
    );
    p.max_age = cfg.max_age;
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::directive;

    /// A `forward` handler for one Corefile block's first directive.
    fn forward(text: &str) -> Forward {
        let cfg = setup::parse(&directive(text)).unwrap();
        let proxies = cfg
            .to
            .iter()
            .map(|u| {
                Arc::new(new_proxy(
                    &cfg,
                    u.addr,
                    None,
                    Spawner::for_tests(),
                    Clock::system(),
                ))
            })
            .collect();
        Forward::new(cfg, proxies)
    }

    /// A waiting query whose leader is dropped before the reply starts over: it sends its own
    /// query and gets the upstream's answer, and the in-flight table is left empty.
    #[tokio::test]
    async fn a_dropped_leader_hands_over_to_a_waiting_query() {
        let up = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = up.local_addr().unwrap().port();
        let f = forward(&format!(". {{\n forward . 127.0.0.1:{port}\n}}\n"));
        let mut q = Message::query(4321, Name::parse("Drop.Example.").unwrap(), RType::A);
        q.header.rd = true;
        let client = "127.0.0.1:5353".parse().unwrap();
        let mut req = Request::new(q.clone(), client, Proto::Udp);
        let questions = q.questions.clone();
        let mut req2 = Request::new(q, client, Proto::Udp);
        let mut buf = [0u8; 512];

        // The leader sends its query; the upstream never answers it.
        let mut leader = Box::pin(f.coalesced(&mut req, Net::Udp, false));
        tokio::select! {
            _ = &mut leader => panic!("the leader finished without a reply"),
            r = up.recv_from(&mut buf) => { r.unwrap(); }
        }
        // A second identical query waits on the leader.
        let mut follower = Box::pin(f.coalesced(&mut req2, Net::Udp, false));
        tokio::select! {
            biased;
            _ = &mut follower => panic!("the follower finished without a reply"),
            _ = tokio::task::yield_now() => {}
        }
        assert_eq!(f.inflight.lock().unwrap().len(), 1);
        drop(leader);
        assert!(f.inflight.lock().unwrap().is_empty());

        // The follower sends its own query, which is answered.
        let answer = async {
            let (n, from) = up.recv_from(&mut buf).await.unwrap();
            let sent = Message::parse(&buf[..n]).unwrap();
            assert_eq!(sent.questions, questions);
            let mut r = Message::reply_to(&sent);
            r.header.ra = true;
            up.send_to(&r.to_wire(), from).await.unwrap();
        };
        let (res, ()) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(follower, answer)
        })
        .await
        .unwrap();
        let Resolution::Reply(m, _) = res else {
            panic!("expected a reply, got {res:?}");
        };
        assert_eq!(m.header.id, 4321);
        assert!(m.header.qr && m.header.ra && m.header.rd);
        assert_eq!(m.rcode(), Rcode::NOERROR);
        assert_eq!(m.questions, req.msg.questions);
        assert!(m.answers.is_empty());
        assert!(f.inflight.lock().unwrap().is_empty());
    }
}
