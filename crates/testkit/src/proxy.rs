//! Fault-injecting DNS relay (netem is not available here): one 127.0.0.1 port relaying UDP
//! and TCP to an upstream, with live-settable delay, seeded loss, duplication, reordering,
//! truncation, TCP reset and TCP drip. Loopback only.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ports::free_addr;
use crate::rng::Rng;
use crate::sched::{SchedHandle, Scheduler};

/// Faults applied by a [`FaultProxy`]. Probabilities are in `[0, 1]`; all default to off.
///
/// ```
/// use sextant_testkit::Faults;
/// use std::time::Duration;
/// let f = Faults::none().delay(Duration::from_millis(50)).loss(0.3).seed(7);
/// assert_eq!(f.loss, 0.3);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Added before relaying each reply (UDP and TCP).
    pub delay: Duration,
    /// Probability that a UDP packet (query or reply) is dropped.
    pub loss: f64,
    /// Probability that a UDP reply is sent twice.
    pub duplicate: f64,
    /// Probability that a UDP reply is held back and sent after the next reply (or after
    /// 500 ms if no other reply comes).
    pub reorder: f64,
    /// UDP replies get TC=1 and are cut to header + question.
    pub truncate: bool,
    /// TCP: instead of relaying a reply, reset (RST) the client connection.
    pub tcp_reset: bool,
    /// TCP: relay replies one byte at a time with this pause per byte.
    pub tcp_drip: Option<Duration>,
    /// Seed for the loss/duplicate/reorder decisions (same seed, same decisions).
    pub seed: u64,
}

impl Faults {
    /// No faults: a transparent relay.
    pub fn none() -> Self {
        Faults::default()
    }
    /// Set [`Faults::delay`].
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    /// Set [`Faults::loss`].
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }
    /// Set [`Faults::duplicate`].
    pub fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }
    /// Set [`Faults::reorder`].
    pub fn reorder(mut self, p: f64) -> Self {
        self.reorder = p;
        self
    }
    /// Set [`Faults::truncate`].
    pub fn truncate(mut self, on: bool) -> Self {
        self.truncate = on;
        self
    }
    /// Set [`Faults::tcp_reset`].
    pub fn tcp_reset(mut self, on: bool) -> Self {
        self.tcp_reset = on;
        self
    }
    /// Set [`Faults::tcp_drip`].
    pub fn tcp_drip(mut self, per_byte: Duration) -> Self {
        self.tcp_drip = Some(per_byte);
        self
    }
    /// Set [`Faults::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Counters of a [`FaultProxy`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProxyStats {
    /// UDP queries received from clients.
    pub udp_queries: u64,
    /// UDP replies received from the upstream.
    pub udp_replies: u64,
    /// UDP packets dropped by `loss`.
    pub dropped: u64,
    /// UDP replies sent twice.
    pub duplicated: u64,
    /// UDP replies held back by `reorder`.
    pub reordered: u64,
    /// UDP replies truncated.
    pub truncated: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
    /// TCP replies relayed (or reset) from the upstream.
    pub tcp_replies: u64,
    /// TCP client connections reset.
    pub tcp_resets: u64,
}

#[derive(Default)]
struct Counters {
    udp_queries: AtomicU64,
    udp_replies: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    truncated: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_replies: AtomicU64,
    tcp_resets: AtomicU64,
}

struct State {
    upstream: SocketAddr,
    faults: Mutex<(Faults, Rng)>,
    c: Counters,
    stop: AtomicBool,
    /// A reply held back by `reorder`, with a generation number for its timed release.
    held: Mutex<Option<(u64, Vec<u8>, SocketAddr)>>,
    held_gen: AtomicU64,
}

impl State {
    fn faults(&self) -> Faults {
        self.faults.lock().map(|f| f.0.clone()).unwrap_or_default()
    }
    fn chance(&self, pick: impl Fn(&Faults) -> f64) -> bool {
        self.faults
            .lock()
            .map(|mut f| {
                let p = pick(&f.0);
                f.1.chance(p)
            })
            .unwrap_or(false)
    }
}

/// A UDP+TCP relay on 127.0.0.1 that injects [`Faults`] between clients and an upstream.
///
/// ```
/// use sextant_testkit::*;
/// use std::time::Duration;
/// let up = Upstream::records(&["a.example. 60 IN A 192.0.2.1"]).unwrap();
/// let proxy = FaultProxy::start(up.addr(), Faults::none()).unwrap();
/// let r = udp(proxy.addr(), &Query::new("a.example.", RecordType::A), Duration::from_secs(2)).unwrap();
/// assert_eq!(r.answers().len(), 1);
/// proxy.set_faults(Faults::none().loss(1.0));
/// assert!(udp_raw(proxy.addr(), &Query::new("a.example.", RecordType::A), Duration::from_millis(200)).unwrap().is_none());
/// ```
pub struct FaultProxy {
    addr: SocketAddr,
    st: Arc<State>,
    threads: Vec<JoinHandle<()>>,
    _sched: Scheduler,
}

impl FaultProxy {
    /// Start relaying to `upstream` with `faults`.
    pub fn start(upstream: SocketAddr, faults: Faults) -> Result<FaultProxy> {
        let st = Arc::new(State {
            upstream,
            faults: Mutex::new((faults.clone(), Rng::seeded(faults.seed))),
            c: Counters::default(),
            stop: AtomicBool::new(false),
            held: Mutex::new(None),
            held_gen: AtomicU64::new(0),
        });
        let sched = Scheduler::new("proxy-timer")?;
        let mut bound = None;
        for _ in 0..20 {
            let addr = free_addr();
            if let (Ok(u), Ok(t)) = (UdpSocket::bind(addr), TcpListener::bind(addr)) {
                bound = Some((addr, u, t));
                break;
            }
        }
        let (addr, front, listener) = bound.ok_or_else(|| Error::Command {
            command: "bind fault proxy".into(),
            detail: "no free port".into(),
        })?;
        front.set_read_timeout(Some(Duration::from_millis(100)))?;
        let front = Arc::new(front);
        let mut threads = Vec::new();
        {
            let (st, front, sh) = (st.clone(), front.clone(), sched.handle());
            threads.push(
                std::thread::Builder::new()
                    .name("proxy-udp".into())
                    .spawn(move || udp_front(&st, &front, &sh))?,
            );
        }
        {
            let st = st.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("proxy-accept".into())
                    .spawn(move || tcp_accept(&st, listener))?,
            );
        }
        Ok(FaultProxy {
            addr,
            st,
            threads,
            _sched: sched,
        })
    }

    /// The proxy's address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the faults (and reseed the RNG from `faults.seed`); applies to the next packet.
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.st.faults.lock() {
            let seed = faults.seed;
            *f = (faults, Rng::seeded(seed));
        }
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.st.faults()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.st.c;
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        ProxyStats {
            udp_queries: g(&c.udp_queries),
            udp_replies: g(&c.udp_replies),
            dropped: g(&c.dropped),
            duplicated: g(&c.duplicated),
            reordered: g(&c.reordered),
            truncated: g(&c.truncated),
            tcp_connections: g(&c.tcp_connections),
            tcp_replies: g(&c.tcp_replies),
            tcp_resets: g(&c.tcp_resets),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.st.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn udp_front(st: &Arc<State>, front: &Arc<UdpSocket>, sched: &SchedHandle) {
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    while !st.stop.load(Ordering::SeqCst) {
        let Ok((n, client)) = front.recv_from(&mut buf) else {
            continue;
        };
        st.c.udp_queries.fetch_add(1, Ordering::SeqCst);
        if st.chance(|f| f.loss) {
            st.c.dropped.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let back = match backs.get(&client) {
            Some(b) => b.clone(),
            None => {
                let Ok(b) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
                    continue;
                };
                let _ = b.set_read_timeout(Some(Duration::from_millis(100)));
                let b = Arc::new(b);
                let (st2, b2, f2, sh2) = (st.clone(), b.clone(), front.clone(), sched.clone());
                let spawned = std::thread::Builder::new()
                    .name("proxy-udp-back".into())
                    .spawn(move || udp_back(&st2, &b2, &f2, client, &sh2));
                if spawned.is_err() {
                    continue;
                }
                backs.insert(client, b.clone());
                b
            }
        };
        let _ = back.send_to(&buf[..n], st.upstream);
    }
}

fn truncate_reply(msg: &[u8]) -> Vec<u8> {
    let mut end = 12usize.min(msg.len());
    let qdcount = match (msg.get(4), msg.get(5)) {
        (Some(a), Some(b)) => u16::from_be_bytes([*a, *b]),
        _ => 0,
    };
    // Keep the question section (uncompressed names in queries).
    for _ in 0..qdcount {
        let mut at = end;
        let mut ok = false;
        for _ in 0..128 {
            match msg.get(at) {
                Some(0) => {
                    at += 1;
                    ok = true;
                    break;
                }
                Some(l) if l & 0xc0 == 0xc0 => {
                    at += 2;
                    ok = true;
                    break;
                }
                Some(l) => at += 1 + usize::from(*l),
                None => break,
            }
        }
        if !ok || at + 4 > msg.len() {
            break;
        }
        end = at + 4;
    }
    let mut out = msg[..end].to_vec();
    if out.len() >= 12 {
        out[2] |= 0x02;
        for b in &mut out[6..12] {
            *b = 0;
        }
        if end == 12 {
            out[4] = 0;
            out[5] = 0;
        }
    }
    out
}

fn udp_back(
    st: &Arc<State>,
    back: &UdpSocket,
    front: &Arc<UdpSocket>,
    client: SocketAddr,
    sched: &SchedHandle,
) {
    let mut buf = vec![0u8; 65_535];
    while !st.stop.load(Ordering::SeqCst) {
        let Ok((n, _)) = back.recv_from(&mut buf) else {
            continue;
        };
        st.c.udp_replies.fetch_add(1, Ordering::SeqCst);
        let faults = st.faults();
        if st.chance(|f| f.loss) {
            st.c.dropped.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let mut pkt = buf[..n].to_vec();
        if faults.truncate {
            pkt = truncate_reply(&pkt);
            st.c.truncated.fetch_add(1, Ordering::SeqCst);
        }
        let copies = if st.chance(|f| f.duplicate) {
            st.c.duplicated.fetch_add(1, Ordering::SeqCst);
            2
        } else {
            1
        };
        let hold = st.chance(|f| f.reorder);
        let (st2, front2) = (st.clone(), front.clone());
        let sched2 = sched.clone();
        let deliver = move || {
            if hold {
                let mut h = match st2.held.lock() {
                    Ok(h) => h,
                    Err(_) => return,
                };
                if h.is_none() {
                    st2.c.reordered.fetch_add(1, Ordering::SeqCst);
                    let gen = st2.held_gen.fetch_add(1, Ordering::SeqCst) + 1;
                    *h = Some((gen, pkt, client));
                    drop(h);
                    let (st3, front3) = (st2.clone(), front2.clone());
                    sched2.after(Duration::from_millis(500), move || {
                        release_held(&st3, &front3, Some(gen));
                    });
                    return;
                }
            }
            for _ in 0..copies {
                let _ = front2.send_to(&pkt, client);
            }
            release_held(&st2, &front2, None);
        };
        if faults.delay.is_zero() {
            deliver();
        } else {
            sched.after(faults.delay, deliver);
        }
    }
}

/// Send the held-back reply, if any (only if its generation matches, when given).
fn release_held(st: &State, front: &UdpSocket, gen: Option<u64>) {
    let taken = st.held.lock().ok().and_then(|mut h| match (&*h, gen) {
        (Some((g, _, _)), Some(want)) if *g != want => None,
        _ => h.take(),
    });
    if let Some((_, pkt, to)) = taken {
        let _ = front.send_to(&pkt, to);
    }
}

fn tcp_accept(st: &Arc<State>, listener: TcpListener) {
    for client in listener.incoming() {
        if st.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        st.c.tcp_connections.fetch_add(1, Ordering::SeqCst);
        let st2 = st.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-tcp".into())
            .spawn(move || tcp_relay(&st2, client));
    }
}

fn tcp_relay(st: &Arc<State>, client: TcpStream) {
    let Ok(upstream) = TcpStream::connect_timeout(&st.upstream, Duration::from_secs(2)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    // client -> upstream: plain copy on its own thread.
    let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let st_up = st.clone();
    let _ = std::thread::Builder::new()
        .name("proxy-tcp-up".into())
        .spawn(move || {
            let _ = c_read.set_read_timeout(Some(Duration::from_millis(100)));
            let mut chunk = [0u8; 8192];
            loop {
                if st_up.stop.load(Ordering::SeqCst) {
                    break;
                }
                match c_read.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        if u_write.write_all(&chunk[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            let _ = u_write.shutdown(Shutdown::Write);
        });
    // upstream -> client: message by message, with faults.
    let mut client = client;
    let mut upstream = upstream;
    let _ = upstream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if st.stop.load(Ordering::SeqCst) {
            break;
        }
        match upstream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        }
        while buf.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            if buf.len() < 2 + len {
                break;
            }
            let msg: Vec<u8> = buf.drain(..2 + len).collect();
            st.c.tcp_replies.fetch_add(1, Ordering::SeqCst);
            let f = st.faults();
            if !f.delay.is_zero() {
                std::thread::sleep(f.delay);
            }
            if f.tcp_reset {
                st.c.tcp_resets.fetch_add(1, Ordering::SeqCst);
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                // Wake the other direction; the RST goes out when both descriptors close.
                let _ = client.shutdown(Shutdown::Read);
                let _ = upstream.shutdown(Shutdown::Both);
                return;
            }
            let ok = match f.tcp_drip {
                Some(per_byte) => msg.iter().all(|b| {
                    let ok = client.write_all(&[*b]).is_ok();
                    std::thread::sleep(per_byte);
                    ok
                }),
                None => client.write_all(&msg).is_ok(),
            };
            if !ok {
                let _ = upstream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_question_and_sets_tc() {
        let q = crate::Query::new("a.example.", hickory_proto::rr::RecordType::A)
            .id(5)
            .edns(1232)
            .to_bytes();
        let t = truncate_reply(&q);
        assert_eq!(t.len(), 12 + "a.example.".len() + 1 + 4);
        assert_eq!(t[2] & 0x02, 0x02);
        assert_eq!(&t[4..6], &[0, 1]);
        assert_eq!(&t[6..12], &[0; 6]);
        assert_eq!(truncate_reply(&[1, 2, 3]), vec![1, 2, 3]);
    }
}
