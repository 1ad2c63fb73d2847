//! The plugin contract: requests, outcomes, the handler trait, the chain runner and the setup
//! context a plugin's Corefile lines are parsed in. No sockets here.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use sextant_wire::{Class, Message, Name, RType, Rcode, Reply};

/// A boxed future, the return type of every handler.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Transport a query came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// Re-enters the whole server (every block, the full chain) with a new question, the way
/// CoreDNS's `plugin/pkg/upstream` does. Used to resolve CNAME targets outside a plugin's zone.
pub(crate) trait Resolver: Send + Sync {
    fn resolve<'a>(&'a self, req: &'a Request, name: Name, qtype: RType) -> BoxFuture<'a, Outcome>;
}

/// One query travelling down the chain.
pub(crate) struct Request {
    /// The query as it is now (plugins such as `rewrite` may change it).
    pub msg: Message,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub proto: Proto,
    /// Size of the query as received, in bytes.
    pub size: usize,
    pub start: Instant,
    /// The server block zone that matched (`.` for the root).
    pub zone: Arc<Name>,
    /// Metric label of the listener, e.g. `dns://:53`.
    pub server: Arc<str>,
    /// How many times this request re-entered the server (CNAME chasing depth).
    pub depth: u8,
    /// The server, to re-enter it (None in unit tests).
    pub resolver: Option<Arc<dyn Resolver>>,
    /// The request as received, kept only when it ends with a TSIG record (whose MAC covers
    /// these exact bytes) or when the block's reply tap asks for it (`dnstap ... full` logs
    /// the query's bytes); None otherwise.
    pub raw: Option<Arc<[u8]>>,
    /// The UDP socket the query came in on cannot keep up: its write stack is full (only
    /// with `shed`).
    pub backlogged: bool,
    /// The server hands the bytes of every reply it sends for this request to the block's
    /// [`ReplyTap`] (set for the requests of a client, not for the server's own lookups).
    pub reply_tapped: bool,
    /// Metadata of this request (CoreDNS's `metadata` plugin): `None` unless the block has the
    /// `metadata` plugin, so setting a label costs nothing elsewhere. See [`Metadata`].
    pub meta: Option<Box<Metadata>>,
    /// Name of the view of the block serving this request (metric label `view`), if it has one.
    pub view: Option<Arc<str>>,
    /// The spans of this request when the `trace` plugin samples it (CoreDNS's OpenTracing
    /// span in the context); `None` otherwise, so nothing is recorded elsewhere.
    pub trace: Option<Box<Trace>>,
}

/// The spans of one traced request: the `trace` plugin opens the root span, wraps each plugin
/// after it in a span, and reports them when the query is answered; a plugin may add spans of
/// its own work (`forward`'s `connect`) with [`Trace::open`] and [`Trace::close`].
#[derive(Debug)]
pub(crate) struct Trace {
    /// The span open now: the parent of the next one opened.
    pub(crate) current: u64,
    /// Finished spans, in the order they finished.
    pub(crate) spans: Vec<Span>,
}

/// One finished span.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub(crate) name: &'static str,
    pub(crate) id: u64,
    /// 0 for the root span.
    pub(crate) parent: u64,
    /// Start, in microseconds since the Unix epoch.
    pub(crate) start_us: u64,
    pub(crate) duration: std::time::Duration,
    pub(crate) tags: Vec<(&'static str, String)>,
    /// The error the span's work ended with, if any.
    pub(crate) error: Option<String>,
    /// A server span (Zipkin's kind `SERVER`): the root span of a query.
    pub(crate) server: bool,
    /// The root span shares the id of the DoH client's span (`trace`'s `client_server`).
    pub(crate) shared: bool,
}

/// A span opened with [`Trace::open`], to be closed with [`Trace::close`].
#[derive(Debug)]
pub(crate) struct OpenSpan {
    name: &'static str,
    id: u64,
    parent: u64,
    start_us: u64,
    start: Instant,
}

impl Trace {
    /// A trace whose root span has id `root` (open now).
    pub(crate) fn new(root: u64) -> Trace {
        Trace {
            current: root,
            spans: Vec::with_capacity(8),
        }
    }

    /// Opens span `name`, a child of the span open now, which it replaces until closed.
    pub(crate) fn open(&mut self, name: &'static str) -> OpenSpan {
        let id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        let parent = std::mem::replace(&mut self.current, id);
        OpenSpan {
            name,
            id,
            parent,
            start_us: now_us(),
            start: Instant::now(),
        }
    }

    /// Closes `span` with `tags`; its parent is the open span again.
    pub(crate) fn close(&mut self, span: OpenSpan, tags: Vec<(&'static str, String)>) {
        self.current = span.parent;
        self.spans.push(Span {
            name: span.name,
            id: span.id,
            parent: span.parent,
            start_us: span.start_us,
            duration: span.start.elapsed(),
            tags,
            error: None,
            server: false,
            shared: false,
        });
    }
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Request {
    /// A request for tests.
    #[cfg(test)]
    pub(crate) fn new(msg: Message, client: SocketAddr, proto: Proto) -> Request {
        Request {
            size: msg.to_wire().len(),
            msg,
            client,
            local: SocketAddr::from(([127, 0, 0, 1], 53)),
            proto,
            start: Instant::now(),
            zone: Arc::new(Name::root()),
            server: Arc::from("dns://:53"),
            depth: 0,
            resolver: None,
            raw: None,
            backlogged: false,
            reply_tapped: false,
            meta: None,
            view: None,
            trace: None,
        }
    }

    /// True when this request carries metadata (the block has the `metadata` plugin).
    pub(crate) fn meta_enabled(&self) -> bool {
        self.meta.is_some()
    }

    /// Sets metadata `label` (`plugin/NAME`) to the value `f` makes, like CoreDNS's
    /// `metadata.SetValueFunc`; `f` is not called when the request carries no metadata.
    pub(crate) fn set_meta(&mut self, label: &str, f: impl FnOnce() -> String) {
        if let Some(m) = self.meta.as_mut() {
            m.set(label, f());
        }
    }

    /// The value of metadata `label`, if the request carries it.
    pub(crate) fn meta(&self, label: &str) -> Option<&str> {
        self.meta.as_ref()?.get(label)
    }

    /// The question name as sent (case preserved); the root if there is no question.
    pub(crate) fn qname(&self) -> Name {
        self.msg
            .question()
            .map(|q| q.name.clone())
            .unwrap_or_else(Name::root)
    }

    pub(crate) fn qtype(&self) -> RType {
        self.msg.question().map(|q| q.qtype).unwrap_or_default()
    }

    pub(crate) fn qclass(&self) -> Class {
        self.msg.question().map(|q| q.qclass).unwrap_or_default()
    }

    /// EDNS DO bit.
    pub(crate) fn do_bit(&self) -> bool {
        self.msg.edns.as_ref().is_some_and(|e| e.dnssec_ok)
    }

    /// The client's buffer size as CoreDNS reports it (`request.Size`, the `log` plugin's
    /// `{>bufsize}`): UDP max(advertised, 512), 512 without EDNS, 65535 over TCP. Replies are
    /// truncated to it, over UDP to at most 1232 bytes (`site::MAX_UDP_PAYLOAD`).
    pub(crate) fn bufsize(&self) -> u16 {
        sextant_wire::reply::client_limit(
            self.proto == Proto::Tcp,
            self.msg.edns.as_ref().map(|e| e.udp_size),
        )
    }

    /// A reply skeleton for this request.
    pub(crate) fn reply(&self) -> Message {
        Message::reply_to(&self.msg)
    }

    /// Resolves `name`/`qtype` through the whole server, if the request came from one.
    pub(crate) async fn resolve(&self, name: Name, qtype: RType) -> Outcome {
        match &self.resolver {
            Some(r) if self.depth < 10 => r.resolve(self, name, qtype).await,
            Some(_) => Outcome::error("", Rcode::SERVFAIL, "too many CNAME redirections"),
            None => Outcome::error("", Rcode::SERVFAIL, "no server to resolve through"),
        }
    }
}

/// The metadata of one request: `plugin/NAME` labels and their values (CoreDNS's
/// `metadata.SetValueFunc`/`ValueFunc`). Created by the `metadata` plugin at the start of its
/// block's chain (or by the server before a `view` filter, through [`MetadataCollector`]);
/// providers ([`MetadataProvider`]) add their labels then, other plugins as they serve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Metadata {
    /// (label, value) in insertion order; a label set twice keeps the last value. A request
    /// has few labels, so a list beats a map.
    entries: Vec<(std::borrow::Cow<'static, str>, String)>,
}

impl Metadata {
    /// Sets `label` to `value` (replacing an earlier value).
    pub(crate) fn set(&mut self, label: &str, value: String) {
        match self.entries.iter_mut().find(|(l, _)| l == label) {
            Some(e) => e.1 = value,
            None => self.entries.push((label.to_string().into(), value)),
        }
    }

    /// [`Metadata::set`] for a label known at compile time (not copied).
    pub(crate) fn set_static(&mut self, label: &'static str, value: String) {
        match self.entries.iter_mut().find(|(l, _)| l == label) {
            Some(e) => e.1 = value,
            None => self.entries.push((label.into(), value)),
        }
    }

    /// The value of `label`.
    pub(crate) fn get(&self, label: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.as_str())
    }
}

/// A plugin that publishes metadata for each request of its block (CoreDNS's
/// `metadata.Provider`): called by the `metadata` plugin before the chain runs, so it must be
/// quick. `kubernetes` publishes `kubernetes/client-namespace` and friends.
pub(crate) trait MetadataProvider: Send + Sync {
    fn metadata(&self, req: &Request, md: &mut Metadata);
}

/// The `metadata` plugin's collector (CoreDNS's `dnsserver.MetadataCollector`): fills
/// `req.meta` from the block's providers. The chain calls it from the `metadata` handler; a
/// server-level filter (`view`) that needs metadata before choosing a block calls it first, and
/// the handler then does not collect again.
pub(crate) trait MetadataCollector: Send + Sync {
    fn collect(&self, req: &mut Request);
}

/// What a handler returns, modelled on CoreDNS's `(rcode, error)` plus the written reply.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The reply, if a plugin wrote one: a message, or bytes a plugin kept (the cache's hits,
    /// the kubernetes reply memo) that the server sends after patching them in place (see
    /// [`Reply::finish`]). Plugins that post-process replies (rewrite, loadbalance, ...) call
    /// [`Outcome::message_mut`], which decodes bytes once.
    pub reply: Option<Reply>,
    /// The plugin that wrote the reply (metric label `plugin`), or "" for the server.
    pub writer: &'static str,
    /// The rcode the chain returned. When there is no reply and this is SERVFAIL, REFUSED,
    /// FORMERR or NOTIMP, the server writes an error reply with it.
    pub rcode: Rcode,
    /// An error for the `errors` plugin to log.
    pub error: Option<String>,
    /// Rarely used parts: more messages, no reply at all, a signer (see [`OutcomeExt`]).
    pub ext: Option<Box<OutcomeExt>>,
}

/// The rarely used parts of an [`Outcome`].
#[derive(Default)]
pub(crate) struct OutcomeExt {
    /// Messages sent after the reply, over TCP only (the rest of a zone transfer). Each is
    /// finished like the reply (ID, question, EDNS).
    pub more: Vec<Message>,
    /// Send nothing (CoreDNS: a plugin returned without writing, e.g. a dropped NOTIFY).
    pub silent: bool,
    /// Signs every message as it leaves, after the server's finishing touches (TSIG).
    pub signer: Option<Box<dyn ReplySigner>>,
}

impl std::fmt::Debug for OutcomeExt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeExt")
            .field("more", &self.more.len())
            .field("silent", &self.silent)
            .field("signer", &self.signer.is_some())
            .finish()
    }
}

/// Signs outgoing messages of one exchange in order (the first, then each message of a
/// transfer), on their final bytes.
pub(crate) trait ReplySigner: Send + Sync {
    /// Bytes a signature adds, kept free when truncating.
    fn reserve(&self) -> usize;
    /// Appends the signature to `msg` (a finished message) and adjusts its counts.
    fn sign(&mut self, msg: &mut Vec<u8>);
}

impl Outcome {
    /// A written reply.
    pub(crate) fn reply(plugin: &'static str, msg: Message) -> Outcome {
        Outcome {
            rcode: msg.rcode(),
            reply: Some(Reply::parsed(msg)),
            writer: plugin,
            error: None,
            ext: None,
        }
    }

    /// A reply already encoded: a whole message for the request's question, without an OPT
    /// record (see [`sextant_wire::Encoded`]).
    pub(crate) fn wire(plugin: &'static str, bytes: Vec<u8>) -> Outcome {
        Outcome::wire_sized(plugin, bytes, None)
    }

    /// A reply already encoded, with its uncompressed length if known.
    pub(crate) fn wire_sized(
        plugin: &'static str,
        bytes: Vec<u8>,
        uncompressed: Option<usize>,
    ) -> Outcome {
        let r = Reply::encoded(bytes, uncompressed);
        Outcome {
            rcode: r.rcode(),
            reply: Some(r),
            writer: plugin,
            error: None,
            ext: None,
        }
    }

    /// No reply; the server answers with `rcode`; `error` is logged by `errors`.
    pub(crate) fn error(plugin: &'static str, rcode: Rcode, error: impl Into<String>) -> Outcome {
        Outcome {
            reply: None,
            writer: plugin,
            rcode,
            error: Some(error.into()),
            ext: None,
        }
    }

    /// No reply and no error (e.g. a silent REFUSED).
    pub(crate) fn rcode(plugin: &'static str, rcode: Rcode) -> Outcome {
        Outcome {
            reply: None,
            writer: plugin,
            rcode,
            error: None,
            ext: None,
        }
    }

    /// No reply at all (the client sees nothing), like a CoreDNS plugin that returns without
    /// writing.
    pub(crate) fn silent(plugin: &'static str) -> Outcome {
        let mut o = Outcome::rcode(plugin, Rcode::NOERROR);
        o.ext = Some(Box::new(OutcomeExt {
            silent: true,
            ..OutcomeExt::default()
        }));
        o
    }

    /// The rarely used parts, created on first use.
    pub(crate) fn ext_mut(&mut self) -> &mut OutcomeExt {
        self.ext.get_or_insert_with(Box::default)
    }

    /// The rcode a client will see.
    pub(crate) fn final_rcode(&self) -> Rcode {
        match &self.reply {
            Some(r) => r.rcode(),
            None => self.rcode,
        }
    }

    /// The written reply as a message to inspect or change; encoded bytes are decoded once
    /// (bytes that do not decode are dropped, as if no reply had been written).
    pub(crate) fn message_mut(&mut self) -> Option<&mut Message> {
        if self
            .reply
            .as_mut()
            .is_some_and(|r| r.message_mut().is_none())
        {
            self.reply = None;
        }
        self.reply.as_mut()?.message_mut()
    }

    /// The written reply as a message, decoded if need be.
    pub(crate) fn take_message(&mut self) -> Option<Message> {
        self.message_mut()?;
        self.reply.take()?.into_message()
    }

    /// Size in bytes of the written reply before the server's final touches (0 if none).
    pub(crate) fn reply_size(&self) -> usize {
        self.reply.as_ref().map_or(0, Reply::wire_len)
    }
}

/// A plugin's query handler.
pub(crate) trait Handler: Send + Sync + 'static {
    /// The plugin's name as in the Corefile.
    fn name(&self) -> &'static str;
    /// Serves a query; call `next.run(req)` to pass it down the chain.
    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome>;
    /// Serves the query at once, without a future, when this plugin's answer needs no waiting:
    /// Some(outcome), exactly what `serve` would have given; None when it cannot, and then
    /// nothing has happened that anyone could see (no metric, no log, no state changed but
    /// caches of what it would compute anyway), so the caller runs `serve` instead. Spares the
    /// boxed future of each plugin for answers such as the `kubernetes` plugin's remembered
    /// replies. A plugin that passes the query on calls `next.run_now(req)` and declines when
    /// that does. The default declines.
    fn serve_now(&self, req: &mut Request, next: Next<'_>) -> Option<Outcome> {
        let _ = (req, next);
        None
    }
    /// What [`Handler::serve_now`] does, so the server tries it only for chains where it may
    /// answer (a try that declines is not free).
    fn now(&self) -> Now {
        Now::Never
    }
    /// The zone-transfer side of this plugin, if it has one (CoreDNS `transfer.Transferer`); the
    /// `transfer` plugin looks for it among the handlers after itself.
    fn transferer(&self) -> Option<&dyn Transferer> {
        None
    }
    /// The cluster data `k8s_external` serves, if this plugin has it (CoreDNS `Externaler`).
    fn externaler(&self) -> Option<Arc<dyn crate::plugins::k8s_external::Externaler>> {
        None
    }
    /// The client search path this plugin knows (`autopath @<plugin>`), if it has one.
    fn search_path(&self) -> Option<Arc<dyn crate::plugins::autopath::SearchPath>> {
        None
    }
    /// The metadata this plugin publishes per request (CoreDNS `metadata.Provider`), if any.
    fn metadata_provider(&self) -> Option<&dyn MetadataProvider> {
        None
    }
    /// The block's metadata collector (only the `metadata` plugin has one): the server calls
    /// it while routing a request, before the block's view filter reads the metadata.
    fn metadata_collector(&self) -> Option<&dyn MetadataCollector> {
        None
    }
    /// Who to tell when a zone changed (the `transfer` plugin's NOTIFY), if this plugin is one.
    fn notifier(&self) -> Option<Arc<dyn Notifier>> {
        None
    }
    /// Where to report upstream exchanges as dnstap messages (the `dnstap` plugin), if this
    /// plugin is that.
    fn tapper(&self) -> Option<Arc<dyn Tapper>> {
        None
    }
    /// Where the server reports the replies it sends (the `dnstap` plugin's
    /// CLIENT_RESPONSE), if this plugin is that; the server finds it when it builds the block.
    fn reply_tap(&self) -> Option<Arc<dyn ReplyTap>> {
        None
    }
}

/// Gets the exact bytes of each reply the server sends for a plugin-written reply, once the
/// server has finished it (ID, question, EDNS, truncation, signature): dnstap's
/// CLIENT_RESPONSE without a copy of the reply finished a second time. The server calls it
/// for the requests it marks [`Request::reply_tapped`], once per message sent (each message of
/// a zone transfer); never for its own error replies or a silent outcome. Must not wait.
pub(crate) trait ReplyTap: Send + Sync {
    /// The server keeps the query's bytes in [`Request::raw`] for the plugins.
    fn wants_query_bytes(&self) -> bool;
    /// The server leaves the request as the chain left it, question included (the tap
    /// reads it, e.g. to fill in placeholders); otherwise it may take the question out
    /// before calling [`ReplyTap::replied`].
    fn reads_request(&self) -> bool;
    /// `wire` goes to the client of `req`.
    fn replied(&self, req: &Request, wire: &[u8]);
}

/// Receives a plugin's own upstream traffic for dnstap (CoreDNS `forward`'s `tapPlugins`):
/// never waits, drops when its queues are full.
pub(crate) trait Tapper: Send + Sync {
    /// One exchange of `req`'s message with `upstream` from local address `local` (over TCP
    /// if `tcp`) begun at `started`: FORWARDER_QUERY, then FORWARDER_RESPONSE if `reply` came
    /// back.
    fn forwarded(
        &self,
        req: &Request,
        upstream: SocketAddr,
        local: Option<SocketAddr>,
        tcp: bool,
        started: std::time::SystemTime,
        reply: Option<&Message>,
    );
}

/// Sends NOTIFY for a changed zone to the secondaries a `transfer` line lists (CoreDNS
/// `Transfer.Notify`).
pub(crate) trait Notifier: Send + Sync {
    /// Notifies the `to` addresses of the `transfer` line matching `zone` (lower-case), in the
    /// background; failures are logged.
    fn notify(&self, zone: &Name);
}

/// A plugin that can hand out a whole zone for AXFR (CoreDNS `transfer.Transferer`).
pub(crate) trait Transferer: Send + Sync {
    /// The records of `zone` in transfer order (SOA first and last), or just the SOA when
    /// `serial` (from an IXFR) is current; None when the plugin is not authoritative for it.
    fn transfer(&self, zone: &Name, serial: u32) -> Option<Vec<sextant_wire::Record>>;
}

/// What a handler's [`Handler::serve_now`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Now {
    /// Always declines.
    Never,
    /// Answers what the rest of the chain answers at once (a wrapper such as `errors`).
    Passes,
    /// May answer at once itself.
    Answers,
}

/// True when `serve_now` may answer for a chain: some handler answers at once and every one
/// before it passes.
pub(crate) fn chain_answers_now(chain: &[Arc<dyn Handler>]) -> bool {
    for h in chain {
        match h.now() {
            Now::Never => return false,
            Now::Passes => {}
            Now::Answers => return true,
        }
    }
    false
}

/// The rest of the chain after the current handler.
#[derive(Clone, Copy)]
pub(crate) struct Next<'a> {
    rest: &'a [Arc<dyn Handler>],
}

impl<'a> Next<'a> {
    pub(crate) fn new(rest: &'a [Arc<dyn Handler>]) -> Next<'a> {
        Next { rest }
    }

    /// Runs the next handler, or fails like CoreDNS's `NextOrFailure` at the end of the chain.
    pub(crate) fn run<'b>(self, req: &'b mut Request) -> BoxFuture<'b, Outcome>
    where
        'a: 'b,
    {
        match self.rest.split_first() {
            Some((h, rest)) => h.serve(req, Next { rest }),
            None => Box::pin(async { Outcome::error("", Rcode::SERVFAIL, "no next plugin found") }),
        }
    }

    /// Runs the next handler without a future if it can answer at once ([`Handler::serve_now`]);
    /// None when it cannot (run the chain with [`Next::run`] then) or at the end of the chain.
    pub(crate) fn run_now(self, req: &mut Request) -> Option<Outcome> {
        let (h, rest) = self.rest.split_first()?;
        h.serve_now(req, Next { rest })
    }

    /// The rest of the chain as an owned list, for work that outlives this request (a cache's
    /// background prefetch): run it later with `Next::new(&chain).run(..)`.
    pub(crate) fn owned_chain(self) -> Vec<Arc<dyn Handler>> {
        self.rest.to_vec()
    }

    /// The handlers still to run, in order.
    pub(crate) fn handlers(&self) -> &'a [Arc<dyn Handler>] {
        self.rest
    }

    /// Name of the next plugin, if any.
    pub(crate) fn name(&self) -> Option<&'static str> {
        self.rest.first().map(|h| h.name())
    }
}

/// A server block's view (the `view` plugin): the server routes a query to the block only when
/// this is true for it (CoreDNS `dnsserver.Viewer`). Called while routing, before the chain.
pub(crate) trait ViewFilter: Send + Sync {
    fn matches(&self, req: &mut Request) -> bool;
}

/// A readiness check registered by a plugin (`ready` plugin polls these).
pub(crate) trait Readiness: Send + Sync {
    fn ready(&self) -> bool;
}

pub(crate) use crate::setup::{BlockInfo, PluginDef, SetupCtx, ERR_ONCE};
