//! The `loop` plugin: at start-up sends a random `HINFO` query to its own listener and exits with
//! CoreDNS's FATAL message if that query comes back more than twice (a forwarding loop); turns
//! itself off after the first probe that gets an answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sextant_corefile::{Directive, Error};
use sextant_wire::{Message, Name, RType};

use crate::log::PluginLog;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx, ERR_ONCE};

const LOG: PluginLog = PluginLog("loop");

/// How long the start-up probe keeps trying.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);
/// Timeout of one probe exchange (miekg/dns's default read timeout).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Loop {
    zone: Name,
    qname: Name,
    /// The listener address as shown in the FATAL line (`:53`, or `IP:53` with `bind`).
    addr: Mutex<String>,
    seen: AtomicU32,
    off: AtomicBool,
}

/// What the handler decides about one query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Loop(String),
}

impl Loop {
    pub(crate) fn new(zone: Name) -> Loop {
        let l1 = rand::random_range(0..(1u64 << 62));
        let l2 = rand::random_range(0..(1u64 << 62));
        let text = if zone.is_root() {
            format!("{l1}.{l2}.")
        } else {
            format!("{l1}.{l2}.{zone}")
        };
        let qname = Name::parse(&text).unwrap_or_else(|_| zone.clone());
        Loop {
            zone,
            qname,
            addr: Mutex::new(String::new()),
            seen: AtomicU32::new(0),
            off: AtomicBool::new(false),
        }
    }

    #[cfg(test)]
    pub(crate) fn qname(&self) -> &Name {
        &self.qname
    }

    pub(crate) fn disable(&self) {
        self.off.store(true, Ordering::SeqCst);
    }

    pub(crate) fn disabled(&self) -> bool {
        self.off.load(Ordering::SeqCst)
    }

    fn set_address(&self, a: &str) {
        if let Ok(mut g) = self.addr.lock() {
            *g = a.to_string();
        }
    }

    fn address(&self) -> String {
        self.addr.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Counts the probe query and says whether a loop has been seen (CoreDNS: more than twice).
    pub(crate) fn check(&self, qname: &Name, qtype: RType, remote: SocketAddr) -> Verdict {
        if qtype != RType::HINFO || self.disabled() || !qname.is_subdomain_of(&self.zone) {
            return Verdict::Pass;
        }
        if *qname == self.qname {
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
        if self.seen.load(Ordering::SeqCst) > 2 {
            return Verdict::Loop(format!(
                "Loop ({remote} -> {}) detected for zone \"{}\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO {}\"",
                self.address(),
                self.zone,
                self.qname.to_lowercase_string()
            ));
        }
        Verdict::Pass
    }

    /// One probe over UDP; true if any reply came back in time.
    async fn exchange(&self, to: SocketAddr) -> bool {
        let bind: SocketAddr = if to.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
            return false;
        };
        let id: u16 = rand::random();
        let q = Message::query(id, self.qname.clone(), RType::HINFO);
        if sock.send_to(&q.to_wire(), to).await.is_err() {
            return false;
        }
        let mut buf = vec![0u8; 65535];
        let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == to && n >= 2 && buf[..2] == id.to_be_bytes() => {
                    return true
                }
                Ok(Ok(_)) => continue,
                _ => return false,
            }
        }
    }

    /// CoreDNS's start-up goroutine: probe until one exchange succeeds or 30 s pass, then turn
    /// the check off.
    pub(crate) async fn probe(self: Arc<Self>, to: SocketAddr, shown: String) {
        let start = Instant::now();
        while start.elapsed() < PROBE_DEADLINE {
            self.set_address(&shown);
            if self.exchange(to).await {
                break;
            }
            self.seen.store(0, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.disable();
    }
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    if lines.len() > 1 {
        return Err(lines[1].err(ERR_ONCE));
    }
    lines[0].arg_count(0, 0)?;
    let zone = ctx
        .block
        .zones
        .first()
        .and_then(|z| Name::parse(z).ok())
        .unwrap_or_else(Name::root);
    let l = Arc::new(Loop::new(zone));
    let bound = ctx.is_bound();
    let port = ctx.block.port;
    // Once the block's listeners are bound, query ourselves through them.
    let ll = l.clone();
    ctx.task(move |t| async move {
        let Some(first) = t.addrs().first().copied() else {
            ll.disable();
            return;
        };
        let shown = if bound {
            first.to_string()
        } else {
            format!(":{port}")
        };
        tokio::select! {
            _ = ll.clone().probe(first, shown) => {}
            _ = t.cancelled() => ll.disable(),
        }
    });
    ctx.add_handler(l);
    Ok(())
}

impl Handler for Loop {
    fn name(&self) -> &'static str {
        "loop"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        if let Verdict::Loop(msg) = self.check(&req.qname(), req.qtype(), req.client) {
            LOG.fatal(&msg);
        }
        next.run(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::directive;

    fn remote() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    #[test]
    fn probe_name_shape() {
        let l = Loop::new(Name::parse("cluster.local.").unwrap());
        let s = l.qname().to_string();
        let parts: Vec<&str> = s.split('.').collect();
        assert_eq!(parts.len(), 5, "{s}");
        assert!(parts[0].parse::<u64>().unwrap() < 1 << 62);
        assert!(parts[1].parse::<u64>().unwrap() < 1 << 62);
        assert!(s.ends_with(".cluster.local."));
        assert_ne!(
            Loop::new(Name::root()).qname(),
            Loop::new(Name::root()).qname()
        );
    }

    #[test]
    fn third_sighting_is_a_loop() {
        let l = Loop::new(Name::root());
        l.set_address(":1053");
        let q = l.qname().clone();
        assert_eq!(l.check(&q, RType::HINFO, remote()), Verdict::Pass);
        assert_eq!(l.check(&q, RType::HINFO, remote()), Verdict::Pass);
        // Other names and types are not counted.
        let other = Name::parse("1.2.").unwrap();
        assert_eq!(l.check(&other, RType::HINFO, remote()), Verdict::Pass);
        assert_eq!(l.check(&q, RType::A, remote()), Verdict::Pass);
        let v = l.check(&q.to_lowercase(), RType::HINFO, remote());
        assert_eq!(
            v,
            Verdict::Loop(format!(
                "Loop (127.0.0.1:40000 -> :1053) detected for zone \".\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO {q}\""
            ))
        );
    }

    #[test]
    fn disabled_never_fires_and_zone_is_checked() {
        let l = Loop::new(Name::parse("example.org.").unwrap());
        let q = l.qname().clone();
        l.disable();
        for _ in 0..10 {
            assert_eq!(l.check(&q, RType::HINFO, remote()), Verdict::Pass);
        }
        let l = Loop::new(Name::parse("example.org.").unwrap());
        for _ in 0..10 {
            let n = Name::parse("x.example.net.").unwrap();
            assert_eq!(l.check(&n, RType::HINFO, remote()), Verdict::Pass);
        }
    }

    #[test]
    fn arguments_are_an_error() {
        let d = &directive(".:53 {\n loop x\n}\n");
        assert_eq!(
            d.arg_count(0, 0).unwrap_err().to_string(),
            "Corefile:2:7: loop: wrong argument count: expected 0, got 1"
        );
    }
}
