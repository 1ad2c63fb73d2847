//! Node-cache instances on one node finding each other (a DaemonSet rolling with `maxSurge`
//! runs two at once). Each instance holds a control socket, an abstract unix socket named
//! `sextant-node-cache/<interface>/<slot>` in the node's network namespace: the name is taken by
//! binding it and freed by the kernel when the process dies, even by SIGKILL, so a live name is a
//! live instance. Over it an instance tells its state (`starting`, `serving`, `stopping`) and
//! hands duplicates of its listening sockets to a newcomer, which then reads the very same
//! sockets (see `server::listen::handover`). A third name, `.../lock`, serialises changes to the
//! interface and rules, so "is another instance alive?" and the teardown that depends on it
//! cannot interleave with another instance's start. Both ends check that the other runs as the
//! same user (SO_PEERCRED). Blocking calls; the server side runs on its own thread.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    accept, bind, connect, getsockopt, listen, recv, recvmsg, send, sendmsg, setsockopt, shutdown,
    socket, sockopt, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags,
    Shutdown, SockFlag, SockType, UnixAddr,
};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::log;
use crate::server::listen::handover::{self, SocketKind};

/// How many instances may run on one node at once.
pub(crate) const MAX_INSTANCES: usize = 8;
/// Time allowed for one exchange with another instance.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What an instance is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Set up, not yet answering.
    Starting,
    /// Its listeners are open and read.
    Serving,
    /// Shutting down: not a successor for anyone.
    Stopping,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Serving => "serving",
            State::Stopping => "stopping",
        }
    }

    fn parse(s: &str) -> Option<State> {
        match s {
            "starting" => Some(State::Starting),
            "serving" => Some(State::Serving),
            "stopping" => Some(State::Stopping),
            _ => None,
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> State {
        match c {
            0 => State::Starting,
            1 => State::Serving,
            _ => State::Stopping,
        }
    }
}

fn abstract_name(iface: &str, what: &str) -> nix::Result<UnixAddr> {
    UnixAddr::new_abstract(format!("sextant-node-cache/{iface}/{what}").as_bytes())
}

fn seqpacket() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

fn set_timeouts(fd: &OwnedFd) -> nix::Result<()> {
    let t = TimeVal::milliseconds(IO_TIMEOUT.as_millis() as i64);
    setsockopt(fd, sockopt::ReceiveTimeout, &t)?;
    setsockopt(fd, sockopt::SendTimeout, &t)
}

/// True if the process at the other end runs as our user.
fn same_user(fd: &OwnedFd) -> bool {
    getsockopt(fd, sockopt::PeerCredentials)
        .is_ok_and(|c| c.uid() == nix::unistd::geteuid().as_raw())
}

/// Why this instance could not take a control socket.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error("control socket: {0}")]
    Socket(#[source] Errno),
    #[error("control socket name: {0}")]
    Name(#[source] Errno),
    /// Binding or listening on the named socket.
    #[error("control socket {addr}: {source}")]
    Bind { addr: String, source: Errno },
    #[error("control thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("{max} node-cache instances already run for interface {0}", max = MAX_INSTANCES)]
    Full(String),
}

/// This instance's control socket, answering the others until dropped.
pub(crate) struct Instance {
    pub slot: usize,
    fd: Arc<OwnedFd>,
    state: Arc<AtomicU8>,
}

impl Instance {
    /// Takes the first free slot and answers on it from a thread of its own.
    pub(crate) fn claim(iface: &str) -> Result<Instance, ClaimError> {
        for slot in 0..MAX_INSTANCES {
            let fd = seqpacket().map_err(ClaimError::Socket)?;
            let addr = abstract_name(iface, &slot.to_string()).map_err(ClaimError::Name)?;
            let at = |source| ClaimError::Bind {
                addr: addr.to_string(),
                source,
            };
            match bind(fd.as_raw_fd(), &addr) {
                Ok(()) => {}
                Err(Errno::EADDRINUSE) => continue,
                Err(e) => return Err(at(e)),
            }
            listen(&fd, Backlog::new(16).unwrap_or(Backlog::MAXCONN)).map_err(at)?;
            let fd = Arc::new(fd);
            let state = Arc::new(AtomicU8::new(State::Starting.code()));
            let (f, s) = (fd.clone(), state.clone());
            std::thread::Builder::new()
                .name("sextant-nc-ctl".into())
                .spawn(move || serve(f, s))
                .map_err(ClaimError::Thread)?;
            return Ok(Instance { slot, fd, state });
        }
        Err(ClaimError::Full(iface.to_string()))
    }

    pub(crate) fn set_state(&self, s: State) {
        self.state.store(s.code(), Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> State {
        State::from_code(self.state.load(Ordering::Relaxed))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Wakes the thread blocked in accept; the name is free once the last reference goes.
        let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Both);
    }
}

fn serve(fd: Arc<OwnedFd>, state: Arc<AtomicU8>) {
    loop {
        let conn = match accept(fd.as_raw_fd()) {
            // SAFETY: accept returned a new descriptor that nothing else owns.
            Ok(c) => unsafe { OwnedFd::from_raw_fd(c) },
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(_) => return,
        };
        if set_timeouts(&conn).is_err() || !same_user(&conn) {
            continue;
        }
        let mut buf = [0u8; 64];
        let Ok(n) = recv(conn.as_raw_fd(), &mut buf, MsgFlags::empty()) else {
            continue;
        };
        match &buf[..n] {
            b"state" => {
                let st = State::from_code(state.load(Ordering::Relaxed));
                let msg = format!("state {} {}", st.as_str(), std::process::id());
                let _ = send(conn.as_raw_fd(), msg.as_bytes(), MsgFlags::empty());
            }
            b"sockets" => {
                let socks = handover::open_sockets();
                let mut sent = 0;
                for (kind, addr, sfd) in &socks {
                    let text = format!("sock {} {addr}", kind.as_str());
                    let fds = [sfd.as_raw_fd()];
                    let cmsg = [ControlMessage::ScmRights(&fds)];
                    if sendmsg::<()>(
                        conn.as_raw_fd(),
                        &[IoSlice::new(text.as_bytes())],
                        &cmsg,
                        MsgFlags::empty(),
                        None,
                    )
                    .is_err()
                    {
                        break;
                    }
                    sent += 1;
                }
                let _ = send(
                    conn.as_raw_fd(),
                    format!("end {sent}").as_bytes(),
                    MsgFlags::empty(),
                );
            }
            _ => {}
        }
    }
}

/// Connects to slot `slot`; None when no instance holds it.
fn connect_slot(iface: &str, slot: usize) -> Option<OwnedFd> {
    let fd = seqpacket().ok()?;
    let addr = abstract_name(iface, &slot.to_string()).ok()?;
    connect(fd.as_raw_fd(), &addr).ok()?;
    if set_timeouts(&fd).is_err() || !same_user(&fd) {
        return None;
    }
    Some(fd)
}

/// Another live instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    pub slot: usize,
    pub state: State,
    pub pid: u32,
}

/// The other live instances (every slot but `mine`) and what they are doing.
pub(crate) fn peers(iface: &str, mine: usize) -> Vec<Peer> {
    (0..MAX_INSTANCES)
        .filter(|s| *s != mine)
        .filter_map(|slot| {
            let fd = connect_slot(iface, slot)?;
            send(fd.as_raw_fd(), b"state", MsgFlags::empty()).ok()?;
            let mut buf = [0u8; 64];
            let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
            let text = std::str::from_utf8(&buf[..n]).ok()?;
            let mut it = text.split(' ');
            if it.next() != Some("state") {
                return None;
            }
            let state = State::parse(it.next()?)?;
            let pid = it.next()?.parse().ok()?;
            Some(Peer { slot, state, pid })
        })
        .collect()
}

/// Why another instance's sockets could not be fetched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("instance {0} is gone")]
    Gone(usize),
    #[error("{0}")]
    Send(#[source] Errno),
    #[error("reading sockets: {0}")]
    Read(#[source] Errno),
    #[error("instance closed the connection before the end")]
    Closed,
    #[error("expected {want} sockets, got {got}")]
    Count { want: String, got: usize },
    /// The message's text follows in each of these.
    #[error("bad kind in {0:?}")]
    Kind(String),
    #[error("bad address in {0:?}")]
    Address(String),
    #[error("no descriptor with {0:?}")]
    NoDescriptor(String),
    #[error("unexpected message {0:?}")]
    Unexpected(String),
    #[error("too many messages")]
    TooMany,
}

/// Asks instance `slot` for duplicates of its listening sockets.
pub(crate) fn fetch_sockets(
    iface: &str,
    slot: usize,
) -> Result<Vec<(SocketKind, SocketAddr, OwnedFd)>, FetchError> {
    let fd = connect_slot(iface, slot).ok_or(FetchError::Gone(slot))?;
    send(fd.as_raw_fd(), b"sockets", MsgFlags::empty()).map_err(FetchError::Send)?;
    let mut out = Vec::new();
    // At most one message per socket plus the end; bounded anyway.
    for _ in 0..4096 {
        let mut buf = [0u8; 128];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(FetchError::Read)?;
            let mut fds = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(r) = c {
                        // SAFETY: descriptors received with SCM_RIGHTS are new in this process
                        // and owned by nothing else.
                        fds.extend(r.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                    }
                }
            }
            (msg.bytes, fds)
        };
        if n == 0 {
            return Err(FetchError::Closed);
        }
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let parts: Vec<&str> = text.split(' ').collect();
        match parts.as_slice() {
            ["end", count] => {
                if count.parse::<usize>().ok() != Some(out.len()) {
                    return Err(FetchError::Count {
                        want: count.to_string(),
                        got: out.len(),
                    });
                }
                return Ok(out);
            }
            ["sock", kind, addr] => {
                let kind = SocketKind::parse(kind).ok_or_else(|| FetchError::Kind(text.clone()))?;
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|_| FetchError::Address(text.clone()))?;
                let mut fds = fds.into_iter();
                let sfd = fds
                    .next()
                    .ok_or_else(|| FetchError::NoDescriptor(text.clone()))?;
                out.push((kind, addr, sfd));
            }
            _ => return Err(FetchError::Unexpected(text.clone())),
        }
    }
    Err(FetchError::TooMany)
}

/// Held while the interface and rules are changed; released on drop (or by the kernel when the
/// process dies).
pub(crate) struct Lock {
    _fd: OwnedFd,
}

/// Takes the lock for `iface`, waiting up to `wait`.
pub(crate) fn lock(iface: &str, wait: Duration) -> Option<Lock> {
    let deadline = Instant::now() + wait;
    let addr = abstract_name(iface, "lock").ok()?;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .ok()?;
        match bind(fd.as_raw_fd(), &addr) {
            Ok(()) => return Some(Lock { _fd: fd }),
            Err(Errno::EADDRINUSE) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(Errno::EADDRINUSE) => return None,
            Err(e) => {
                log::warning(&format!("node-cache lock {addr}: {e}"));
                return None;
            }
        }
    }
}

/// Takes the sockets of a live instance, if there is one, for this instance's binds: a serving
/// one first; one still starting may not have bound anything yet.
pub(crate) fn inherit_from_peers(iface: &str, mine: usize) {
    let mut all = peers(iface, mine);
    all.retain(|p| p.state != State::Stopping);
    all.sort_by_key(|p| p.state != State::Serving);
    for p in all {
        match fetch_sockets(iface, p.slot) {
            Ok(socks) if socks.is_empty() => continue,
            Ok(socks) => {
                let n = socks.len();
                match handover::inherit(socks) {
                    Ok(_) => log::info(&format!(
                        "Sharing {n} listening socket(s) with node-cache instance pid {}",
                        p.pid
                    )),
                    Err(e) => log::warning(&format!(
                        "Sockets from node-cache instance pid {}: {e}",
                        p.pid
                    )),
                }
                return;
            }
            Err(e) => log::warning(&format!(
                "Could not take the sockets of node-cache instance pid {}: {e}",
                p.pid
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn raw(fd: &impl AsFd) -> RawFd {
        fd.as_fd().as_raw_fd()
    }

    fn iface() -> String {
        format!("t{}-{:?}", std::process::id(), std::thread::current().id())
    }

    #[test]
    fn instances_see_each_other_and_hand_over_sockets() {
        let name = iface();
        let a = Instance::claim(&name).unwrap();
        let b = Instance::claim(&name).unwrap();
        assert_ne!(a.slot, b.slot);
        assert_eq!(
            peers(&name, b.slot),
            vec![Peer {
                slot: a.slot,
                state: State::Starting,
                pid: std::process::id()
            }]
        );
        a.set_state(State::Serving);
        assert_eq!(peers(&name, b.slot)[0].state, State::Serving);
        assert_eq!(a.state(), State::Serving);
        // Sockets: this process's open ones come back as duplicates.
        let u = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let ua = u.local_addr().unwrap();
        handover::register(SocketKind::Udp, ua, &u);
        let got = fetch_sockets(&name, a.slot).unwrap();
        let (_, _, fd) = got
            .into_iter()
            .find(|(k, ad, _)| *k == SocketKind::Udp && *ad == ua)
            .expect("the UDP socket");
        assert_ne!(raw(&fd), raw(&*u));
        let dup = std::net::UdpSocket::from(fd);
        assert_eq!(dup.local_addr().unwrap(), ua);
        // A dropped instance frees its name at once.
        let slot_a = a.slot;
        drop(a);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !peers(&name, b.slot).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(peers(&name, b.slot).is_empty());
        // The name itself is free once the control thread let go of the socket.
        let c = loop {
            let c = Instance::claim(&name).unwrap();
            if c.slot == slot_a || Instant::now() > deadline {
                break c;
            }
            drop(c);
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(c.slot, slot_a, "the freed slot is reused");
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let name = iface();
        let l = lock(&name, Duration::from_millis(10)).unwrap();
        let t = Instant::now();
        assert!(lock(&name, Duration::from_millis(100)).is_none());
        assert!(t.elapsed() >= Duration::from_millis(100));
        drop(l);
        assert!(lock(&name, Duration::from_millis(10)).is_some());
    }
}
