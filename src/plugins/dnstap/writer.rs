//! The dnstap output of one `dnstap` line: a bounded queue filled at query time (never
//! waiting: a full queue drops and counts) and the writer task that empties it into a
//! bidirectional Frame Streams connection (READY/ACCEPT/START, data frames, STOP) over a unix
//! socket, TCP or TLS, redialling when the collector goes away, as CoreDNS's `dio` does.
//!
//! Cost: the query path only pushes a small [`Record`] onto a mutex-guarded vector and, with
//! `full`, appends the message's bytes to one byte buffer beside it (no allocation once both
//! have grown, the writer woken once per batch); the writer takes the whole batch in one swap,
//! encodes every record into one reused buffer and writes it in a few large writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Notify;

use super::proto::{encode_frame, envelope_prefix, Record};
use crate::log::PluginLog;
use crate::server::lifecycle::TaskCtx;

const LOG: PluginLog = PluginLog("dnstap");

/// Messages queued per unit of the `queue` argument (CoreDNS `queueSize`).
pub(crate) const QUEUE_UNIT: usize = 10_000;
/// Dial, handshake and write deadline (CoreDNS `tcpTimeout`).
const IO_TIMEOUT: Duration = Duration::from_secs(4);
/// How often drops are reported and a missing connection redialled (CoreDNS
/// `errorCheckInterval`).
const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Frame Streams content type of dnstap.
pub(crate) const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";
/// Bytes buffered before a write is forced while the queue still has messages.
const WRITE_CHUNK: usize = 64 * 1024;
/// How long the writer lets messages gather after the first one of a batch.
const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// Frame Streams control frame types.
const FSTRM_ACCEPT: u32 = 1;
const FSTRM_START: u32 = 2;
const FSTRM_STOP: u32 = 3;
const FSTRM_READY: u32 = 4;
/// Control field: content type.
const FSTRM_FIELD_CONTENT_TYPE: u32 = 1;
/// Largest control frame accepted from the collector.
const MAX_CONTROL: u32 = 512;

/// Where a `dnstap` line sends its frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Unix(String),
    /// `host:port`, resolved at each dial.
    Tcp(String),
    /// `host:port` over TLS.
    Tls(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{p}"),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Tls(a) => write!(f, "tls://{a}"),
        }
    }
}

/// What every frame of one output carries besides the message.
pub(crate) struct Envelope {
    pub(crate) identity: Vec<u8>,
    pub(crate) version: Vec<u8>,
    pub(crate) extra: Option<Vec<u8>>,
}

/// Records not yet written and the wire messages they point into.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    /// The wire messages of `full` records, one after another.
    bytes: Vec<u8>,
}

/// What the query path and the writer share.
struct Shared {
    /// Records not yet taken by the writer.
    batch: Mutex<Batch>,
    /// Most records `batch` holds; more are dropped.
    capacity: usize,
    /// Woken when `batch` goes from empty to not empty.
    notify: Notify,
    dropped: AtomicU64,
}

/// The query-time side of one output: queues without waiting.
pub(crate) struct Queue {
    shared: Arc<Shared>,
}

impl Queue {
    /// Queues `r` with its wire message `wire` (copied), or counts it as dropped when the
    /// queue is full.
    pub(crate) fn send(&self, mut r: Record, wire: Option<&[u8]>) {
        let first = {
            let Ok(mut b) = self.shared.batch.lock() else {
                return;
            };
            if b.records.len() >= self.shared.capacity {
                drop(b);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Some(w) = wire {
                let start = b.bytes.len();
                b.bytes.extend_from_slice(w);
                r.wire = Some((start, start + w.len()));
            }
            b.records.push(r);
            b.records.len() == 1
        };
        if first {
            self.shared.notify.notify_one();
        }
    }
}

/// The writer side of one output, moved into its task.
pub(crate) struct Writer {
    endpoint: Endpoint,
    /// Identity and version, encoded once.
    prefix: Vec<u8>,
    /// The literal `extra` field.
    extra: Option<Vec<u8>>,
    shared: Arc<Shared>,
    /// The batch being encoded (swapped with the shared one, so both keep their capacity).
    taken: Batch,
    /// TCP send buffer size (the `writebuffer` argument).
    sndbuf: usize,
    mode: Mode,
}

/// How an output meets its collectors.
pub(crate) enum Mode {
    /// Sextant dials the collector (with this client configuration for `tls://`).
    Dial(Option<Arc<rustls::ClientConfig>>),
    /// Sextant listens and collectors connect (`dnstap listen`; with this server
    /// configuration for `tls://`).
    Listen(Option<Arc<rustls::ServerConfig>>),
}

/// A queue of `capacity` messages and the writer that empties it.
pub(crate) fn output(
    endpoint: Endpoint,
    envelope: Envelope,
    capacity: usize,
    sndbuf: usize,
    mode: Mode,
) -> (Queue, Writer) {
    let shared = Arc::new(Shared {
        batch: Mutex::new(Batch::default()),
        capacity: capacity.max(1),
        notify: Notify::new(),
        dropped: AtomicU64::new(0),
    });
    (
        Queue {
            shared: shared.clone(),
        },
        Writer {
            endpoint,
            prefix: envelope_prefix(&envelope.identity, &envelope.version),
            extra: envelope.extra,
            shared,
            taken: Batch::default(),
            sndbuf,
            mode,
        },
    )
}

/// A connected stream of either kind.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A collector that connected to a `dnstap listen tls://` socket.
    TlsIn(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(b).await,
            Stream::Tcp(s) => s.write_all(b).await,
            Stream::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Stream::TlsIn(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
        }
    }

    async fn read_exact(&mut self, b: &mut [u8]) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.read_exact(b).await.map(|_| ()),
            Stream::Tcp(s) => s.read_exact(b).await.map(|_| ()),
            Stream::Tls(s) => s.read_exact(b).await.map(|_| ()),
            Stream::TlsIn(s) => s.read_exact(b).await.map(|_| ()),
        }
    }

    /// Writes what the socket takes now, without waiting (used while the task is cancelled;
    /// nothing over TLS, whose records cannot be written that way).
    fn try_write_all(&self, mut b: &[u8]) {
        while !b.is_empty() {
            let r = match self {
                Stream::Unix(s) => s.try_write(b),
                Stream::Tcp(s) => s.try_write(b),
                Stream::Tls(_) | Stream::TlsIn(_) => return,
            };
            match r {
                Ok(n) if n > 0 => b = &b[n..],
                _ => return,
            }
        }
    }
}

/// The TLS server name of `host:port`: an IP address or a DNS name.
fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| format!("invalid TLS server name '{host}'"))
}

/// The writer's side of the bidirectional handshake: READY, the collector's ACCEPT naming
/// dnstap, START.
async fn handshake(s: &mut Stream) -> Result<(), String> {
    s.write_all(&control_frame(FSTRM_READY, Some(CONTENT_TYPE)))
        .await
        .map_err(|e| e.to_string())?;
    match read_control(s).await? {
        (FSTRM_ACCEPT, true) => {}
        (FSTRM_ACCEPT, false) => return Err("collector does not accept dnstap".into()),
        (k, _) => return Err(format!("unexpected control frame {k} instead of ACCEPT")),
    }
    s.write_all(&control_frame(FSTRM_START, Some(CONTENT_TYPE)))
        .await
        .map_err(|e| e.to_string())
}

/// A control frame: escape, length, type and an optional content type field.
pub(crate) fn control_frame(kind: u32, content_type: Option<&[u8]>) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if let Some(ct) = content_type {
        body.extend_from_slice(&FSTRM_FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        body.extend_from_slice(ct);
    }
    let mut f = 0u32.to_be_bytes().to_vec();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

/// Reads one control frame; returns its type and whether it names dnstap's content type.
async fn read_control(s: &mut Stream) -> Result<(u32, bool), String> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).await.map_err(|e| e.to_string())?;
    let escape = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if escape != 0 || !(4..=MAX_CONTROL).contains(&len) {
        return Err("bad control frame".into());
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    let kind = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let mut rest = &body[4..];
    let mut matches = false;
    while rest.len() >= 8 {
        let field = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let flen = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        rest = &rest[8..];
        let Some(value) = rest.get(..flen) else {
            return Err("bad control frame field".into());
        };
        if field == FSTRM_FIELD_CONTENT_TYPE && value == CONTENT_TYPE {
            matches = true;
        }
        rest = &rest[flen..];
    }
    Ok((kind, matches))
}

/// The socket of a `dnstap listen` output.
enum Listener {
    Unix(tokio::net::UnixListener, String),
    Tcp(tokio::net::TcpListener),
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Like Go's unix listener: the socket file goes with it.
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn bind(endpoint: &Endpoint) -> Result<Listener, String> {
    match endpoint {
        Endpoint::Unix(p) => tokio::net::UnixListener::bind(p)
            .map(|l| Listener::Unix(l, p.clone()))
            .map_err(|e| format!("listen unix {p}: {e}")),
        Endpoint::Tcp(a) | Endpoint::Tls(a) => tokio::net::TcpListener::bind(a.as_str())
            .await
            .map(Listener::Tcp)
            .map_err(|e| format!("listen tcp {a}: {e}")),
    }
}

/// The next collector on `l` (TLS-accepted when `mode` says so), handshake done.
async fn accept(l: Option<&Listener>, mode: &Mode) -> Result<Stream, String> {
    let Some(l) = l else {
        return std::future::pending().await;
    };
    let mut s = match l {
        Listener::Unix(l, _) => Stream::Unix(l.accept().await.map_err(|e| e.to_string())?.0),
        Listener::Tcp(l) => {
            let (t, _) = l.accept().await.map_err(|e| e.to_string())?;
            match mode {
                Mode::Listen(Some(cfg)) => {
                    let acc = tokio_rustls::TlsAcceptor::from(cfg.clone()).accept(t);
                    match tokio::time::timeout(IO_TIMEOUT, acc).await {
                        Ok(Ok(c)) => Stream::TlsIn(Box::new(c)),
                        Ok(Err(e)) => return Err(format!("tls: {e}")),
                        Err(_) => return Err("tls: i/o timeout".into()),
                    }
                }
                _ => Stream::Tcp(t),
            }
        }
    };
    match tokio::time::timeout(IO_TIMEOUT, handshake(&mut s)).await {
        Ok(Ok(())) => Ok(s),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("handshake: i/o timeout".into()),
    }
}

impl Writer {
    /// Connects and runs the bidirectional handshake: READY, ACCEPT (naming dnstap), START.
    async fn dial(&self) -> Result<Stream, String> {
        let fut = async {
            let mut s = match &self.endpoint {
                Endpoint::Unix(p) => Stream::Unix(
                    UnixStream::connect(p)
                        .await
                        .map_err(|e| format!("dial unix {p}: {e}"))?,
                ),
                Endpoint::Tcp(a) | Endpoint::Tls(a) => {
                    let t = TcpStream::connect(a.as_str())
                        .await
                        .map_err(|e| format!("dial tcp {a}: {e}"))?;
                    let _ = socket2::SockRef::from(&t).set_send_buffer_size(self.sndbuf);
                    match &self.mode {
                        Mode::Dial(None) | Mode::Listen(_) => Stream::Tcp(t),
                        Mode::Dial(Some(cfg)) => {
                            let host = server_name(a)?;
                            let c = tokio_rustls::TlsConnector::from(cfg.clone())
                                .connect(host, t)
                                .await
                                .map_err(|e| format!("tls {a}: {e}"))?;
                            Stream::Tls(Box::new(c))
                        }
                    }
                }
            };
            handshake(&mut s).await?;
            Ok(s)
        };
        match tokio::time::timeout(IO_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("dial {}: i/o timeout", self.endpoint)),
        }
    }

    /// Takes every queued record into `self.taken` (empty when none).
    fn take(&mut self) {
        self.taken.records.clear();
        self.taken.bytes.clear();
        if let Ok(mut b) = self.shared.batch.lock() {
            std::mem::swap(&mut *b, &mut self.taken);
        }
    }

    /// Appends the data frame of `self.taken[i]` to `buf`.
    fn frame(&mut self, i: usize, buf: &mut Vec<u8>) {
        encode_frame(
            &self.prefix,
            self.extra.as_deref(),
            &self.taken.records[i],
            &self.taken.bytes,
            buf,
        );
    }

    async fn connect(&self) -> Option<Stream> {
        match self.dial().await {
            Ok(s) => Some(s),
            Err(e) => {
                LOG.error(&format!("No connection to dnstap endpoint: {e}"));
                None
            }
        }
    }

    /// The task of a `dnstap listen` output: accepts collectors and writes every message to
    /// each connected one (a collector whose write fails or times out is closed); messages
    /// are discarded while none is connected. The socket is bound when the generation starts,
    /// retried every second while taken (the previous generation still holds it during a
    /// reload).
    async fn serve(mut self, t: TaskCtx) {
        let mut listener = None;
        let mut logged = false;
        let mut clients: Vec<Stream> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = t.cancelled() => {
                    for c in &clients {
                        c.try_write_all(&control_frame(FSTRM_STOP, None));
                    }
                    return;
                }
                _ = retry.tick(), if listener.is_none() => {
                    match bind(&self.endpoint).await {
                        Ok(l) => listener = Some(l),
                        Err(e) if !logged => {
                            LOG.error(&format!("Failed to start dnstap listener: {e}"));
                            logged = true;
                        }
                        Err(_) => {}
                    }
                }
                c = accept(listener.as_ref(), &self.mode) => match c {
                    Ok(s) => clients.push(s),
                    Err(e) => LOG.warning(&format!("Error accepting dnstap connection: {e}")),
                },
                _ = self.shared.notify.notified() => {
                    self.take();
                    if clients.is_empty() {
                        continue;
                    }
                    let n = self.taken.records.len();
                    for i in 0..n {
                        self.frame(i, &mut buf);
                        if buf.len() < WRITE_CHUNK && i + 1 < n {
                            continue;
                        }
                        let mut kept = Vec::with_capacity(clients.len());
                        for mut c in clients.drain(..) {
                            let w = tokio::time::timeout(IO_TIMEOUT, c.write_all(&buf)).await;
                            if matches!(w, Ok(Ok(()))) {
                                kept.push(c);
                            }
                        }
                        clients = kept;
                        buf.clear();
                    }
                }
            }
        }
    }

    /// The task: until the generation is retired, frames queued messages onto the
    /// connection; without one, queued messages are dropped (counted) and the endpoint is
    /// redialled every check interval; a failed write redials at once.
    pub(crate) async fn run(mut self, t: TaskCtx) {
        if matches!(self.mode, Mode::Listen(_)) {
            return self.serve(t).await;
        }
        let mut conn = tokio::select! {
            _ = t.cancelled() => return,
            c = self.connect() => c,
        };
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.tick().await;
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK + 4096);
        let shared = self.shared.clone();
        loop {
            tokio::select! {
                _ = t.cancelled() => {
                    self.stop(conn.as_ref(), &mut buf);
                    return;
                }
                _ = shared.notify.notified() => {
                    if conn.is_none() {
                        self.take();
                        shared.dropped.fetch_add(self.taken.records.len() as u64, Ordering::Relaxed);
                        continue;
                    }
                    // What else arrives within a short window goes out with it: one wake-up
                    // and a few large writes per batch instead of a syscall per message.
                    tokio::select! {
                        _ = t.cancelled() => {
                            self.stop(conn.as_ref(), &mut buf);
                            return;
                        }
                        _ = tokio::time::sleep(BATCH_WINDOW) => {}
                    }
                    self.take();
                    let n = self.taken.records.len();
                    let mut written = 0;
                    let mut ok = true;
                    for i in 0..n {
                        self.frame(i, &mut buf);
                        if buf.len() < WRITE_CHUNK && i + 1 < n {
                            continue;
                        }
                        let Some(s) = conn.as_mut() else { break };
                        ok = matches!(
                            tokio::time::timeout(IO_TIMEOUT, s.write_all(&buf)).await,
                            Ok(Ok(()))
                        );
                        buf.clear();
                        if !ok {
                            shared.dropped.fetch_add((n - written) as u64, Ordering::Relaxed);
                            break;
                        }
                        written = i + 1;
                    }
                    if !ok {
                        // The broken connection is closed before the new dial.
                        drop(conn.take());
                        conn = tokio::select! {
                            _ = t.cancelled() => return,
                            c = self.connect() => c,
                        };
                    }
                }
                _ = tick.tick() => {
                    let dropped = shared.dropped.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        LOG.warning(&format!("Dropped dnstap messages: {dropped}"));
                    }
                    if conn.is_none() {
                        conn = tokio::select! {
                            _ = t.cancelled() => return,
                            c = self.connect() => c,
                        };
                    }
                }
            }
        }
    }

    /// The task's last poll: what is queued and what the socket takes now, then STOP; no
    /// waiting for FINISH.
    fn stop(&mut self, conn: Option<&Stream>, buf: &mut Vec<u8>) {
        let Some(s) = conn else { return };
        buf.clear();
        self.take();
        for i in 0..self.taken.records.len() {
            self.frame(i, buf);
        }
        s.try_write_all(buf);
        s.try_write_all(&control_frame(FSTRM_STOP, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_follow_frame_streams() {
        let f = control_frame(FSTRM_READY, Some(CONTENT_TYPE));
        assert_eq!(&f[..4], &[0, 0, 0, 0]);
        let len = u32::from_be_bytes([f[4], f[5], f[6], f[7]]) as usize;
        assert_eq!(len, f.len() - 8);
        assert_eq!(&f[8..12], &FSTRM_READY.to_be_bytes());
        assert_eq!(&f[12..16], &1u32.to_be_bytes());
        assert_eq!(&f[16..20], &(CONTENT_TYPE.len() as u32).to_be_bytes());
        assert_eq!(&f[20..], CONTENT_TYPE);
        assert_eq!(
            control_frame(FSTRM_STOP, None),
            vec![0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (q, _w) = output(
            Endpoint::Unix("/nonexistent".into()),
            Envelope {
                identity: vec![],
                version: vec![],
                extra: None,
            },
            2,
            0,
            Mode::Dial(None),
        );
        let r = Record {
            kind: super::super::proto::MessageType::ClientQuery,
            tcp: false,
            query_addr: None,
            response_addr: None,
            query_time: 1,
            response_time: 0,
            wire: None,
            extra: None,
        };
        for i in 0..5u8 {
            q.send(r.clone(), Some(&[i, i][..]));
        }
        assert_eq!(q.shared.dropped.load(Ordering::Relaxed), 3);
        let b = q.shared.batch.lock().unwrap();
        assert_eq!(b.records.len(), 2);
        // The wire bytes of the queued records only, each record pointing at its own.
        assert_eq!(b.bytes, [0, 0, 1, 1]);
        assert_eq!(b.records[1].wire, Some((2, 4)));
    }
}
