//! Builds a configuration generation from a parsed Corefile: checks directives against the
//! compiled-in plugin list, runs each plugin's setup in execution order, and lays the blocks out
//! on listener addresses. Collects every error instead of stopping at the first. No sockets.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use sextant_corefile::{Corefile, Directive, Error as ConfigError, Pos, Scheme};
use sextant_wire::Name;

use crate::plugin::{BlockInfo, Handler, SetupCtx, ERR_ONCE};
use crate::server::lifecycle::{Carry, RuntimeState};
use crate::server::site::{Block, Site};
pub(crate) use crate::setup::GenerationBuilder;

/// Where a listener binds: a specific address or every address, a port, and the transport
/// (`dns://` plain UDP and TCP, `tls://`, `https://`, `https3://`, `quic://`, `grpc://`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ListenKey {
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub scheme: Scheme,
}

/// Limits of the `https`, `https3`, `quic` and `grpc_server` plugins for one listener (CoreDNS
/// takes them from the first block of an address). `0` is unbounded where CoreDNS allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TransportOpts {
    /// Concurrent connections (`https`, `https3`, `grpc_server` `max_connections`; QUIC has
    /// no option for it and keeps CoreDNS's 200).
    pub max_connections: usize,
    /// Concurrent streams per connection (`https3`, `quic`, `grpc_server` `max_streams`); for
    /// `https://` the HTTP/2 stream limit Go's server has (250).
    pub max_streams: usize,
    /// Streams processed at once over every DoQ connection (`quic` `worker_pool_size`).
    pub worker_pool: usize,
    /// `timeouts` idle: an HTTP connection without a request in progress for this long is
    /// closed (DoH, gRPC); QUIC's idle timeout (DoQ, DoH3).
    pub idle: std::time::Duration,
    /// `timeouts` read: reading a DoH request's head and body; a DoQ query on its stream.
    pub read: std::time::Duration,
    /// `timeouts` write: how long a write to a DoH or gRPC connection may stay blocked (the
    /// client reads nothing) before the connection is closed.
    pub write: std::time::Duration,
}

impl TransportOpts {
    /// CoreDNS 1.14.7's defaults for `scheme`.
    pub(crate) fn defaults(scheme: Scheme) -> TransportOpts {
        TransportOpts {
            max_connections: 200,
            max_streams: if scheme == Scheme::Https { 250 } else { 256 },
            worker_pool: 1024,
            idle: crate::server::listen::TCP_IDLE,
            read: crate::server::listen::TCP_READ,
            write: crate::server::listen::TCP_WRITE,
        }
    }
}

/// What a block's `https`, `https3`, `quic` and `grpc_server` lines set (CoreDNS's
/// `MaxHTTPSConnections`, `MaxQUICStreams`, ... of `dnsserver.Config`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockTransport {
    pub https_connections: Option<usize>,
    pub https3_streams: Option<usize>,
    pub https3_connections: Option<usize>,
    pub quic_streams: Option<usize>,
    pub quic_workers: Option<usize>,
    pub grpc_streams: Option<usize>,
    pub grpc_connections: Option<usize>,
}

impl BlockTransport {
    /// The limits a `scheme` listener of this block gets.
    pub(crate) fn resolve(&self, scheme: Scheme) -> TransportOpts {
        let mut o = TransportOpts::defaults(scheme);
        let (conns, streams) = match scheme {
            Scheme::Https => (self.https_connections, None),
            Scheme::Https3 => (self.https3_connections, self.https3_streams),
            Scheme::Quic => (None, self.quic_streams),
            Scheme::Grpc => (self.grpc_connections, self.grpc_streams),
            Scheme::Dns | Scheme::Tls => (None, None),
        };
        o.max_connections = conns.unwrap_or(o.max_connections);
        o.max_streams = streams.unwrap_or(o.max_streams);
        if scheme == Scheme::Quic {
            o.worker_pool = self.quic_workers.unwrap_or(o.worker_pool);
        }
        o
    }
}

impl ListenKey {
    /// The `server` metric label: `dns://:53`, `dns://127.0.0.1:53`, `tls://:853`,
    /// `https://:443`.
    pub(crate) fn label(&self) -> String {
        let scheme = self.scheme.as_str();
        match self.ip {
            None => format!("{scheme}://:{}", self.port),
            Some(IpAddr::V4(a)) => format!("{scheme}://{a}:{}", self.port),
            Some(IpAddr::V6(a)) => format!("{scheme}://[{a}]:{}", self.port),
        }
    }
}

/// How a listener address is served, set by plugins of the first block that binds it (like
/// CoreDNS's per-address server settings). A listener whose options change on reload is
/// rebound (beside the old one, which SO_REUSEPORT allows) rather than altered in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ListenOpts {
    /// `multisocket`: sockets (UDP and TCP, each UDP one with its reader thread) per address.
    /// None: one UDP socket per core and one TCP listener.
    pub sockets: Option<usize>,
    /// Timeouts and query cap of TCP and TLS connections (`timeouts`).
    pub tcp: TcpLimits,
    /// UDP replies go through a bounded write stack per socket (`shed`), counting drops here.
    pub shed: Option<crate::server::wstack::DropHook>,
    /// PROXY protocol headers are read on UDP, TCP, TLS, DoH and gRPC (`proxyproto`).
    pub proxy: Option<Arc<crate::server::proxy::ProxySettings>>,
}

/// How long a TCP or TLS connection may wait and how many queries it may ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TcpLimits {
    /// Waiting for the first byte of the next message (CoreDNS: 10 s).
    pub idle: std::time::Duration,
    /// Receiving the rest of a started message (CoreDNS: 3 s).
    pub read: std::time::Duration,
    /// Writing one answer; a write that does not finish closes the connection (CoreDNS: 5 s).
    pub write: std::time::Duration,
    /// Queries read from one connection before it is closed; None: unlimited.
    pub max_queries: Option<u32>,
}

impl Default for TcpLimits {
    fn default() -> TcpLimits {
        TcpLimits {
            idle: crate::server::listen::TCP_IDLE,
            read: crate::server::listen::TCP_READ,
            write: crate::server::listen::TCP_WRITE,
            max_queries: None,
        }
    }
}

/// What one block's `timeouts` sets (each value applies to every listener of the block; when
/// several blocks share an address, the last one setting a value wins, as in CoreDNS).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimeoutSettings {
    pub idle: Option<std::time::Duration>,
    pub read: Option<std::time::Duration>,
    pub write: Option<std::time::Duration>,
    /// -1: unlimited.
    pub max_queries: Option<i64>,
}

impl TcpLimits {
    fn apply(&mut self, t: &TimeoutSettings) {
        self.idle = t.idle.unwrap_or(self.idle);
        self.read = t.read.unwrap_or(self.read);
        self.write = t.write.unwrap_or(self.write);
        if let Some(m) = t.max_queries {
            self.max_queries = u32::try_from(m).ok().filter(|m| *m > 0);
        }
    }
}

/// A fully set-up configuration, ready to be bound and swapped in.
pub(crate) struct Generation {
    pub sites: BTreeMap<ListenKey, Arc<Site>>,
    /// TLS configuration of each listener that has one (`tls://`, `quic://`, `https3://`,
    /// and `https://`/`grpc://` when their block has the `tls` plugin).
    pub tls: BTreeMap<ListenKey, Arc<rustls::ServerConfig>>,
    /// Options of each listener address (a change rebinds the listener).
    pub opts: BTreeMap<ListenKey, ListenOpts>,
    /// Limits of each DoH, DoH3, DoQ and gRPC listener (`https`, `https3`, `quic`,
    /// `grpc_server`; a change applies in place).
    pub transport: BTreeMap<ListenKey, TransportOpts>,
    /// PROXY settings of each `quic://` and `https3://` listener with `proxyproto` (applied in
    /// place: a QUIC socket cannot be rebound beside itself).
    pub quic_proxy: BTreeMap<ListenKey, Arc<crate::server::proxy::ProxySettings>>,
    pub builder: GenerationBuilder,
    /// (server label, zone, view, plugin names) for `coredns_plugin_enabled`.
    pub enabled: Vec<(String, String, String, Vec<&'static str>)>,
    /// Banner lines (`.:53`, `cluster.local.:53 on 127.0.0.1`).
    pub banner: Vec<String>,
    /// Listener addresses of each block, by block index.
    pub(crate) block_keys: HashMap<usize, Vec<ListenKey>>,
}

fn err(pos: &Pos, directive: Option<&str>, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        pos: pos.clone(),
        directive: directive.map(str::to_string),
        msg: msg.into(),
    }
}

/// Builds a generation that takes carried values from `carry` and reads `state`. Every problem
/// found is returned, in file order. Nothing is started: see [`Generation::lifecycle`].
pub(crate) fn build(
    cf: &Corefile,
    default_port: u16,
    carry: Arc<Carry>,
    state: Arc<RuntimeState>,
) -> Result<Generation, Vec<ConfigError>> {
    let order = crate::plugins::ORDER;
    let mut errors = Vec::new();
    let mut gen = GenerationBuilder::new(carry, state);
    // (block index, zone addrs, chain, plugin names)
    let mut blocks = Vec::new();
    for (bi, sb) in cf.blocks.iter().enumerate() {
        let mut addrs = Vec::new();
        for k in &sb.keys {
            match sextant_corefile::parse_key(k, default_port) {
                Ok(z) => {
                    for za in z {
                        addrs.push(za);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let mut by_name: HashMap<&str, Vec<&Directive>> = HashMap::new();
        for d in &sb.directives {
            let name = d.name.text.as_str();
            match order.iter().find(|p| p.name == name) {
                None => errors.push(err(
                    &d.name.pos,
                    Some(name),
                    format!("Unknown directive '{name}'"),
                )),
                Some(def) => {
                    let lines = by_name.entry(def.name).or_default();
                    if def.once && !lines.is_empty() {
                        errors.push(err(&d.name.pos, Some(name), ERR_ONCE));
                    } else {
                        lines.push(d);
                    }
                }
            }
        }
        let info = BlockInfo {
            zones: addrs.iter().map(|a| a.zone.clone()).collect(),
            port: addrs.first().map(|a| a.port).unwrap_or(default_port),
            index: bi,
            non_dns_key: sb
                .keys
                .iter()
                .find(|k| k.text.contains("://") && !k.text.starts_with("dns://"))
                .map(|k| k.text.clone()),
            view: sb
                .directives
                .iter()
                .find(|d| d.name.text == "view")
                .and_then(|d| d.args.first())
                .map(|t| t.text.clone()),
        };
        let mut chain: Vec<Arc<dyn Handler>> = Vec::new();
        let mut names = Vec::new();
        let mut links = Vec::new();
        for def in order {
            let Some(lines) = by_name.get(def.name) else {
                continue;
            };
            let mut ctx = SetupCtx {
                block: &info,
                handlers: Vec::new(),
                links: &mut links,
                gen: &mut gen,
            };
            match (def.setup)(&mut ctx, lines) {
                Ok(()) => {
                    if !ctx.handlers.is_empty() {
                        names.push(def.name);
                    }
                    chain.extend(ctx.handlers);
                }
                Err(e) => errors.push(e),
            }
        }
        for (mut at, link) in links {
            if let Err(msg) = link(&chain) {
                at.msg = msg;
                errors.push(at);
            }
        }
        blocks.push((
            bi,
            addrs,
            chain,
            names,
            sb.keys.first().map(|k| k.pos.clone()),
        ));
    }

    // Lay blocks out on listeners.
    let mut site_zones: BTreeMap<ListenKey, Vec<(Name, Arc<Block>)>> = BTreeMap::new();
    let mut enabled = Vec::new();
    let mut banner = Vec::new();
    let mut block_keys: HashMap<usize, Vec<ListenKey>> = HashMap::new();
    let mut tls_cfgs: BTreeMap<ListenKey, Arc<rustls::ServerConfig>> = BTreeMap::new();
    let mut opts: BTreeMap<ListenKey, ListenOpts> = BTreeMap::new();
    let mut transport: BTreeMap<ListenKey, TransportOpts> = BTreeMap::new();
    for (bi, addrs, chain, names, pos) in blocks {
        let pos = pos.unwrap_or_else(|| Pos::file_only("Corefile"));
        let block = Arc::new(Block::new(
            chain,
            gen.chaos.get(&bi).copied().unwrap_or(false),
            gen.views.get(&bi).cloned(),
        ));
        let view_label = block
            .view
            .as_ref()
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        let ips: Vec<Option<IpAddr>> = match gen.binds.get(&bi) {
            Some(ips) if !ips.is_empty() => ips.iter().copied().map(Some).collect(),
            _ => vec![None],
        };
        for za in &addrs {
            let Ok(zone) = Name::parse(&za.zone) else {
                errors.push(err(&pos, None, format!("invalid zone {}", za.zone)));
                continue;
            };
            let scheme = za.scheme;
            // DoT, DoQ and DoH3 cannot run without a certificate; DoH and gRPC then serve
            // plain HTTP (behind a TLS-terminating proxy), as CoreDNS does.
            let needs_tls = matches!(scheme, Scheme::Tls | Scheme::Quic | Scheme::Https3);
            if needs_tls && !gen.tls.contains_key(&bi) {
                errors.push(err(
                    &pos,
                    None,
                    format!(
                        "{scheme}://{}:{} needs the tls plugin in its block (tls CERT KEY [CA])",
                        za.zone, za.port
                    ),
                ));
                continue;
            }
            for ip in &ips {
                let key = ListenKey {
                    ip: *ip,
                    port: za.port,
                    scheme,
                };
                // The first block binding an address sets its options.
                let o = opts.entry(key).or_insert_with(|| ListenOpts {
                    sockets: gen.sockets.get(&bi).copied(),
                    ..Default::default()
                });
                // Timeouts: every block sharing the address may set them, the last one wins.
                if let Some(t) = gen.timeouts.get(&bi) {
                    o.tcp.apply(t);
                }
                // Any block with `shed` gives the whole listener its write discipline.
                if let Some(h) = gen.shed.get(&bi) {
                    o.shed = Some(*h);
                }
                // PROXY protocol: the last block of the address that has it decides.
                if let Some(p) = gen.proxy.get(&bi) {
                    o.proxy = Some(p.clone());
                }
                if scheme != Scheme::Dns {
                    if let Some(cfg) = gen.tls.get(&bi) {
                        tls_cfgs
                            .entry(key)
                            .or_insert_with(|| crate::server::transport::with_alpn(scheme, cfg));
                    }
                    let o = gen.transport.get(&bi).copied().unwrap_or_default();
                    transport.entry(key).or_insert(o.resolve(scheme));
                }
                let list = site_zones.entry(key).or_default();
                // Blocks with a view may share a zone with each other and with one block
                // without a view (CoreDNS registers only unfiltered blocks).
                if block.view.is_none() && list.iter().any(|(z, b)| *z == zone && b.view.is_none())
                {
                    errors.push(err(
                        &pos,
                        None,
                        format!(
                            "cannot serve {scheme}://{}:{} - it is already defined",
                            za.zone, za.port
                        ),
                    ));
                    continue;
                }
                list.push((zone.clone(), block.clone()));
                block_keys.entry(bi).or_default().push(key);
                enabled.push((
                    key.label(),
                    za.zone.clone(),
                    view_label.clone(),
                    names.clone(),
                ));
                let prefix = match scheme {
                    Scheme::Dns => String::new(),
                    s => format!("{s}://"),
                };
                banner.push(match ip {
                    None => format!("{prefix}{}:{}", za.zone, za.port),
                    Some(ip) => format!("{prefix}{}:{} on {}", za.zone, za.port, ip),
                });
            }
        }
    }
    // A bound and an unbound listener on one port claiming the same zone overlap.
    for (k, zones) in &site_zones {
        if k.ip.is_some() {
            let wild = ListenKey {
                ip: None,
                port: k.port,
                scheme: k.scheme,
            };
            if let Some(wz) = site_zones.get(&wild) {
                for (z, _) in zones {
                    if wz.iter().any(|(w, _)| w == z) {
                        errors.push(err(
                            &Pos::file_only(&cf.files.first().map(|f| f.display().to_string()).unwrap_or_else(|| "Corefile".into())),
                            None,
                            format!("zone overlap listener capacity: {z} on port {} is served both bound to {} and on every address", k.port, k.ip.map(|i| i.to_string()).unwrap_or_default()),
                        ));
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let sites = site_zones
        .into_iter()
        .map(|(k, zones)| (k, Arc::new(Site::new(&k.label(), zones))))
        .collect();
    // `timeouts` of HTTP and QUIC listeners are limits applied in place on reload, not
    // listener options (a QUIC socket cannot be rebound beside the old one); so is the PROXY
    // protocol of QUIC listeners.
    let mut quic_proxy = BTreeMap::new();
    for (k, o) in opts.iter_mut() {
        if matches!(k.scheme, Scheme::Dns | Scheme::Tls) {
            continue;
        }
        if let Some(t) = transport.get_mut(k) {
            t.idle = o.tcp.idle;
            t.read = o.tcp.read;
            t.write = o.tcp.write;
            o.tcp = TcpLimits::default();
        }
        if matches!(k.scheme, Scheme::Quic | Scheme::Https3) {
            o.sockets = None;
            if let Some(p) = o.proxy.take() {
                quic_proxy.insert(*k, p);
            }
        }
    }
    banner.sort();
    banner.dedup();
    Ok(Generation {
        sites,
        tls: tls_cfgs,
        opts,
        transport,
        quic_proxy,
        builder: gen,
        enabled,
        banner,
        block_keys,
    })
}
