//! The node-cache network interface, over raw rtnetlink (NETLINK_ROUTE) messages: find a link
//! by name, create it as type `dummy` (or an empty `bridge` when the kernel has no dummy link
//! type), give it every local IP as /32 or /128 (IPv6 ones without duplicate address detection,
//! so they are usable at once), and delete it. Blocking calls; no other I/O.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const IFA_F_NODAD: u8 = 0x02;

static SEQ: AtomicU32 = AtomicU32::new(1);

/// A netlink failure: the kernel's errno, or a malformed/missing answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NetlinkError {
    Errno(Errno),
    Protocol(String),
}

impl std::fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetlinkError::Errno(e) => write!(f, "{}", e.desc()),
            NetlinkError::Protocol(s) => write!(f, "netlink: {s}"),
        }
    }
}

impl From<Errno> for NetlinkError {
    fn from(e: Errno) -> Self {
        NetlinkError::Errno(e)
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// A request under construction: header, fixed part, attributes.
struct Msg {
    buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Msg {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(fixed);
        Msg { buf }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// A nested attribute holding the attributes `inner` (already encoded).
    fn nested(&mut self, kind: u16, inner: &[u8]) {
        self.attr(kind | NLA_F_NESTED, inner);
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn name_attr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One open NETLINK_ROUTE socket.
pub(crate) struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    pub(crate) fn open() -> Result<Netlink> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::seconds(5))?;
        Ok(Netlink { fd })
    }

    /// Sends one request and collects the answer messages (type, payload after the header)
    /// until the ACK/error or DONE. An error ACK becomes `Err(errno)`.
    fn request(&self, msg: Vec<u8>) -> Result<Vec<(u16, Vec<u8>)>> {
        let seq = u32_at(&msg, 8).unwrap_or(0);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        for _ in 0..64 {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32_at(&buf, off).unwrap_or(0) as usize;
                let kind = u16_at(&buf, off + 4).unwrap_or(0);
                let mseq = u32_at(&buf, off + 8).unwrap_or(0);
                if len < 16 || off + len > n {
                    return Err(NetlinkError::Protocol("truncated message".into()));
                }
                let payload = buf[off + 16..off + len].to_vec();
                off += align4(len);
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .and_then(|b| b.try_into().ok())
                            .map(i32::from_ne_bytes)
                            .ok_or_else(|| NetlinkError::Protocol("short error".into()))?;
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(NetlinkError::Errno(Errno::from_raw(-code)));
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => out.push((kind, payload)),
                }
            }
            if !out.is_empty() {
                // A plain GET answer without NLM_F_ACK is a single message.
                return Ok(out);
            }
        }
        Err(NetlinkError::Protocol("no answer".into()))
    }

    /// The interface index of link `name`, or `None` if there is no such link.
    pub(crate) fn link_index(&self, name: &str) -> Result<Option<i32>> {
        let mut m = Msg::new(RTM_GETLINK, NLM_F_ACK, &ifinfomsg(0, 0, 0));
        m.attr(IFLA_IFNAME, &name_attr(name));
        match self.request(m.finish()) {
            Ok(msgs) => {
                for (kind, p) in msgs {
                    if kind == RTM_NEWLINK {
                        let idx = u32_at(&p, 4)
                            .ok_or_else(|| NetlinkError::Protocol("short ifinfomsg".into()))?;
                        return Ok(Some(idx as i32));
                    }
                }
                Ok(None)
            }
            Err(NetlinkError::Errno(Errno::ENODEV)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates link `name` of type `kind` (`dummy`, `bridge`).
    pub(crate) fn add_link(&self, name: &str, kind: &str) -> Result<()> {
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &ifinfomsg(0, 0, 0),
        );
        m.attr(IFLA_IFNAME, &name_attr(name));
        let mut inner = Msg { buf: Vec::new() };
        inner.attr(IFLA_INFO_KIND, kind.as_bytes());
        m.nested(IFLA_LINKINFO, &inner.buf);
        self.request(m.finish()).map(|_| ())
    }

    /// Deletes link `name`.
    pub(crate) fn del_link(&self, name: &str) -> Result<()> {
        let mut m = Msg::new(RTM_DELLINK, NLM_F_ACK, &ifinfomsg(0, 0, 0));
        m.attr(IFLA_IFNAME, &name_attr(name));
        self.request(m.finish()).map(|_| ())
    }

    /// Adds `ip` as a host address (/32 or /128) to link `index`; `EEXIST` if it is there.
    pub(crate) fn add_addr(&self, index: i32, ip: IpAddr) -> Result<()> {
        let (family, prefix, bytes) = match ip {
            IpAddr::V4(a) => (libc::AF_INET as u8, 32u8, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6 as u8, 128u8, a.octets().to_vec()),
        };
        let mut fixed = [0u8; 8];
        fixed[0] = family;
        fixed[1] = prefix;
        if ip.is_ipv6() {
            // No duplicate address detection: usable at once, on a link that is never up.
            fixed[2] = IFA_F_NODAD;
        }
        fixed[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &fixed);
        m.attr(IFA_LOCAL, &bytes);
        m.attr(IFA_ADDRESS, &bytes);
        self.request(m.finish()).map(|_| ())
    }
}

/// What `ensure_device` found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ensured {
    /// The link was there; missing addresses were added back.
    Existed,
    /// Created as a dummy link.
    CreatedDummy,
    /// The kernel refused the dummy type; created as an empty bridge.
    CreatedBridge(String),
}

/// A failure of `ensure_device`, saying whether the link already existed (a failed check) or
/// not (a failed creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnsureError {
    pub existed: bool,
    pub error: NetlinkError,
}

/// Makes sure link `name` exists with every IP in `ips` (like k8s-dns's `EnsureDummyDevice`).
pub(crate) fn ensure_device(
    name: &str,
    ips: &[IpAddr],
) -> std::result::Result<Ensured, EnsureError> {
    let fail = |existed: bool| move |error: NetlinkError| EnsureError { existed, error };
    let nl = Netlink::open().map_err(fail(true))?;
    if let Some(idx) = nl.link_index(name).map_err(fail(true))? {
        for ip in ips {
            match nl.add_addr(idx, *ip) {
                Ok(()) | Err(NetlinkError::Errno(Errno::EEXIST)) => {}
                Err(e) => return Err(fail(true)(e)),
            }
        }
        return Ok(Ensured::Existed);
    }
    create(&nl, name, ips).map_err(fail(false))
}

fn create(nl: &Netlink, name: &str, ips: &[IpAddr]) -> Result<Ensured> {
    let how = match nl.add_link(name, "dummy") {
        Ok(()) => Ensured::CreatedDummy,
        Err(NetlinkError::Errno(e @ (Errno::EOPNOTSUPP | Errno::EINVAL))) => {
            nl.add_link(name, "bridge")?;
            Ensured::CreatedBridge(e.desc().to_string())
        }
        Err(e) => return Err(e),
    };
    let idx = nl
        .link_index(name)?
        .ok_or_else(|| NetlinkError::Protocol(format!("link {name} vanished after creation")))?;
    for ip in ips {
        match nl.add_addr(idx, *ip) {
            Ok(()) | Err(NetlinkError::Errno(Errno::EEXIST)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(how)
}

/// Deletes link `name`; a missing link is not an error.
pub(crate) fn remove_device(name: &str) -> Result<()> {
    let nl = Netlink::open()?;
    match nl.del_link(name) {
        Ok(()) | Err(NetlinkError::Errno(Errno::ENODEV)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let mut m = Msg::new(RTM_GETLINK, NLM_F_ACK, &ifinfomsg(7, 0, 0));
        m.attr(IFLA_IFNAME, &name_attr("abc"));
        let b = m.finish();
        // 16 header + 16 ifinfomsg + 4 attr header + "abc\0"
        assert_eq!(b.len(), 40);
        assert_eq!(u32_at(&b, 0), Some(40));
        assert_eq!(u16_at(&b, 4), Some(RTM_GETLINK));
        assert_eq!(u16_at(&b, 6), Some(NLM_F_ACK | NLM_F_REQUEST));
        assert_eq!(u32_at(&b, 20), Some(7));
        assert_eq!(u16_at(&b, 32), Some(8));
        assert_eq!(u16_at(&b, 34), Some(IFLA_IFNAME));
        assert_eq!(&b[36..40], b"abc\0");
    }

    #[test]
    fn attributes_are_padded() {
        let mut m = Msg { buf: Vec::new() };
        m.attr(IFLA_INFO_KIND, b"dummy");
        assert_eq!(m.buf.len(), 12);
        assert_eq!(u16_at(&m.buf, 0), Some(9));
    }
}
