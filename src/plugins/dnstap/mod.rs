//! The `dnstap` plugin: CLIENT_QUERY and CLIENT_RESPONSE messages for every query of the block,
//! and FORWARDER_QUERY/FORWARDER_RESPONSE for `forward`'s upstream exchanges (through the
//! [`Tapper`] capability), sent as dnstap protobuf in Frame Streams to unix, TCP or TLS
//! collectors, one output per `dnstap` line.

mod proto;
mod writer;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sextant_corefile::{Directive, Error};
use sextant_wire::{Asked, Message};

use crate::pkg::tls::ClientAuth;
use crate::plugin::{
    BoxFuture, Handler, Next, Outcome, Proto, ReplyTap, Request, SetupCtx, Tapper,
};
use proto::{MessageType, Nanos, Record};
use writer::{Endpoint, Envelope, Mode, Queue};

/// Largest `writebuffer` multiplier (MiB).
const MAX_WRITE_BUF: usize = 1024;
/// Largest `queue` multiplier (times 10,000 messages).
const MAX_QUEUE: usize = 4096;
/// Default `version` field.
const DEFAULT_VERSION: &str = concat!("Sextant-", env!("CARGO_PKG_VERSION"));

/// One `dnstap` line, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Config {
    endpoint: Endpoint,
    full: bool,
    /// TCP send buffer, MiB.
    write_buf: usize,
    /// Queue length, times [`writer::QUEUE_UNIT`].
    queue: usize,
    identity: Option<String>,
    version: Option<String>,
    extra: Option<String>,
    /// `skipverify`: a `tls://` collector's certificate is not verified (with `listen`:
    /// collectors' certificates are verified only if given).
    skip_verify: bool,
    /// `listen`: collectors connect to Sextant.
    listen: bool,
    /// `tls CERT KEY [CA]` of a `listen tls://` output.
    tls: Option<Directive>,
}

/// A multiplier argument within `1..=max`, with CoreDNS's messages.
fn multiplier(d: &Directive, i: usize, what: &str, max: usize, unit: &str) -> Result<usize, Error> {
    let tok = &d.args[i];
    let v: i64 = tok
        .text
        .parse()
        .map_err(|_| d.err_at(tok, format!("invalid {what} \"{}\"", tok.text)))?;
    if v < 1 || v > max as i64 {
        return Err(d.err_at(
            tok,
            format!("{what} must be between 1 and {max} ({unit}): {v}"),
        ));
    }
    Ok(v as usize)
}

fn parse(d: &Directive) -> Result<Config, Error> {
    d.arg_count(1, usize::MAX)?;
    let listen = d.args[0].text == "listen";
    // With `listen`, the arguments after it are read as those of an outgoing line.
    let args = if listen {
        if d.args.len() < 2 {
            return Err(d.err("dnstap listen requires an endpoint argument"));
        }
        &d.args[1..]
    } else {
        &d.args[..]
    };
    let d = &Directive {
        name: d.name.clone(),
        args: args.to_vec(),
        block: d.block.clone(),
    };
    let first = d.args[0].text.as_str();
    let endpoint = if let Some(rest) = first.strip_prefix("tcp://") {
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() {
            return Err(d.err_at(&d.args[0], format!("invalid endpoint '{first}'")));
        }
        Endpoint::Tcp(host.to_string())
    } else if let Some(rest) = first.strip_prefix("tls://") {
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() {
            return Err(d.err_at(&d.args[0], format!("invalid endpoint '{first}'")));
        }
        Endpoint::Tls(host.to_string())
    } else {
        Endpoint::Unix(first.strip_prefix("unix://").unwrap_or(first).to_string())
    };
    // Like CoreDNS: a second argument other than `full` is ignored.
    let full = d.args.get(1).is_some_and(|t| t.text == "full");
    let write_buf = if d.args.len() >= 3 {
        multiplier(d, 2, "writebuffer", MAX_WRITE_BUF, "MiB units")?
    } else {
        1
    };
    let queue = if d.args.len() >= 4 {
        multiplier(d, 3, "queue", MAX_QUEUE, "x10k messages")?
    } else {
        1
    };
    let mut cfg = Config {
        endpoint,
        full,
        write_buf,
        queue,
        identity: None,
        version: None,
        extra: None,
        skip_verify: false,
        listen,
        tls: None,
    };
    for sub in d.sub() {
        let one = || -> Result<String, Error> {
            match sub.args.first() {
                Some(t) => Ok(t.text.clone()),
                None => Err(d.err_at(&sub.name, "wrong argument count")),
            }
        };
        match sub.name.text.as_str() {
            "identity" => cfg.identity = Some(one()?),
            "version" => cfg.version = Some(one()?),
            "extra" => cfg.extra = Some(one()?),
            "skipverify" => cfg.skip_verify = true,
            "tls" if listen => {
                if sub.args.len() < 2 {
                    return Err(d.err_at(&sub.name, "tls requires cert and key file paths"));
                }
                cfg.tls = Some(sub.clone());
            }
            "tls" => {
                return Err(d.err_at(&sub.name, "tls directive only valid for listeners"));
            }
            other => return Err(d.err_at(&sub.name, format!("unknown property '{other}'"))),
        }
    }
    Ok(cfg)
}

/// CoreDNS's default identity: the host name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let mut taps = Vec::new();
    for d in lines {
        let cfg = parse(d)?;
        let mode = match (&cfg.endpoint, cfg.listen) {
            (Endpoint::Tls(_), true) => {
                let Some(tls) = &cfg.tls else {
                    return Err(d.err("a dnstap listen tls:// socket needs tls CERT KEY [CA]"));
                };
                // With a CA, collectors must show a certificate it signed; `skipverify` makes
                // that optional (CoreDNS's VerifyClientCertIfGiven).
                let auth = match (tls.args.len() >= 3, cfg.skip_verify) {
                    (false, _) => ClientAuth::NoCert,
                    (true, true) => ClientAuth::VerifyIfGiven,
                    (true, false) => ClientAuth::RequireAndVerify,
                };
                Mode::Listen(Some(crate::pkg::tls::server_config(tls, &tls.args, auth)?))
            }
            (_, true) => Mode::Listen(None),
            (Endpoint::Tls(_), false) if cfg.skip_verify => Mode::Dial(Some(
                crate::pkg::tls::insecure_client_config().map_err(|e| d.err(e))?,
            )),
            (Endpoint::Tls(_), false) => Mode::Dial(Some(crate::pkg::tls::client_config(d, &[])?)),
            (_, false) => Mode::Dial(None),
        };
        // An `extra` with placeholders is filled in per message (CoreDNS's replacer); a
        // literal one is encoded with the envelope.
        let (extra, extra_format) = match cfg.extra {
            Some(e) if e.contains('{') => (None, Some(e)),
            e => (e.map(String::into_bytes), None),
        };
        let envelope = Envelope {
            identity: cfg.identity.unwrap_or_else(hostname).into_bytes(),
            version: cfg
                .version
                .unwrap_or_else(|| DEFAULT_VERSION.to_string())
                .into_bytes(),
            extra,
        };
        let (queue, w) = writer::output(
            cfg.endpoint,
            envelope,
            cfg.queue * writer::QUEUE_UNIT,
            cfg.write_buf * 1024 * 1024,
            mode,
        );
        ctx.task(move |t| w.run(t));
        taps.push(Tap {
            full: cfg.full,
            extra_format,
            queue,
        });
    }
    let taps = Arc::new(Taps {
        full: taps.iter().any(|t| t.full),
        extras: taps.iter().any(|t| t.extra_format.is_some()),
        taps,
        clock: WallClock::new(),
    });
    let t = taps.clone();
    ctx.periodic(CLOCK_CHECK, move || t.clock.check());
    ctx.add_handler(Arc::new(Dnstap { taps }));
    Ok(())
}

/// How often the wall clock is read again (see [`WallClock`]).
const CLOCK_CHECK: Duration = Duration::from_secs(10);

/// Wall-clock times of the dnstap messages, read from the monotonic clock: the time a query
/// arrived (`Request::start`) maps to the same wall time for its CLIENT_QUERY and
/// CLIENT_RESPONSE without a clock read, and a response time costs one monotonic read. The
/// wall clock is read again every [`CLOCK_CHECK`]; a step of more than a millisecond (NTP,
/// an operator) moves the mapping.
struct WallClock {
    base: Instant,
    /// Nanoseconds since the Unix epoch at `base`.
    wall_at_base: AtomicU64,
}

impl WallClock {
    fn new() -> WallClock {
        let base = Instant::now();
        let c = WallClock {
            base,
            wall_at_base: AtomicU64::new(0),
        };
        c.wall_at_base.store(c.measure(), Ordering::Relaxed);
        c
    }

    /// The wall time at `base`, as the clocks read now.
    fn measure(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mono = self.base.elapsed();
        wall.saturating_sub(mono).as_nanos() as u64
    }

    /// Reads the wall clock again; moves the mapping only for a step (reading the two clocks
    /// one after the other differs by some nanoseconds each time, which would make a query's
    /// two messages disagree on its time).
    fn check(&self) {
        let now = self.measure();
        let was = self.wall_at_base.load(Ordering::Relaxed);
        if now.abs_diff(was) > 1_000_000 {
            self.wall_at_base.store(now, Ordering::Relaxed);
        }
    }

    /// The wall time of `t`.
    fn at(&self, t: Instant) -> Nanos {
        let since = t.saturating_duration_since(self.base).as_nanos() as Nanos;
        self.wall_at_base.load(Ordering::Relaxed) + since
    }
}

/// One output, whether it carries the wire messages and its `extra` format.
struct Tap {
    full: bool,
    /// An `extra` with placeholders, filled in per message.
    extra_format: Option<String>,
    queue: Queue,
}

/// Every output of the block's `dnstap` lines.
struct Taps {
    taps: Vec<Tap>,
    /// Some output wants wire messages.
    full: bool,
    /// Some output fills in `extra` per message.
    extras: bool,
    clock: WallClock,
}

impl Taps {
    /// Sends `r` to every output, with the wire message `wire` only to the `full` ones.
    fn send(&self, req: &Request, r: Record, wire: Option<&[u8]>) {
        let last = self.taps.len().saturating_sub(1);
        let mut r = Some(r);
        for (i, t) in self.taps.iter().enumerate() {
            let Some(mut one) = (if i == last { r.take() } else { r.clone() }) else {
                return;
            };
            if let Some(f) = &t.extra_format {
                let mut s = String::new();
                crate::plugins::log::render_into(&mut s, f, req, None);
                one.extra = Some(s);
            }
            t.queue.send(one, wire.filter(|_| t.full));
        }
    }

    /// CLIENT_QUERY for `req`, with the query as it reaches dnstap.
    fn client_query(&self, req: &Request) {
        let mut q = record(
            MessageType::ClientQuery,
            req.proto == Proto::Tcp,
            self.clock.at(req.start),
        );
        q.query_addr = Some(req.client);
        let wire = self.full.then(|| query_wire(req));
        self.send(req, q, wire.as_deref());
    }

    /// CLIENT_RESPONSE for `req` with the reply `wire`.
    fn client_response(&self, req: &Request, wire: Option<&[u8]>) {
        let mut r = record(
            MessageType::ClientResponse,
            req.proto == Proto::Tcp,
            self.clock.at(req.start),
        );
        r.response_time = self.clock.at(Instant::now());
        r.query_addr = Some(req.client);
        self.send(req, r, wire);
    }
}

/// The query as dnstap logs it: CoreDNS packs the message as the plugins before dnstap left it
/// (`bufsize` lowers the EDNS size). When that still is the query as received, which the
/// server kept (`Request::raw`), its bytes are taken as they are; otherwise the message is
/// encoded, without name compression as CoreDNS packs a parsed query.
fn query_wire(req: &Request) -> Cow<'_, [u8]> {
    if let Some(raw) = req.raw.as_deref() {
        if sextant_wire::scan_query(raw).is_ok_and(|v| v.spells(&req.msg)) {
            return Cow::Borrowed(raw);
        }
    }
    Cow::Owned(req.msg.to_wire_uncompressed())
}

/// The `dnstap` handler of one block.
pub(crate) struct Dnstap {
    taps: Arc<Taps>,
}

/// A record of type `kind` for an exchange over TCP if `tcp`, begun at `query_time`.
fn record(kind: MessageType, tcp: bool, query_time: Nanos) -> Record {
    Record {
        kind,
        tcp,
        query_addr: None,
        response_addr: None,
        query_time,
        response_time: 0,
        wire: None,
        extra: None,
    }
}

impl Handler for Dnstap {
    fn name(&self) -> &'static str {
        "dnstap"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        self.taps.client_query(req);
        if req.reply_tapped {
            // The server hands the reply's bytes to `ReplyTap::replied` as it sends them.
            return next.run(req);
        }
        // The server's own lookups: the reply is tapped here, finished as the server would.
        Box::pin(async move {
            let taps = &self.taps;
            // What the server needs to finish the reply as the client will get it.
            let asked = taps.full.then(|| Asked::of(&req.msg));
            let out = next.run(req).await;
            // Like CoreDNS, only a reply a plugin wrote is tapped: the server's own error
            // replies (no plugin wrote one) and silent outcomes are not.
            let silent = out.ext.as_ref().is_some_and(|e| e.silent);
            let Some(reply) = out.reply.as_ref().filter(|_| !silent) else {
                return out;
            };
            let wire = asked.map(|asked| {
                crate::server::site::finish(&asked, req.msg.edns.as_ref(), reply.clone(), req.proto)
            });
            taps.client_response(req, wire.as_deref());
            out
        })
    }

    fn tapper(&self) -> Option<Arc<dyn Tapper>> {
        Some(self.taps.clone())
    }

    fn reply_tap(&self) -> Option<Arc<dyn ReplyTap>> {
        Some(self.taps.clone())
    }
}

impl ReplyTap for Taps {
    fn wants_query_bytes(&self) -> bool {
        self.full
    }

    fn reads_request(&self) -> bool {
        self.extras
    }

    fn replied(&self, req: &Request, wire: &[u8]) {
        self.client_response(req, Some(wire));
    }
}

impl Tapper for Taps {
    fn forwarded(
        &self,
        req: &Request,
        upstream: SocketAddr,
        local: Option<SocketAddr>,
        tcp: bool,
        started: SystemTime,
        reply: Option<&Message>,
    ) {
        let started = proto::nanos(started);
        let mut q = record(MessageType::ForwarderQuery, tcp, started);
        q.query_addr = local;
        q.response_addr = Some(upstream);
        let wire = self.full.then(|| req.msg.to_wire());
        self.send(req, q, wire.as_deref());
        let Some(reply) = reply else { return };
        let mut r = record(MessageType::ForwarderResponse, tcp, started);
        r.query_addr = local;
        r.response_addr = Some(upstream);
        r.response_time = proto::nanos(SystemTime::now());
        let wire = self.full.then(|| reply.to_wire());
        self.send(req, r, wire.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(text: &str) -> Directive {
        let cf = sextant_corefile::parse_str(
            "Corefile",
            &format!(". {{\n{text}\n}}"),
            std::path::Path::new("."),
        )
        .unwrap();
        cf.blocks[0].directives[0].clone()
    }

    #[test]
    fn endpoints_and_arguments() {
        let c = parse(&directive("dnstap /tmp/d.sock")).unwrap();
        assert_eq!(c.endpoint, Endpoint::Unix("/tmp/d.sock".into()));
        assert!(!c.full);
        assert_eq!((c.write_buf, c.queue), (1, 1));
        let c = parse(&directive("dnstap unix:///tmp/d.sock full")).unwrap();
        assert_eq!(c.endpoint, Endpoint::Unix("/tmp/d.sock".into()));
        assert!(c.full);
        let c = parse(&directive(
            "dnstap tls://127.0.0.1:6000 full {\nskipverify\n}",
        ))
        .unwrap();
        assert_eq!(c.endpoint, Endpoint::Tls("127.0.0.1:6000".into()));
        assert!(c.skip_verify);
        let c = parse(&directive("dnstap tcp://127.0.0.1:6000 full 1024 2048")).unwrap();
        assert_eq!(c.endpoint, Endpoint::Tcp("127.0.0.1:6000".into()));
        assert_eq!((c.write_buf, c.queue), (1024, 2048));
        let c = parse(&directive("dnstap listen tcp://127.0.0.1:6000 full")).unwrap();
        assert!(c.listen && c.full);
        assert_eq!(c.endpoint, Endpoint::Tcp("127.0.0.1:6000".into()));
        let c = parse(&directive("dnstap listen /tmp/d.sock")).unwrap();
        assert!(c.listen && !c.full);
        assert_eq!(c.endpoint, Endpoint::Unix("/tmp/d.sock".into()));
        let c = parse(&directive(
            "dnstap listen tls://127.0.0.1:6000 {\ntls c.pem k.pem ca.pem\n}",
        ));
        assert_eq!(c.unwrap().tls.unwrap().args.len(), 3);
        // A second argument other than `full` is ignored, as in CoreDNS.
        assert!(!parse(&directive("dnstap /tmp/d.sock nope")).unwrap().full);
        let c = parse(&directive(
            "dnstap /tmp/d.sock {\nidentity my-dns-server1\nversion MyDNSServer-1.2.3\nextra x\n}",
        ))
        .unwrap();
        assert_eq!(c.identity.as_deref(), Some("my-dns-server1"));
        assert_eq!(c.version.as_deref(), Some("MyDNSServer-1.2.3"));
        assert_eq!(c.extra.as_deref(), Some("x"));
    }

    #[test]
    fn bad_lines_name_the_place() {
        for (line, want) in [
            ("dnstap", "wrong argument count"),
            (
                "dnstap /tmp/d full 0",
                "writebuffer must be between 1 and 1024",
            ),
            (
                "dnstap /tmp/d full 1 4097",
                "queue must be between 1 and 4096",
            ),
            ("dnstap /tmp/d full x", "invalid writebuffer \"x\""),
            ("dnstap /tmp/d {\nbogus\n}", "unknown property 'bogus'"),
            ("dnstap /tmp/d {\nidentity\n}", "wrong argument count"),
            (
                "dnstap /tmp/d {\ntls a b\n}",
                "tls directive only valid for listeners",
            ),
            (
                "dnstap listen",
                "dnstap listen requires an endpoint argument",
            ),
            (
                "dnstap listen tls://:1 {\ntls a\n}",
                "tls requires cert and key file paths",
            ),
        ] {
            let e = parse(&directive(line)).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
            assert!(e.contains("Corefile:"), "{line}: {e}");
        }
    }

    #[test]
    fn the_wall_clock_maps_instants_and_moves_only_for_a_step() {
        let c = WallClock::new();
        let t = Instant::now();
        let wall = proto::nanos(SystemTime::now());
        let mapped = c.at(t);
        assert!(wall.abs_diff(mapped) < 50_000_000, "{wall} {mapped}");
        // The same instant maps to the same time, also after a check without a step.
        c.check();
        assert_eq!(c.at(t), mapped);
        assert_eq!(c.at(t + Duration::from_millis(3)), mapped + 3_000_000);
        // A step (the base's wall time off by a second) is corrected.
        c.wall_at_base.fetch_add(1_000_000_000, Ordering::Relaxed);
        c.check();
        assert!(c.at(t).abs_diff(mapped) < 1_000_000);
    }

    #[test]
    fn mapped_addresses_count_as_ipv4() {
        let a: SocketAddr = "[::ffff:10.0.0.1]:53".parse().unwrap();
        let (f, ip, n) = proto::family_and_address(&a);
        assert_eq!(
            (f, &ip[..n]),
            (proto::SocketFamily::Inet, &[10, 0, 0, 1][..])
        );
        let a: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        assert_eq!(proto::family_and_address(&a).0, proto::SocketFamily::Inet6);
    }
}
