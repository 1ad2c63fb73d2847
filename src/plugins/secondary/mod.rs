//! The `secondary` plugin: zones transferred from primaries (CoreDNS `plugin/secondary`), kept
//! up to date by SOA refresh/retry/expire timers and NOTIFY from a primary, with IXFR when a
//! copy is held (AXFR otherwise, and as the fallback). The last good copy is served while a
//! transfer runs and after one fails; an expired zone answers SERVFAIL.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use prometheus::{register_counter_vec, register_gauge_vec, CounterVec, GaugeVec};
use sextant_corefile::{Directive, Error};
use sextant_wire::{opcode, Class, Message, Name, RData, RType, Rcode, Record, Soa};
use sextant_zone::{serial_less, Builder, Zone};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::log::PluginLog;
use crate::pkg::authority::{self, ZoneSlot};
use crate::pkg::clock::Clock;
use crate::pkg::fallthrough::Fall;
use crate::pkg::zones;
use crate::plugin::{BoxFuture, Handler, Next, Notifier, Outcome, Request, SetupCtx, Transferer};

const LOG: PluginLog = PluginLog("secondary");
const FILE_LOG: PluginLog = PluginLog("file");

static TRANSFERS: LazyLock<CounterVec> = LazyLock::new(|| {
    register_counter_vec!(
        "sextant_secondary_transfers_total",
        "Zone transfers into secondary zones by zone, type (AXFR, IXFR) and result (success, failure, uptodate).",
        &["zone", "type", "result"]
    )
    .expect("metric registers once")
});
static SERIAL: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "sextant_secondary_zone_serial",
        "SOA serial of the copy a secondary zone serves (absent until the first transfer).",
        &["zone"]
    )
    .expect("metric registers once")
});
static EXPIRED: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "sextant_secondary_zone_expired",
        "1 when a secondary zone is expired (no primary reached within the SOA expire time).",
        &["zone"]
    )
    .expect("metric registers once")
});
static REFRESH_FAILURES: LazyLock<CounterVec> = LazyLock::new(|| {
    register_counter_vec!(
        "sextant_secondary_refresh_failures_total",
        "SOA checks of a secondary zone for which no primary answered.",
        &["zone"]
    )
    .expect("metric registers once")
});

/// Connect and per-message read timeout of a transfer (miekg/dns: 2 s).
const XFR_TIMEOUT: Duration = Duration::from_secs(2);
/// First retry delay of the initial transfer, doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// One zone with its primaries.
struct Secondary {
    slot: Arc<ZoneSlot>,
    primaries: Vec<SocketAddr>,
    /// The generation's clock: SOA timers, retry back-off and jitter wait on it.
    clock: Clock,
    /// Wakes the zone's task when a primary sent NOTIFY.
    notified: Notify,
    notifier: OnceLock<Arc<dyn Notifier>>,
}

/// The handler: every secondary zone of the block.
pub(crate) struct SecondaryPlugin {
    zones: Vec<Arc<Secondary>>,
    slots: Vec<Arc<ZoneSlot>>,
    fall: Fall,
}

/// `ADDR` or `ADDR:PORT` (port 53 when none), as CoreDNS `parse.HostPort`.
fn host_port(s: &str) -> Option<SocketAddr> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    s.parse().ok()
}

/// (zones, primaries per zone, fallthrough) of the block's `secondary` lines.
type Parsed = (Vec<(Name, Vec<SocketAddr>)>, Fall);

pub(crate) fn parse(lines: &[&Directive], block: &[String]) -> Result<Parsed, Error> {
    let mut zones: Vec<(Name, Vec<SocketAddr>)> = Vec::new();
    let mut fall = Fall::default();
    for d in lines {
        let origins = zones::from_args(d, &d.args, block)?;
        let mut from = Vec::new();
        let mut has_transfer = false;
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "transfer" => {
                    let Some(kind) = sub.args.first() else {
                        return Err(sub.arg_err(&sub.name));
                    };
                    if kind.text != "from" {
                        return Err(sub.err_at(kind, format!("unknown property {}", kind.text)));
                    }
                    if sub.args.len() < 2 {
                        return Err(
                            sub.err("Wrong argument count or unexpected line ending after 'from'")
                        );
                    }
                    for a in &sub.args[1..] {
                        if a.text == "*" {
                            return Err(sub.err_at(a, "can't use '*' in transfer from"));
                        }
                        from.push(host_port(&a.text).ok_or_else(|| {
                            sub.err_at(a, format!("must specify an IP address: `{}'", a.text))
                        })?);
                    }
                    has_transfer = true;
                }
                "fallthrough" => fall = Fall::parse(sub)?,
                "catalog" => {
                    return Err(sub.err("catalog zones (RFC 9432) are not supported by Sextant yet"))
                }
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
        if !has_transfer {
            return Err(d.err("secondary zones require a transfer from property"));
        }
        for o in origins {
            zones.retain(|(z, _)| *z != o);
            zones.push((o, from.clone()));
        }
    }
    Ok((zones, fall))
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let (zs, fall) = parse(lines, &ctx.block.zones)?;
    let clock = ctx.clock();
    let zones: Vec<Arc<Secondary>> = zs
        .into_iter()
        .map(|(origin, primaries)| {
            Arc::new(Secondary {
                slot: Arc::new(ZoneSlot::new(origin, Default::default())),
                primaries,
                clock: clock.clone(),
                notified: Notify::new(),
                notifier: OnceLock::new(),
            })
        })
        .collect();
    let zz = zones.clone();
    ctx.link(lines[0], move |chain| {
        if let Some(n) = chain.iter().find_map(|h| h.notifier()) {
            for z in &zz {
                let _ = z.notifier.set(n.clone());
            }
        }
        Ok(())
    });
    for z in &zones {
        let z = z.clone();
        ctx.task(move |t| async move {
            tokio::select! {
                _ = t.cancelled() => {}
                _ = z.run() => {}
            }
        });
    }
    let slots = zones.iter().map(|z| z.slot.clone()).collect();
    ctx.add_handler(Arc::new(SecondaryPlugin { zones, slots, fall }));
    Ok(())
}

fn jitter(max_ms: u64) -> Duration {
    Duration::from_millis(rand::random::<u64>() % max_ms.max(1))
}

/// What a transfer brought.
enum Got {
    /// The primary's copy is the one held (IXFR with a single SOA).
    UpToDate,
    /// A new zone.
    Zone(Box<Zone>, &'static str),
}

impl Secondary {
    fn zone_label(&self) -> String {
        self.slot.origin.to_string()
    }

    /// The zone's life: the first transfer (retried with backoff), then SOA timers and NOTIFY.
    async fn run(self: Arc<Self>) {
        let mut wait = FIRST_RETRY;
        loop {
            match self.transfer_in().await {
                Ok(()) => break,
                Err(e) => {
                    LOG.warning(&format!(
                        "All '{}' masters failed to transfer, retrying in {}: {e}",
                        self.slot.origin,
                        crate::pkg::duration::format(wait)
                    ));
                    tokio::select! {
                        _ = self.clock.sleep(wait) => {}
                        _ = self.notified.notified() => {}
                    }
                    wait = (wait * 2).min(MAX_RETRY);
                }
            }
        }
        self.update().await;
    }

    /// CoreDNS `Zone.Update`: refresh every SOA refresh; after a failed check, retry every
    /// SOA retry; when still failing at an SOA expire tick, the zone expires.
    async fn update(&self) {
        loop {
            let Some(soa) = self.soa() else { return };
            let secs = |v: u32| Duration::from_secs(u64::from(v.max(1)));
            let (refresh, retry, expire) = (secs(soa.refresh), secs(soa.retry), secs(soa.expire));
            let start = self.clock.now();
            let (mut at_refresh, mut at_retry, mut at_expire) =
                (start + refresh, start + retry, start + expire);
            let mut retry_active = false;
            loop {
                tokio::select! {
                    _ = self.clock.sleep_until(at_expire) => {
                        at_expire += expire;
                        if retry_active {
                            self.slot.set_expired(true);
                            EXPIRED.with_label_values(&[&self.zone_label()]).set(1.0);
                            LOG.error(&format!("Zone {} is expired: no primary answered within the SOA expire time", self.slot.origin));
                        }
                    }
                    _ = self.clock.sleep_until(at_retry) => {
                        at_retry += retry;
                        if !retry_active {
                            continue;
                        }
                        self.clock.sleep(jitter(2000)).await;
                        match self.should_transfer().await {
                            Err(e) => {
                                LOG.warning(&format!("Failed retry check {e}"));
                                continue;
                            }
                            Ok(true) => {
                                if self.transfer_in().await.is_err() {
                                    continue;
                                }
                            }
                            Ok(false) => {}
                        }
                        break;
                    }
                    _ = self.clock.sleep_until(at_refresh) => {
                        at_refresh += refresh;
                        self.clock.sleep(jitter(5000)).await;
                        match self.should_transfer().await {
                            Err(e) => {
                                LOG.warning(&format!("Failed refresh check {e}"));
                                retry_active = true;
                                continue;
                            }
                            Ok(true) => {
                                if self.transfer_in().await.is_err() {
                                    retry_active = true;
                                    continue;
                                }
                            }
                            Ok(false) => {}
                        }
                        break;
                    }
                    _ = self.notified.notified() => {
                        match self.should_transfer().await {
                            Ok(true) => {
                                if let Err(e) = self.transfer_in().await {
                                    LOG.warning(&format!("Notify for {}: transfer failed: {e}", self.slot.origin));
                                    continue;
                                }
                                break;
                            }
                            Ok(false) => LOG.info(&format!("Notify for {}: no SOA serial increase seen", self.slot.origin)),
                            Err(e) => LOG.warning(&format!("Notify for {}: failed primary check: {e}", self.slot.origin)),
                        }
                    }
                }
            }
        }
    }

    fn soa(&self) -> Option<Soa> {
        match self.slot.zone()?.soa().map(|r| &r.data) {
            Some(RData::Soa(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// CoreDNS `shouldTransfer`: the first primary's SOA serial over TCP, newer than ours?
    async fn should_transfer(&self) -> Result<bool, String> {
        let mut q = Message::query(rand::random(), self.slot.origin.clone(), RType::SOA);
        q.header.rd = true;
        let mut last = String::from("no primary answered");
        for p in &self.primaries {
            let r = tcp_exchange(*p, &q, |_| Ok(true)).await;
            match r {
                Ok(msgs) => {
                    let Some(m) = msgs.first() else { continue };
                    if m.rcode() != Rcode::NOERROR {
                        last = format!("{p}: rcode {}", m.rcode());
                        continue;
                    }
                    if let Some(RData::Soa(s)) = m
                        .answers
                        .iter()
                        .find(|r| r.rtype == RType::SOA)
                        .map(|r| &r.data)
                    {
                        return Ok(match self.slot.serial() {
                            None => true,
                            Some(ours) => serial_less(ours, s.serial),
                        });
                    }
                }
                Err(e) => last = format!("{p}: {e}"),
            }
        }
        REFRESH_FAILURES
            .with_label_values(&[&self.zone_label()])
            .inc();
        Err(last)
    }

    /// CoreDNS `Zone.TransferIn`, with IXFR first when a copy is held: the first primary that
    /// gives a whole zone wins; the zone is swapped in and secondaries are notified.
    async fn transfer_in(&self) -> Result<(), String> {
        let mut err = String::from("no primaries");
        let label = self.zone_label();
        for p in &self.primaries {
            let current = self.slot.zone();
            let mut got = Err(String::new());
            if let Some(cur) = current.as_ref().filter(|z| z.serial().is_some()) {
                got = self.ixfr(*p, cur).await;
                if let Err(e) = &got {
                    LOG.info(&format!(
                        "IXFR of {} from {p} failed ({e}): trying AXFR",
                        self.slot.origin
                    ));
                }
            }
            if got.is_err() {
                got = self.axfr(*p).await.map(|z| Got::Zone(Box::new(z), "AXFR"));
            }
            match got {
                Ok(Got::UpToDate) => {
                    TRANSFERS
                        .with_label_values(&[&label, "IXFR", "uptodate"])
                        .inc();
                    self.slot.set_expired(false);
                    EXPIRED.with_label_values(&[&label]).set(0.0);
                    return Ok(());
                }
                Ok(Got::Zone(z, kind)) => {
                    let serial = z.serial().unwrap_or(0);
                    self.slot.set(*z);
                    SERIAL.with_label_values(&[&label]).set(f64::from(serial));
                    EXPIRED.with_label_values(&[&label]).set(0.0);
                    TRANSFERS
                        .with_label_values(&[&label, kind, "success"])
                        .inc();
                    FILE_LOG.info(&format!(
                        "Transferred: {} from {p} ({kind}, serial {serial})",
                        self.slot.origin
                    ));
                    if let Some(n) = self.notifier.get() {
                        n.notify(&self.slot.origin);
                    }
                    return Ok(());
                }
                Err(e) => {
                    FILE_LOG.error(&format!(
                        "Failed to transfer `{}' from {:?}: {e}",
                        self.slot.origin,
                        p.to_string()
                    ));
                    TRANSFERS
                        .with_label_values(&[&label, "AXFR", "failure"])
                        .inc();
                    err = e;
                }
            }
        }
        Err(err)
    }

    async fn axfr(&self, p: SocketAddr) -> Result<Zone, String> {
        let q = Message::query(rand::random(), self.slot.origin.clone(), RType::AXFR);
        let mut soas = 0;
        let msgs = tcp_exchange(p, &q, |m| {
            soas += m.answers.iter().filter(|r| r.rtype == RType::SOA).count();
            Ok(soas >= 2)
        })
        .await?;
        let records: Vec<Record> = msgs.into_iter().flat_map(|m| m.answers).collect();
        let Some(RData::Soa(first)) = records.first().map(|r| &r.data) else {
            return Err("first record of the transfer is not an SOA".to_string());
        };
        let _ = first;
        let mut b = Builder::new(&self.slot.origin);
        let n = records.len();
        for r in records.into_iter().take(n - 1) {
            b.insert(r).map_err(|e| e.to_string())?;
        }
        Ok(b.build())
    }

    /// IXFR (RFC 1995) from our serial: up to date, a whole zone (AXFR-style), or differences
    /// applied to a copy of `cur`.
    async fn ixfr(&self, p: SocketAddr, cur: &Zone) -> Result<Got, String> {
        let ours = cur.serial().unwrap_or(0);
        let mut q = Message::query(rand::random(), self.slot.origin.clone(), RType::IXFR);
        q.header.rd = false;
        if let Some(soa) = cur.soa() {
            q.authority.push(soa.clone());
        }
        let mut new_serial: Option<u32> = None;
        let mut second_is_soa: Option<bool> = None;
        let mut new_count = 0usize;
        let mut count = 0usize;
        let msgs = tcp_exchange(p, &q, |m| {
            if m.rcode() != Rcode::NOERROR {
                return Err(format!("rcode {}", m.rcode()));
            }
            for r in &m.answers {
                count += 1;
                if count == 2 {
                    second_is_soa = Some(r.rtype == RType::SOA);
                }
                if let RData::Soa(s) = &r.data {
                    if new_serial.is_none() {
                        new_serial = Some(s.serial);
                    }
                    if Some(s.serial) == new_serial {
                        new_count += 1;
                    }
                }
            }
            let Some(new) = new_serial else {
                return Err("the answer does not start with an SOA".to_string());
            };
            // A bare SOA (or one not newer): current. AXFR-style: the new SOA twice.
            // Incremental: the new SOA first, as the last difference's, and last.
            Ok(!serial_less(ours, new)
                || count == 1
                || (second_is_soa == Some(false) && new_count >= 2)
                || (second_is_soa == Some(true) && new_count >= 3))
        })
        .await?;
        let records: Vec<Record> = msgs.into_iter().flat_map(|m| m.answers).collect();
        let Some(new) = new_serial else {
            return Err("no SOA in the IXFR answer".to_string());
        };
        if records.len() == 1 || !serial_less(ours, new) {
            return Ok(Got::UpToDate);
        }
        let incremental = matches!(records.get(1).map(|r| &r.data), Some(RData::Soa(_)));
        let mut b = Builder::new(&self.slot.origin);
        if !incremental {
            let n = records.len();
            for r in records.into_iter().take(n - 1) {
                b.insert(r).map_err(|e| e.to_string())?;
            }
            return Ok(Got::Zone(Box::new(b.build()), "IXFR"));
        }
        // Incremental: (SOA old, deleted..., SOA new, added...)* then the final SOA.
        let mut zone: Vec<Record> = cur.transfer_records();
        zone.pop();
        let mut i = 1;
        let end = records.len() - 1;
        let mut newest_soa = records[0].clone();
        while i < end {
            // Deletions from the old SOA up to the next SOA.
            i += 1;
            while i < end && records[i].rtype != RType::SOA {
                let k = rr_key(&records[i]);
                if let Some(pos) = zone.iter().position(|r| rr_key(r) == k) {
                    zone.remove(pos);
                }
                i += 1;
            }
            if i >= end {
                return Err("IXFR difference sequence ends early".to_string());
            }
            newest_soa = records[i].clone();
            i += 1;
            while i < end && records[i].rtype != RType::SOA {
                zone.push(records[i].clone());
                i += 1;
            }
        }
        zone.retain(|r| r.rtype != RType::SOA);
        b.insert(newest_soa).map_err(|e| e.to_string())?;
        for r in zone {
            b.insert(r).map_err(|e| e.to_string())?;
        }
        Ok(Got::Zone(Box::new(b.build()), "IXFR"))
    }
}

/// What identifies a record for an IXFR deletion: owner, type, class and data, names compared
/// without case.
fn rr_key(r: &Record) -> (Name, RType, Class, Vec<u8>) {
    let mut d = sextant_zone::wire::rdata_to_wire(&r.data);
    if matches!(
        r.rtype,
        RType::NS | RType::CNAME | RType::MX | RType::SOA | RType::PTR | RType::SRV | RType::DNAME
    ) {
        d.make_ascii_lowercase();
    }
    (r.name.to_lowercase(), r.rtype, r.class, d)
}

/// Sends `q` over TCP to `addr` and reads messages until `done` says so (or the first one,
/// for a plain query whose `done` returns true), each within [`XFR_TIMEOUT`].
async fn tcp_exchange(
    addr: SocketAddr,
    q: &Message,
    mut done: impl FnMut(&Message) -> Result<bool, String>,
) -> Result<Vec<Message>, String> {
    let mut s = tokio::time::timeout(XFR_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "dial tcp: i/o timeout".to_string())?
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let w = q.to_wire();
    let mut out = Vec::with_capacity(w.len() + 2);
    out.extend_from_slice(&(w.len() as u16).to_be_bytes());
    out.extend_from_slice(&w);
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut msgs = Vec::new();
    loop {
        let read = async {
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await?;
            let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::time::timeout(XFR_TIMEOUT, read)
            .await
            .map_err(|_| "read tcp: i/o timeout".to_string())?
            .map_err(|e| format!("read tcp {addr}: {e}"))?;
        let m = Message::parse(&body).map_err(|e| format!("bad message from {addr}: {e}"))?;
        if m.header.id != q.header.id || !m.header.qr {
            return Err(format!("bad message from {addr}: id or QR mismatch"));
        }
        if m.rcode() != Rcode::NOERROR && q.question().is_some_and(|x| x.qtype == RType::AXFR) {
            return Err(format!("{addr} answered {}", m.rcode()));
        }
        let fin = done(&m)?;
        msgs.push(m);
        if fin {
            return Ok(msgs);
        }
        if msgs.len() > 1_000_000 {
            return Err("transfer too long".to_string());
        }
    }
}

impl Handler for SecondaryPlugin {
    fn name(&self) -> &'static str {
        "secondary"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let qname = req.qname();
        let Some(slot) = authority::longest(&self.slots, &qname) else {
            if next.handlers().is_empty() {
                return Box::pin(async { Outcome::rcode("secondary", Rcode::REFUSED) });
            }
            return next.run(req);
        };
        if req.msg.header.opcode == opcode::NOTIFY {
            let z = self.zones.iter().find(|z| Arc::ptr_eq(&z.slot, slot));
            let ip = req.client.ip();
            if let Some(z) = z.filter(|z| z.primaries.iter().any(|p| p.ip() == ip)) {
                let mut m = req.reply();
                m.header.aa = true;
                FILE_LOG.info(&format!(
                    "Notify from {ip} for {}: checking transfer",
                    slot.origin
                ));
                z.notified.notify_one();
                return Box::pin(async move { Outcome::reply("secondary", m) });
            }
            FILE_LOG.info(&format!("Dropping notify from {ip} for {}", slot.origin));
            return Box::pin(async { Outcome::silent("secondary") });
        }
        Box::pin(authority::answer(
            "secondary",
            FILE_LOG,
            slot,
            &self.fall,
            req,
            next,
        ))
    }

    fn transferer(&self) -> Option<&dyn Transferer> {
        Some(self)
    }
}

impl Transferer for SecondaryPlugin {
    fn transfer(&self, zone: &Name, serial: u32) -> Option<Vec<Record>> {
        authority::transfer(&self.slots, zone, serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Result<Parsed, Error> {
        crate::pkg::testing::with_named(text, "secondary", |ds| {
            parse(ds, &["example.org.".to_string()])
        })
    }

    /// A primary on loopback serving one zone over TCP (SOA queries and AXFR; IXFR is refused,
    /// so the secondary falls back to AXFR), whose serial the test moves, or which stops.
    struct FakePrimary {
        addr: SocketAddr,
        serial: Arc<std::sync::atomic::AtomicU32>,
        up: Arc<std::sync::atomic::AtomicBool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl FakePrimary {
        async fn start() -> FakePrimary {
            use std::sync::atomic::Ordering::SeqCst;
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let serial = Arc::new(std::sync::atomic::AtomicU32::new(1));
            let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let (s2, u2) = (serial.clone(), up.clone());
            let task = tokio::spawn(async move {
                loop {
                    let Ok((mut c, _)) = l.accept().await else {
                        return;
                    };
                    if !u2.load(SeqCst) {
                        continue; // dropped: the client sees the connection close
                    }
                    let serial = s2.load(SeqCst);
                    tokio::spawn(async move {
                        let mut len = [0u8; 2];
                        if c.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
                        if c.read_exact(&mut b).await.is_err() {
                            return;
                        }
                        let q = Message::parse(&b).unwrap();
                        let n = |s: &str| Name::parse(s).unwrap();
                        let soa = Record::new(
                            n("example.test."),
                            300,
                            RData::Soa(Soa {
                                mname: n("ns.example.test."),
                                rname: n("h.example.test."),
                                serial,
                                refresh: 100,
                                retry: 10,
                                expire: 1000,
                                minimum: 30,
                            }),
                        );
                        let mut m = Message::reply_to(&q);
                        m.header.aa = true;
                        match q.questions[0].qtype {
                            RType::SOA => m.answers.push(soa),
                            RType::AXFR => {
                                m.answers.push(soa.clone());
                                m.answers.push(Record::new(
                                    n("www.example.test."),
                                    300,
                                    RData::A(std::net::Ipv4Addr::new(192, 0, 2, serial as u8)),
                                ));
                                m.answers.push(soa);
                            }
                            _ => m.set_rcode(Rcode::NOTIMP),
                        }
                        let w = m.to_wire();
                        let mut out = (w.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&w);
                        let _ = c.write_all(&out).await;
                    });
                }
            });
            FakePrimary {
                addr,
                serial,
                up,
                task,
            }
        }
    }

    /// The SOA timers run on the generation's clock: nothing happens until the manual clock
    /// passes refresh (100 s, plus up to 5 s of jitter); a primary that stopped answering puts
    /// the zone on retry, and past expire (1000 s) the zone is expired, until the primary is
    /// back and a retry brings it in again.
    #[tokio::test]
    async fn soa_timers_follow_the_generation_clock() {
        use std::sync::atomic::Ordering::SeqCst;
        let p = FakePrimary::start().await;
        let manual = crate::pkg::clock::ManualClock::new();
        let z = Arc::new(Secondary {
            slot: Arc::new(ZoneSlot::new(
                Name::parse("example.test.").unwrap(),
                Default::default(),
            )),
            primaries: vec![p.addr],
            clock: manual.clock(),
            notified: Notify::new(),
            notifier: OnceLock::new(),
        });
        let run = tokio::spawn(z.clone().run());
        let ev = crate::pkg::testing::eventually;
        // Moves the clock `step` at a time (letting real work run in between) until `done`.
        async fn advance_until(
            m: &crate::pkg::clock::ManualClock,
            step: Duration,
            steps: usize,
            what: &str,
            done: impl Fn() -> bool,
        ) {
            for _ in 0..steps {
                if done() {
                    return;
                }
                m.advance(step);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            crate::pkg::testing::eventually(what, done).await;
        }
        ev("the first transfer", || z.slot.serial() == Some(1)).await;
        // The refresh, retry and expire timers sleep on the clock (three sleepers).
        manual.sleepers(3).await;
        p.serial.store(2, SeqCst);
        manual.advance(Duration::from_secs(99));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            z.slot.serial(),
            Some(1),
            "refresh is 100 s away on the clock"
        );
        // Refresh at 100 s, then up to 5 s of jitter, also on the clock.
        let s = Duration::from_secs(1);
        advance_until(&manual, s, 20, "serial 2 by refresh", || {
            z.slot.serial() == Some(2)
        })
        .await;
        // The primary goes away: the next refresh fails, retries fail, the zone expires.
        p.up.store(false, SeqCst);
        manual.sleepers(3).await;
        let ten = Duration::from_secs(10);
        advance_until(&manual, ten, 200, "the zone to expire", || {
            z.slot.is_expired()
        })
        .await;
        assert_eq!(z.slot.serial(), Some(2), "the last copy is kept");
        // Back again: the next retry transfers serial 3 and the zone is served again.
        p.serial.store(3, SeqCst);
        p.up.store(true, SeqCst);
        advance_until(&manual, ten, 100, "serial 3 by retry", || {
            z.slot.serial() == Some(3)
        })
        .await;
        assert!(!z.slot.is_expired());
        run.abort();
        p.task.abort();
    }

    #[test]
    fn options_and_errors() {
        let (z, f) = conf("example.org {\n secondary {\n  transfer from 10.0.1.1 10.1.2.1:5300\n  fallthrough\n }\n}\n").unwrap();
        assert_eq!(
            z[0].1,
            vec![
                "10.0.1.1:53".parse().unwrap(),
                "10.1.2.1:5300".parse().unwrap()
            ]
        );
        assert_eq!(f.zones(), [Name::root()]);
        let e = conf("example.org {\n secondary\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:2:2: secondary: secondary zones require a transfer from property"
        );
        let e = conf("example.org {\n secondary {\n  transfer from *\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:17: transfer: can't use '*' in transfer from"
        );
        let e = conf("example.org {\n secondary {\n  transfer to 1.2.3.4\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:12: transfer: unknown property to"
        );
        let e = conf("example.org {\n secondary {\n  transfer from nope\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:17: transfer: must specify an IP address: `nope'"
        );
    }
}
