//! The `transfer` plugin: answers AXFR (and IXFR, as a full AXFR unless the client's serial is
//! current) over TCP to allowed clients, from the first later plugin in the chain that is
//! authoritative for the zone (CoreDNS `transfer.Transferer`), in messages of at most ~63 kB.
//! Refuses UDP and other clients. Sends NOTIFY to the `to` addresses when a zone changed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sextant_corefile::{Directive, Error};
use sextant_wire::{opcode, Message, Name, Question, RData, RType, Rcode, Record};

use crate::log::PluginLog;
use crate::pkg::{addr, zones};
use crate::plugin::{BoxFuture, Handler, Next, Notifier, Outcome, Proto, Request, SetupCtx};
use crate::server::lifecycle::Spawner;

const LOG: PluginLog = PluginLog("transfer");

/// Who may transfer (and, for an address, who is notified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    Any,
    Addr(SocketAddr),
}

/// One `transfer` line.
#[derive(Debug, Clone)]
pub(crate) struct Xfr {
    pub zones: Vec<Name>,
    pub to: Vec<Peer>,
    /// Local address NOTIFY messages are sent from.
    pub source: Option<IpAddr>,
}

impl Xfr {
    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.to.iter().any(|p| match p {
            Peer::Any => true,
            Peer::Addr(a) => a.ip() == ip,
        })
    }
}

pub(crate) struct Transfer {
    xfrs: Vec<Xfr>,
    spawner: Option<Spawner>,
}

/// `ADDR`, `ADDR:PORT`, `[V6]:PORT` (port 53 when none) or `*`.
fn parse_peer(s: &str) -> Option<Peer> {
    if s == "*" {
        return Some(Peer::Any);
    }
    addr::host_port(s, 53).map(Peer::Addr)
}

pub(crate) fn parse(lines: &[&Directive], block_zones: &[String]) -> Result<Vec<Xfr>, Error> {
    let mut out = Vec::new();
    for d in lines {
        let zones = zones::from_args(d, &d.args, block_zones)?;
        let mut to = Vec::new();
        let mut source = None;
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "to" => {
                    sub.arg_count(1, usize::MAX)?;
                    for a in &sub.args {
                        let p = parse_peer(&a.text).ok_or_else(|| {
                            sub.err_at(a, format!("not a valid IP address or '*': {}", a.text))
                        })?;
                        to.push(p);
                    }
                }
                "source" => {
                    sub.arg_count(1, 1)?;
                    if source.is_some() {
                        return Err(sub.err("source already specified"));
                    }
                    let a = &sub.args[0];
                    source = Some(a.text.parse::<IpAddr>().map_err(|_| {
                        sub.err_at(a, format!("invalid source address {:?}", a.text))
                    })?);
                }
                other => return Err(sub.err(format!("unknown property {other:?}"))),
            }
        }
        if to.is_empty() {
            return Err(d.err("'to' is required"));
        }
        out.push(Xfr { zones, to, source });
    }
    Ok(out)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let xfrs = parse(lines, &ctx.block.zones)?;
    let spawner = Some(ctx.spawner());
    ctx.add_handler(Arc::new(Transfer { xfrs, spawner }));
    Ok(())
}

/// Largest batch of records (uncompressed) per transfer message, as CoreDNS (under 64 KiB).
const BATCH: usize = 63000;
/// Attempts per NOTIFY target (CoreDNS: 3).
const NOTIFY_TRIES: usize = 3;
/// Time one NOTIFY attempt waits for its answer (miekg/dns client default).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// A NOTIFY its target did not accept, with the last attempt's outcome (CoreDNS's text).
#[derive(Debug, thiserror::Error)]
#[error("notify for zone {:?} was not accepted by {:?}: {last}", zone.to_string(), to.to_string())]
struct NotifyError {
    zone: Name,
    to: SocketAddr,
    last: NotifyAttempt,
}

/// How one NOTIFY attempt failed.
#[derive(Debug, thiserror::Error)]
enum NotifyAttempt {
    #[error("rcode was {:?}", .0.to_string())]
    Rcode(Rcode),
    #[error("{:?}", .0.to_string())]
    Io(std::io::Error),
    #[error("{:?}", "i/o timeout")]
    Timeout,
}

/// Sends one NOTIFY for `zone` to `to` over UDP, up to three times, until it is answered
/// NOERROR (CoreDNS `sendNotify`).
async fn send_notify(
    zone: &Name,
    to: SocketAddr,
    source: Option<IpAddr>,
) -> Result<(), NotifyError> {
    let bind = match (source, to) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (None, SocketAddr::V6(_)) => SocketAddr::from(([0u16; 8], 0)),
    };
    let mut last = NotifyAttempt::Rcode(Rcode::SERVFAIL);
    for _ in 0..NOTIFY_TRIES {
        let mut m = Message::default();
        m.header.id = rand::random();
        m.header.opcode = opcode::NOTIFY;
        m.header.aa = true;
        m.questions.push(Question::new(zone.clone(), RType::SOA));
        let r = async {
            let sock = tokio::net::UdpSocket::bind(bind).await?;
            sock.connect(to).await?;
            sock.send(&m.to_wire()).await?;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = sock.recv(&mut buf).await?;
                if let Ok(reply) = Message::parse(&buf[..n]) {
                    if reply.header.id == m.header.id && reply.header.qr {
                        return Ok::<Rcode, std::io::Error>(reply.rcode());
                    }
                }
            }
        };
        match tokio::time::timeout(NOTIFY_TIMEOUT, r).await {
            Ok(Ok(Rcode::NOERROR)) => return Ok(()),
            Ok(Ok(rc)) => last = NotifyAttempt::Rcode(rc),
            Ok(Err(e)) => last = NotifyAttempt::Io(e),
            Err(_) => last = NotifyAttempt::Timeout,
        }
    }
    Err(NotifyError {
        zone: zone.clone(),
        to,
        last,
    })
}

impl Notifier for Transfer {
    fn notify(&self, zone: &Name) {
        let Some(x) = self.longest_match(zone) else {
            return;
        };
        let targets: Vec<SocketAddr> =
            x.to.iter()
                .filter_map(|p| match p {
                    Peer::Addr(a) => Some(*a),
                    Peer::Any => None,
                })
                .collect();
        let (zone, source) = (zone.clone(), x.source);
        let to_list: Vec<String> =
            x.to.iter()
                .map(|p| match p {
                    Peer::Any => "*".to_string(),
                    Peer::Addr(a) => a.to_string(),
                })
                .collect();
        let Some(sp) = &self.spawner else {
            return;
        };
        sp.spawn(async move {
            let mut errs = Vec::new();
            for t in targets {
                if let Err(e) = send_notify(&zone, t, source).await {
                    errs.push(e.to_string());
                }
            }
            LOG.debug(&format!(
                "Sent notifies for zone {:?} to [{}]",
                zone.to_string(),
                to_list.join(" ")
            ));
            if !errs.is_empty() {
                LOG.warning(&format!("Failed sending notifies: {}", errs.join("\n")));
            }
        });
    }
}

/// The length of a record without name compression (miekg/dns `Len`).
fn rr_len(r: &Record) -> usize {
    r.name.wire_len() + 10 + r.data.wire_len()
}

impl Transfer {
    /// The `transfer` line with the longest zone containing `name`.
    fn longest_match(&self, name: &Name) -> Option<&Xfr> {
        let mut best: Option<(&Xfr, usize)> = None;
        for x in &self.xfrs {
            let Some(n) = zones::matches(&x.zones, name).map(Name::label_count) else {
                continue;
            };
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((x, n));
            }
        }
        best.map(|(x, _)| x)
    }
}

impl Handler for Transfer {
    fn name(&self) -> &'static str {
        "transfer"
    }

    fn notifier(&self) -> Option<Arc<dyn Notifier>> {
        Some(Arc::new(Transfer {
            xfrs: self.xfrs.clone(),
            spawner: self.spawner.clone(),
        }))
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let qtype = req.qtype();
            if qtype != RType::AXFR && qtype != RType::IXFR {
                return next.run(req).await;
            }
            if req.proto != Proto::Tcp {
                return Outcome::rcode("transfer", Rcode::REFUSED);
            }
            let name = req.qname().to_lowercase();
            let Some(x) = self.longest_match(&name) else {
                return next.run(req).await;
            };
            if !x.allowed(req.client.ip()) {
                let mut m = req.reply();
                m.set_rcode(Rcode::REFUSED);
                return Outcome::reply("transfer", m);
            }
            let mut serial = 0;
            if qtype == RType::IXFR {
                match req.msg.authority.as_slice() {
                    [r] => match &r.data {
                        RData::Soa(s) => serial = s.serial,
                        _ => return Outcome::rcode("transfer", Rcode::SERVFAIL),
                    },
                    _ => return Outcome::rcode("transfer", Rcode::SERVFAIL),
                }
            }
            let records = next
                .handlers()
                .iter()
                .filter_map(|h| h.transferer())
                .find_map(|t| t.transfer(&name, serial));
            let Some(records) = records else {
                return next.run(req).await;
            };
            if records.len() == 1 {
                if let RData::Soa(s) = &records[0].data {
                    LOG.info(&format!(
                        "Outgoing noop, incremental transfer for up to date zone {:?} to {} for {} SOA serial",
                        req.qname().to_string(),
                        req.client.ip(),
                        s.serial
                    ));
                }
                let mut m = req.reply();
                m.answers = records;
                return Outcome::reply("transfer", m);
            }
            let serial = match records.first().map(|r| &r.data) {
                Some(RData::Soa(s)) => s.serial,
                _ => 0,
            };
            let total = records.len();
            let mut msgs: Vec<Message> = Vec::new();
            let mut batch: Vec<Record> = Vec::new();
            let mut size = 0;
            for r in records {
                let l = rr_len(&r);
                if !batch.is_empty() && size + l > BATCH {
                    let mut m = req.reply();
                    m.header.aa = true;
                    m.answers = std::mem::take(&mut batch);
                    msgs.push(m);
                    size = 0;
                }
                size += l;
                batch.push(r);
            }
            if !batch.is_empty() {
                let mut m = req.reply();
                m.header.aa = true;
                m.answers = batch;
                msgs.push(m);
            }
            LOG.info(&format!(
                "Outgoing transfer of {total} records of zone {:?} to {} for {serial} SOA serial",
                req.qname().to_string(),
                req.client.ip(),
            ));
            let mut msgs = msgs.into_iter();
            let first = msgs.next().unwrap_or_else(|| req.reply());
            let mut out = Outcome::reply("transfer", first);
            out.ext_mut().more = msgs.collect();
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Result<Vec<Xfr>, Error> {
        crate::pkg::testing::with_named(text, "transfer", |ds| {
            parse(ds, &["cluster.local.".to_string()])
        })
    }

    #[test]
    fn parses_zones_and_peers() {
        let x =
            lines("cluster.local {\n transfer {\n  to * 10.0.0.1 [::1]:53 10.0.0.2:5300\n }\n}\n")
                .unwrap();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].zones, vec![Name::parse("cluster.local.").unwrap()]);
        assert_eq!(x[0].to.len(), 4);
        assert_eq!(x[0].to[0], Peer::Any);
        assert!(x[0].allowed("10.0.0.1".parse().unwrap()));
        let x =
            lines("cluster.local {\n transfer example.org 10.0.0.0/8 {\n  to 10.0.0.1\n }\n}\n")
                .unwrap();
        assert_eq!(x[0].zones.len(), 2);
        assert!(x[0].allowed("10.0.0.1".parse().unwrap()));
        assert!(!x[0].allowed("10.0.0.3".parse().unwrap()));
    }

    #[test]
    fn errors_name_position() {
        let e = lines("cluster.local {\n transfer\n}\n").unwrap_err();
        assert_eq!(e.to_string(), "Corefile:2:2: transfer: 'to' is required");
        let e = lines("cluster.local {\n transfer {\n  to nope\n }\n}\n").unwrap_err();
        assert!(e.to_string().starts_with("Corefile:3:6:"), "{e}");
        let e = lines("cluster.local {\n transfer {\n  from 1.2.3.4\n }\n}\n").unwrap_err();
        assert!(e.to_string().contains("unknown property \"from\""), "{e}");
        assert!(e.to_string().starts_with("Corefile:3:3:"), "{e}");
        let e = lines("cluster.local {\n transfer {\n  to\n }\n}\n").unwrap_err();
        assert!(e.to_string().starts_with("Corefile:3:3:"), "{e}");
        let e =
            lines("cluster.local {\n transfer {\n  to *\n  source 1.2.3.4\n  source ::1\n }\n}\n")
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:5:3: source: source already specified"
        );
        let e = lines("cluster.local {\n transfer {\n  to *\n  source nope\n }\n}\n").unwrap_err();
        assert!(
            e.to_string().contains("invalid source address \"nope\""),
            "{e}"
        );
        let x = lines(
            "cluster.local {\n transfer {\n  to 10.0.0.1 [::1]:5300\n  source 127.0.0.1\n }\n}\n",
        )
        .unwrap();
        assert_eq!(x[0].to[0], Peer::Addr("10.0.0.1:53".parse().unwrap()));
        assert_eq!(x[0].to[1], Peer::Addr("[::1]:5300".parse().unwrap()));
        assert_eq!(x[0].source, Some("127.0.0.1".parse().unwrap()));
    }

    /// A NOTIFY refused three times over a real UDP socket: CoreDNS's text, with the last rcode.
    #[tokio::test]
    async fn refused_notify_names_zone_target_and_rcode() {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = sock.local_addr().unwrap();
        let answer = tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            for _ in 0..NOTIFY_TRIES {
                let (n, from) = sock.recv_from(&mut buf).await.unwrap();
                let mut m = Message::parse(&buf[..n]).unwrap();
                assert_eq!(m.header.opcode, opcode::NOTIFY);
                m.header.qr = true;
                m.set_rcode(Rcode::REFUSED);
                sock.send_to(&m.to_wire(), from).await.unwrap();
            }
        });
        let zone = Name::parse("example.org.").unwrap();
        let e = send_notify(&zone, to, None).await.unwrap_err();
        answer.await.unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "notify for zone \"example.org.\" was not accepted by \"{to}\": rcode was \"REFUSED\""
            )
        );
        assert_eq!(NotifyAttempt::Timeout.to_string(), "\"i/o timeout\"");
    }
}
