//! The `cache` plugin: a success and a denial cache in front of the rest of the chain, with
//! CoreDNS's keys, TTL clamping, prefetch, serve_stale, SERVFAIL caching and metrics. Hits are
//! served from stored wire bytes (TTL fields patched in place). Caches subscribe to their block's
//! invalidation bus, so a `kubernetes` plugin in the same block can drop changed names.

pub(crate) mod classify;
pub(crate) mod config;
pub(crate) mod metrics;
pub(crate) mod store;

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use sextant_corefile::{Directive, Error};
use sextant_wire::{Class, Message, Name, RType, Rcode};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Proto, Request, SetupCtx};
use crate::server::invalidate::{Invalidate, Invalidation, InvalidationBus};
use crate::server::lifecycle::Spawner;
use classify::{cache_type, cacheable, clamp_ttl, minimal_ttl, MsgType};
pub(crate) use config::Config;
use metrics::{Ctr, Handles, Meter};
use store::{Budget, Item, Kind, Store};

use crate::pkg::clock::Clock;

const NAME: &str = "cache";

/// The generation's shared memory budget, set by the first `cache` that names one.
#[derive(Default)]
struct BudgetSlot(std::sync::Mutex<Option<Arc<Budget>>>);

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let mut cfg = config::parse(lines[0], &ctx.block.zones)?;
    cfg.view = ctx.block.view.clone().unwrap_or_default();
    let budget = match cfg.budget {
        None => None,
        Some(size) => {
            let slot = ctx.shared::<BudgetSlot>();
            let mut g = slot
                .0
                .lock()
                .map_err(|_| lines[0].err("budget lock poisoned"))?;
            let b = g.get_or_insert_with(|| Arc::new(Budget::new(size as usize)));
            if b.limit != size as usize {
                let at = lines[0]
                    .sub()
                    .iter()
                    .find(|s| s.name.text == "budget")
                    .unwrap_or(lines[0]);
                return Err(at.err(format!(
                    "budget {size} differs from the budget {} of another server block: all caches of a Corefile share one budget",
                    b.limit
                )));
            }
            Some(b.clone())
        }
    };
    let bus = ctx.invalidation();
    let cache = Cache::with_budget(cfg, ctx.clock(), bus, ctx.spawner(), budget);
    ctx.add_handler(Arc::new(cache));
    Ok(())
}

/// The handler; the state lives in [`Inner`] so background refreshes can hold it.
pub(crate) struct Cache {
    inner: Arc<Inner>,
}

/// A cache's state, shared with its background refreshes and the invalidation bus.
pub(crate) struct Inner {
    cfg: Config,
    zones: Vec<Name>,
    /// True when one of `zones` is the root (every name is in).
    all_zones: bool,
    /// Metric handles (and the `zones` label).
    metrics: Handles,
    pcache: Arc<Store>,
    ncache: Arc<Store>,
    pexcept: Vec<Name>,
    nexcept: Vec<Name>,
    /// Keys the stores: randomly seeded per cache, so nobody outside can pick names that collide
    /// (random-subdomain floods).
    hasher: foldhash::quality::SeedableRandomState,
    clock: Clock,
    bus: Arc<InvalidationBus>,
    /// Background refreshes run under the generation.
    spawner: Spawner,
}

/// What identifies one lookup: the question name, type and class, DO/CD/AD/RD and the keyed
/// hash. The name is borrowed from the request on the hit path ([`Probe`]) and owned for work
/// that outlives the borrow ([`Key`]: misses, refreshes).
#[derive(Clone, Copy)]
struct Lookup<N> {
    name: N,
    qtype: RType,
    qclass: Class,
    do_bit: bool,
    cd: bool,
    ad: bool,
    rd: bool,
    hash: u64,
}

type Probe<'a> = Lookup<&'a Name>;
type Key = Lookup<Name>;

impl<N> Lookup<N> {
    /// The same lookup with `name` in place of its name.
    fn with_name<M>(&self, name: M) -> Lookup<M> {
        Lookup {
            name,
            qtype: self.qtype,
            qclass: self.qclass,
            do_bit: self.do_bit,
            cd: self.cd,
            ad: self.ad,
            rd: self.rd,
            hash: self.hash,
        }
    }
}

impl Probe<'_> {
    fn matches(&self, i: &Item) -> bool {
        i.matches(self.name, self.qtype, self.qclass, self.do_bit, self.cd)
    }

    fn to_key(self) -> Key {
        self.with_name(self.name.clone())
    }
}

impl Key {
    fn probe(&self) -> Probe<'_> {
        self.with_name(&self.name)
    }
}

/// The process's shared hash seed, drawn from the OS random source once.
static HASH_SEED: LazyLock<foldhash::SharedSeed> =
    LazyLock::new(|| foldhash::SharedSeed::from_u64(rand::random()));

/// The name of a request without a question (unit tests; the server rejects those).
static ROOT: LazyLock<Name> = LazyLock::new(Name::root);

/// How a reply from the rest of the chain is written back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// A miss: cache it and send it.
    Normal,
    /// A prefetch: cache it, nothing is sent.
    Prefetch,
    /// Verifying a stale item: only a usable refresh counts (RFC 8767 section 4).
    Verify { prefetch: bool },
}

/// What [`Inner::serve_zone`] found when it could not answer at once.
struct Pending {
    key: Key,
    now: Instant,
    /// The item and its TTL left (stale when not above 0), None on a miss.
    found: Option<(Arc<Item>, i64)>,
}

/// What a refresh produced.
struct Refreshed {
    out: Outcome,
    refreshed: bool,
    item: Option<Arc<Item>>,
}

fn label_zone(z: &Name, name: &Name) -> bool {
    name.is_subdomain_of(z)
}

impl Cache {
    #[cfg(test)]
    pub(crate) fn new(
        cfg: Config,
        clock: Clock,
        bus: Arc<InvalidationBus>,
        spawner: Spawner,
    ) -> Cache {
        Cache::with_budget(cfg, clock, bus, spawner, None)
    }

    /// A cache whose entries also count against a memory budget shared with other caches.
    pub(crate) fn with_budget(
        cfg: Config,
        clock: Clock,
        bus: Arc<InvalidationBus>,
        spawner: Spawner,
        budget: Option<Arc<Budget>>,
    ) -> Cache {
        let zones = cfg.zones.clone();
        let label: Vec<String> = zones.iter().map(Name::to_string).collect();
        let inner = Arc::new(Inner {
            all_zones: zones.iter().any(Name::is_root),
            metrics: Handles::new(label.join(","), cfg.view.clone()),
            pcache: Store::shared(cfg.pcap, budget.clone()),
            ncache: Store::shared(cfg.ncap, budget),
            pexcept: cfg.pexcept.clone(),
            nexcept: cfg.nexcept.clone(),
            zones,
            cfg,
            hasher: foldhash::quality::SeedableRandomState::with_seed(rand::random(), &HASH_SEED),
            clock,
            bus: bus.clone(),
            spawner,
        });
        let weak: Weak<dyn Invalidate> = Arc::downgrade(&(inner.clone() as Arc<dyn Invalidate>));
        bus.subscribe(weak);
        Cache { inner }
    }

    /// The shared state (tests, metrics).
    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    /// The lookup for `req`: its question, DO/CD/AD/RD, and the keyed hash of the question name
    /// (case-folded), type, class, DO and CD.
    fn probe<'a>(&self, req: &'a Request) -> Probe<'a> {
        let (name, qtype, qclass) = match req.msg.question() {
            Some(q) => (&q.name, q.qtype, q.qclass),
            None => (&*ROOT, RType::default(), Class::default()),
        };
        let do_bit = req.do_bit();
        let cd = req.msg.header.cd;
        let mut h = self.hasher.build_hasher();
        // The name case-folded eight bytes at a time (the last chunk zero-padded: a name's wire
        // form is self-delimiting, so padding cannot make two names alike).
        let mut chunks = name.wire().chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            h.write_u64(ascii_lower8(u64::from_le_bytes(b)));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            h.write_u64(ascii_lower8(u64::from_le_bytes(b)));
        }
        h.write_u64(
            qtype.0 as u64 | (qclass.0 as u64) << 16 | (do_bit as u64) << 32 | (cd as u64) << 33,
        );
        Probe {
            name,
            qtype,
            qclass,
            do_bit,
            cd,
            ad: req.msg.header.ad,
            rd: req.msg.header.rd,
            hash: h.finish(),
        }
    }

    fn update_entries(&self, server: &Arc<str>) {
        // Evictions the shared budget made in this cache's stores (possibly while another
        // cache was storing).
        for (store, ctr) in [
            (&self.pcache, Ctr::EvictSuccess),
            (&self.ncache, Ctr::EvictDenial),
        ] {
            for _ in 0..store.take_budget_evictions() {
                self.metrics.inc(server, ctr);
            }
        }
        self.metrics.set_entries(server, false, self.pcache.len());
        self.metrics.set_entries(server, true, self.ncache.len());
    }

    /// Entries in the success and the denial cache.
    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.pcache.len(), self.ncache.len())
    }

    fn in_stale_window(&self, ttl: i64) -> bool {
        ttl > 0 || (!self.cfg.stale_up_to.is_zero() && -ttl < self.cfg.stale_up_to.as_secs() as i64)
    }

    fn hit(m: &Meter<'_>, kind: Kind) {
        m.inc(match kind {
            Kind::Success => Ctr::HitSuccess,
            Kind::Denial => Ctr::HitDenial,
        });
    }

    /// CoreDNS `getIfNotStale`; the item with its TTL left at `now`.
    fn get_if_not_stale(
        &self,
        now: Instant,
        k: Probe<'_>,
        m: &Meter<'_>,
    ) -> Option<(Arc<Item>, i64)> {
        m.inc(Ctr::Requests);
        if self.cfg.prefer_positive && !self.cfg.stale_up_to.is_zero() {
            if let Some(i) = self.pcache.get(k.hash).and_then(|i| answering_item(&i, &k)) {
                let ttl = i.ttl(now);
                if self.in_stale_window(ttl) {
                    Self::hit(m, Kind::Success);
                    return Some((i, ttl));
                }
            }
        }
        if let Some(i) = self.ncache.get(k.hash) {
            let ttl = i.ttl(now);
            if k.matches(&i) && self.in_stale_window(ttl) {
                if i.rcode == Rcode::SERVFAIL {
                    // A cached SERVFAIL does not shadow a usable positive answer.
                    if let Some(p) = self.pcache.get(k.hash) {
                        let pttl = p.ttl(now);
                        if k.matches(&p) && self.in_stale_window(pttl) {
                            Self::hit(m, Kind::Success);
                            return Some((p, pttl));
                        }
                    }
                }
                Self::hit(m, Kind::Denial);
                return Some((i, ttl));
            }
        }
        if let Some(i) = self.pcache.get(k.hash) {
            let ttl = i.ttl(now);
            if k.matches(&i) && self.in_stale_window(ttl) {
                Self::hit(m, Kind::Success);
                return Some((i, ttl));
            }
        }
        m.inc(Ctr::Misses);
        None
    }

    /// CoreDNS's `ResponseWriter.WriteMsg`: clamps every TTL of `res` to the cache duration,
    /// stores it if it may be cached, clears AD for clients that did not want it. Returns the
    /// stored item.
    fn on_reply(
        &self,
        k: &Key,
        res: &mut Message,
        prefetch: bool,
        seq: u64,
        server: &Arc<str>,
    ) -> Option<Arc<Item>> {
        let mt = cache_type(res);
        let has_key = cacheable(res, mt);
        let duration = match mt {
            MsgType::NameError | MsgType::NoData => clamp_ttl(
                minimal_ttl(res, mt, self.cfg.nttl),
                self.cfg.minnttl,
                self.cfg.nttl,
            ),
            MsgType::ServerError => self.cfg.failttl.as_secs().min(u32::MAX as u64) as u32,
            _ => clamp_ttl(
                minimal_ttl(res, mt, self.cfg.pttl),
                self.cfg.minpttl,
                self.cfg.pttl,
            ),
        };
        for r in res
            .answers
            .iter_mut()
            .chain(res.authority.iter_mut())
            .chain(res.additional.iter_mut())
        {
            r.ttl = duration;
        }
        let mut stored = None;
        if has_key && duration > 0 {
            let q_ok = res.header.qr
                && res.questions.len() == 1
                && res.questions[0].name == k.name
                && res.questions[0].qtype == k.qtype
                && res.questions[0].qclass == k.qclass;
            if !q_ok {
                self.metrics.inc(server, Ctr::Drops);
            } else if self.bus.seq() == seq {
                stored = self.set(k, res, mt, duration, prefetch, server);
                self.update_entries(server);
            }
        }
        if !k.do_bit && !k.ad {
            res.header.ad = false;
        }
        stored
    }

    fn excepted(list: &[Name], name: &Name) -> bool {
        list.iter().any(|z| label_zone(z, name))
    }

    fn set(
        &self,
        k: &Key,
        m: &mut Message,
        mt: MsgType,
        duration: u32,
        prefetch: bool,
        server: &Arc<str>,
    ) -> Option<Arc<Item>> {
        let now = self.clock.now();
        let answering = classify::answers_question(m);
        match mt {
            MsgType::NoError | MsgType::Delegation => {
                if Self::excepted(&self.pexcept, &k.name) {
                    return None;
                }
                let mut i = Item::from_reply(m, k.do_bit, k.cd, answering, duration, now)?;
                if self.cfg.prefer_positive && !answering {
                    if let Some(prev) = self.pcache.get(k.hash) {
                        i.last_known_good = answering_item(&prev, &k.probe());
                    }
                }
                let i = Arc::new(i);
                if self.pcache.add(k.hash, i.clone()) {
                    self.metrics.inc(server, Ctr::EvictSuccess);
                }
                if (!self.cfg.prefer_positive && prefetch)
                    || (self.cfg.prefer_positive && answering)
                {
                    self.ncache.remove(k.hash);
                }
                Some(i)
            }
            MsgType::NameError | MsgType::NoData | MsgType::ServerError => {
                if Self::excepted(&self.nexcept, &k.name) {
                    return None;
                }
                let i = Arc::new(Item::from_reply(
                    m, k.do_bit, k.cd, answering, duration, now,
                )?);
                if self.ncache.add(k.hash, i.clone()) {
                    self.metrics.inc(server, Ctr::EvictDenial);
                }
                Some(i)
            }
            _ => None,
        }
    }

    /// Passes the request down the chain (AD set, as CoreDNS asks upstream) and writes the reply
    /// back through `writer`.
    async fn refresh(
        &self,
        req: &mut Request,
        next: Next<'_>,
        k: &Key,
        writer: Writer,
    ) -> Refreshed {
        let seq = self.bus.seq();
        let ad = req.msg.header.ad;
        req.msg.header.ad = true;
        let mut out = next.run(req).await;
        req.msg.header.ad = ad;
        let server = req.server.clone();
        let prefetch = matches!(writer, Writer::Prefetch | Writer::Verify { prefetch: true });
        let Some(res) = out.message_mut() else {
            return Refreshed {
                out,
                refreshed: false,
                item: None,
            };
        };
        match writer {
            Writer::Normal | Writer::Prefetch => {
                let item = self.on_reply(k, res, prefetch, seq, &server);
                Refreshed {
                    out,
                    refreshed: true,
                    item,
                }
            }
            Writer::Verify { .. } => {
                let q_ok = res.questions.first().is_some_and(|q| {
                    q.name == k.name && q.qtype == k.qtype && q.qclass == k.qclass
                });
                if res.header.tc || !q_ok {
                    return Refreshed {
                        out,
                        refreshed: false,
                        item: None,
                    };
                }
                if self.cfg.prefer_positive {
                    let usable =
                        cache_type(res) == MsgType::NoError && classify::answers_question(res);
                    let item = self.on_reply(k, res, prefetch || !usable, seq, &server);
                    return Refreshed {
                        out,
                        refreshed: usable,
                        item: item.filter(|_| usable),
                    };
                }
                let t = classify::typify(res);
                let rc = res.rcode();
                if matches!(t, MsgType::OtherError | MsgType::Meta | MsgType::Update)
                    || (rc != Rcode::NOERROR && rc != Rcode::NXDOMAIN)
                {
                    return Refreshed {
                        out,
                        refreshed: false,
                        item: None,
                    };
                }
                let item = self.on_reply(k, res, prefetch, seq, &server);
                Refreshed {
                    out,
                    refreshed: true,
                    item,
                }
            }
        }
    }

    fn should_prefetch(&self, i: &Item, now: Instant) -> bool {
        if self.cfg.prefetch == 0 {
            return false;
        }
        let hits = i.update_freq(self.cfg.prefetch_window, now);
        let threshold = (self.cfg.prefetch_pct as u64 * i.orig_ttl as u64).div_ceil(100) as i64;
        hits >= self.cfg.prefetch && i.ttl(now) <= threshold
    }

    /// Starts one background refresh of `i` unless one is running (or a failed one is waiting
    /// out its recheck delay).
    fn try_prefetch(
        self: &Arc<Self>,
        i: &Arc<Item>,
        req: &Request,
        next: Next<'_>,
        k: &Key,
        now: Instant,
        stale: bool,
    ) {
        let recheck = if stale {
            self.cfg.stale_recheck
        } else {
            Duration::ZERO
        };
        if !i.begin_refresh(self.clock.now(), recheck) {
            return;
        }
        let chain = next.owned_chain();
        let mut bg = background_request(req);
        let me = self.clone();
        let i2 = i.clone();
        let k = k.clone();
        let started = self.spawner.spawn(async move {
            let i = i2;
            me.metrics.inc(&bg.server, Ctr::Prefetch);
            let writer = if stale {
                Writer::Verify { prefetch: true }
            } else {
                Writer::Prefetch
            };
            let r = me.refresh(&mut bg, Next::new(&chain), &k, writer).await;
            if r.refreshed {
                // Keep the popularity the old item had.
                if let Some(i1) = me.exists(k.hash) {
                    i1.reset_freq(now, i.hits());
                }
            }
            i.end_refresh(me.clock.now(), recheck, r.refreshed);
        });
        if !started {
            i.end_refresh(self.clock.now(), recheck, false);
        }
    }

    fn exists(&self, hash: u64) -> Option<Arc<Item>> {
        self.ncache.get(hash).or_else(|| self.pcache.get(hash))
    }

    /// Verifies a stale item in the background, waiting at most `verify_timeout` for it.
    async fn verify_with_timeout(
        self: &Arc<Self>,
        req: &Request,
        next: Next<'_>,
        k: &Key,
        i: &Arc<Item>,
    ) -> Option<Outcome> {
        let chain = next.owned_chain();
        let mut bg = background_request(req);
        bg.proto = req.proto;
        let me = self.clone();
        let kk = k.clone();
        let ii = i.clone();
        let recheck = self.cfg.stale_recheck;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = self.spawner.spawn(async move {
            let r = me
                .refresh(
                    &mut bg,
                    Next::new(&chain),
                    &kk,
                    Writer::Verify { prefetch: true },
                )
                .await;
            if !recheck.is_zero() {
                ii.end_refresh(me.clock.now(), recheck, r.refreshed);
            }
            let _ = tx.send(r);
        });
        if !started {
            return None;
        }
        let r = self
            .clock
            .timeout(self.cfg.verify_timeout, rx)
            .await
            .ok()?
            .ok()?;
        if !r.refreshed {
            return None;
        }
        match r.item {
            Some(item) => {
                let ttl = if self.cfg.keepttl {
                    item.orig_ttl
                } else {
                    item.ttl(self.clock.now()).max(0) as u32
                };
                Some(Outcome::wire(
                    NAME,
                    item.to_wire(k.rd, k.cd, k.do_bit, k.ad, ttl),
                ))
            }
            None => {
                let mut out = r.out;
                out.writer = NAME;
                Some(out)
            }
        }
    }

    /// CoreDNS `ServeDNS` for a name in the cache's zones, its synchronous part: a fresh hit
    /// that needs no prefetch is answered here from the borrowed question (no allocation but
    /// the reply's bytes, and no future to build); anything else is left to [`Inner::serve_rest`]
    /// with an owned key and what the lookup found.
    fn serve_zone(&self, req: &Request) -> Result<Outcome, Pending> {
        let now = self.clock.now();
        let p = self.probe(req);
        let meter = self.metrics.meter(&req.server);
        let found = self.get_if_not_stale(now, p, &meter);
        if let Some((i, ttl)) = &found {
            if *ttl > 0 && !self.should_prefetch(i, now) {
                let out_ttl = if self.cfg.keepttl {
                    i.orig_ttl
                } else {
                    *ttl as u32
                };
                return Ok(Outcome::wire(
                    NAME,
                    i.to_wire(p.rd, p.cd, p.do_bit, p.ad, out_ttl),
                ));
            }
        }
        Err(Pending {
            key: p.to_key(),
            now,
            found,
        })
    }

    /// The rest of `ServeDNS` after [`Inner::serve_zone`]: a miss, a stale item or a prefetch.
    async fn serve_rest(
        self: &Arc<Self>,
        req: &mut Request,
        next: Next<'_>,
        l: Pending,
    ) -> Outcome {
        let Pending { key: k, now, found } = l;
        let Some((i, ttl)) = found else {
            return self.refresh(req, next, &k, Writer::Normal).await.out;
        };
        let server = req.server.clone();
        let stale = ttl <= 0;
        if stale {
            if self.cfg.verify_stale {
                let recheck = self.cfg.stale_recheck;
                let track = !recheck.is_zero();
                if !track || i.begin_refresh(now, recheck) {
                    if self.cfg.verify_timeout.is_zero() {
                        let r = self
                            .refresh(req, next, &k, Writer::Verify { prefetch: false })
                            .await;
                        if track {
                            i.end_refresh(self.clock.now(), recheck, r.refreshed);
                        }
                        if r.refreshed {
                            return r.out;
                        }
                    } else if let Some(out) = self.verify_with_timeout(req, next, &k, &i).await {
                        return out;
                    }
                }
            } else {
                // The refresh's popularity reset is taken at the moment the item expired.
                let expired_at = now
                    .checked_sub(Duration::from_secs(ttl.unsigned_abs()))
                    .unwrap_or(now);
                self.try_prefetch(&i, req, next, &k, expired_at, true);
            }
            self.metrics.inc(&server, Ctr::ServedStale);
        } else {
            // should_prefetch said yes above (it counted this hit).
            self.try_prefetch(&i, req, next, &k, now, false);
        }
        let out_ttl = if stale && self.cfg.stale_ttl > 0 {
            self.cfg.stale_ttl
        } else if self.cfg.keepttl {
            i.orig_ttl
        } else {
            ttl.max(0) as u32
        };
        Outcome::wire(NAME, i.to_wire(k.rd, k.cd, k.do_bit, k.ad, out_ttl))
    }
}

/// Lower-cases the ASCII letters among eight bytes packed in a `u64` (other bytes, including
/// those of 0x80 and above, stay as they are), like `to_ascii_lowercase` on each byte.
fn ascii_lower8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = x & !HIGH;
    // High bit of each byte: set where the low seven bits are >= 'A', and where they are > 'Z'.
    let ge_a = low7 + (0x80 - b'A' as u64) * ONES;
    let gt_z = low7 + (0x80 - b'Z' as u64 - 1) * ONES;
    let upper = ge_a & !gt_z & !x & HIGH;
    x | (upper >> 2)
}

/// The item that answers `k`: `i` itself or the last known good answer it keeps.
fn answering_item(i: &Arc<Item>, k: &Probe<'_>) -> Option<Arc<Item>> {
    if i.answering() && k.matches(i) {
        return Some(i.clone());
    }
    i.last_known_good
        .as_ref()
        .filter(|l| l.answering() && k.matches(l))
        .cloned()
}

/// A copy of `req` for a refresh nobody waits on: over TCP (so upstream replies are not
/// truncated), same question, DO and CD.
fn background_request(req: &Request) -> Request {
    Request {
        msg: req.msg.clone(),
        client: req.client,
        local: req.local,
        proto: Proto::Tcp,
        size: req.size,
        start: Instant::now(),
        zone: req.zone.clone(),
        server: req.server.clone(),
        depth: req.depth,
        resolver: req.resolver.clone(),
        raw: None,
        backlogged: false,
        reply_tapped: false,
        meta: req.meta.clone(),
        view: req.view.clone(),
        trace: None,
    }
}

impl Invalidate for Inner {
    fn invalidate(&self, inv: &Invalidation) {
        let hit = |i: &Item| {
            inv.all
                || inv.names.iter().any(|n| i.name_is(n))
                || inv.subtrees.iter().any(|z| i.name_under(z))
        };
        self.pcache.remove_if(hit);
        self.ncache
            .remove_if(|i| hit(i) || inv.negative_subtrees.iter().any(|z| i.name_under(z)));
    }
}

impl Handler for Cache {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let qname = req.msg.question().map_or(&*ROOT, |q| &q.name);
        if !self.inner.all_zones && !self.inner.zones.iter().any(|z| qname.is_subdomain_of(z)) {
            return next.run(req);
        }
        // A fresh hit is a ready future: no state machine of the miss path to build and drop.
        match self.inner.serve_zone(req) {
            Ok(out) => Box::pin(std::future::ready(out)),
            Err(l) => Box::pin(async move { self.inner.serve_rest(req, next, l).await }),
        }
    }
}

#[cfg(test)]
mod tests;
