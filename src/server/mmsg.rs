//! Batched UDP I/O for the listeners: `recvmmsg` fills up to [`BATCH`] datagrams in one system
//! call and `sendmmsg` sends the replies ready by then in one more, and each datagram's kernel
//! receive time (`SO_TIMESTAMPNS`) is read from its control message. Only the FFI and its buffers
//! live here; what to answer is `listen`'s business.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams read per system call.
pub(super) const BATCH: usize = 32;
/// Largest datagram (a UDP payload can be no larger).
const SLOT: usize = 65535;
/// Control-message room per datagram, in u64 words (aligned for `cmsghdr`): one
/// `SCM_TIMESTAMPNS` (a header and a timespec, 32 bytes) with room to spare.
const CTRL_WORDS: usize = 8;
/// `SO_TIMESTAMPNS` (= `SCM_TIMESTAMPNS`), asm-generic's value (x86, arm, riscv; the 64-bit
/// timespec on 64-bit targets): the libc crate does not export it for linux-gnu.
const SO_TIMESTAMPNS: libc::c_int = 35;

/// Receive buffers for one socket: [`BATCH`] full-size slots (allocated zeroed, so untouched
/// pages cost no memory) and the headers the kernel fills.
pub(super) struct RecvBatch {
    buf: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    ctrl: Vec<u64>,
}

// SAFETY: the raw pointers inside point into the batch's own vectors, which never move after
// `new`; the batch is used by one thread at a time, so sending it to another thread is sound.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub(super) fn new() -> RecvBatch {
        let mut b = RecvBatch {
            buf: vec![0u8; SLOT * BATCH],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addrs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
            ctrl: vec![0u64; CTRL_WORDS * BATCH],
        };
        for i in 0..BATCH {
            b.iovs.push(libc::iovec {
                iov_base: b.buf[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            });
        }
        for i in 0..BATCH {
            // SAFETY: msghdr is plain old data; zero is "no control data, no flags".
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = b.ctrl[i * CTRL_WORDS..].as_mut_ptr().cast();
            b.hdrs.push(h);
        }
        b
    }

    /// Waits for at least one datagram (up to the socket's receive timeout, then `WouldBlock`)
    /// and reads up to [`BATCH`] of those queued, in one system call.
    pub(super) fn recv_wait(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv(fd, libc::MSG_WAITFORONE)
    }

    /// Reads up to [`BATCH`] of the datagrams already queued without waiting (`WouldBlock` when
    /// the queue is empty): how a stopping listener drains its socket.
    pub(super) fn recv_queued(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv(fd, libc::MSG_DONTWAIT)
    }

    fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_flags = 0;
            h.msg_hdr.msg_controllen = CTRL_WORDS * 8;
            h.msg_len = 0;
        }
        // SAFETY: every header points at its own address slot and iovec, which point into
        // `self.buf`; all live as long as `self`, and the kernel writes within the given lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last [`RecvBatch::recv_wait`]: its bytes and sender. None for a datagram
    /// that was cut (larger than a slot, impossible for UDP) or from an unknown address family.
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let h = self.hdrs.get(i)?;
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (h.msg_len as usize).min(SLOT);
        let data = &self.buf[i * SLOT..i * SLOT + len];
        Some((data, from_storage(&self.addrs[i])?))
    }

    /// When the kernel received datagram `i` of the last read (wall clock, as `SO_TIMESTAMPNS`
    /// gives it), or None when the socket does not ask for timestamps.
    pub(super) fn received_at(&self, i: usize) -> Option<std::time::SystemTime> {
        let h = self.hdrs.get(i)?;
        if h.msg_hdr.msg_controllen == 0 || h.msg_hdr.msg_flags & libc::MSG_CTRUNC != 0 {
            return None;
        }
        // SAFETY: the header's control pointer and the length the kernel wrote describe this
        // datagram's slot of `self.ctrl` (CTRL_WORDS words, never shorter than msg_controllen);
        // CMSG_FIRSTHDR/NXTHDR stay within msg_control..msg_control+msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET
                    && (*c).cmsg_type == SO_TIMESTAMPNS
                    && (*c).cmsg_len as usize
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as u32) as usize
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    let secs = u64::try_from(ts.tv_sec).ok()?;
                    let nanos = u32::try_from(ts.tv_nsec).ok()?;
                    return std::time::UNIX_EPOCH
                        .checked_add(std::time::Duration::new(secs, nanos));
                }
                c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
            }
        }
        None
    }
}

/// Asks the kernel to stamp each datagram `fd` receives with its receive time
/// (`SO_TIMESTAMPNS`), read back with [`RecvBatch::received_at`].
pub(super) fn enable_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` lives for the call and its size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(a: &SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: plain old data, zero is valid.
    let mut s: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let p = unsafe {
                &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            p.sin_family = libc::AF_INET as libc::sa_family_t;
            p.sin_port = v4.port().to_be();
            p.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let p = unsafe {
                &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            p.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            p.sin6_port = v6.port().to_be();
            p.sin6_addr.s6_addr = v6.ip().octets();
            p.sin6_flowinfo = v6.flowinfo();
            p.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as u32)
}

/// Sends one datagram without blocking (`WouldBlock` when the socket buffer is full).
pub(super) fn send_one(fd: RawFd, bytes: &[u8], dst: &SocketAddr) -> io::Result<()> {
    let (addr, len) = to_storage(dst);
    // SAFETY: `bytes` and `addr` are valid for the call; the kernel only reads them.
    let n = unsafe {
        libc::sendto(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT,
            (&addr as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `out` (reply, destination) with `sendmmsg`, as many as the socket takes without
/// blocking. Returns how many went out (the caller sends the rest another way), or the error of
/// the first that could not.
pub(super) fn send(fd: RawFd, out: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    let n = out.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let mut addrs: [MaybeUninit<(libc::sockaddr_storage, u32)>; BATCH] =
        [const { MaybeUninit::uninit() }; BATCH];
    let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    // SAFETY: plain old data, zero is valid.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    for (i, (bytes, dst)) in out.iter().take(n).enumerate() {
        let a = addrs[i].write(to_storage(dst));
        let iov = iovs[i].write(libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        });
        hdrs[i].msg_hdr.msg_name = (&mut a.0 as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = a.1;
        hdrs[i].msg_hdr.msg_iov = iov;
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first n headers point at initialised addresses and iovecs on this stack
    // frame and at the reply buffers in `out`, all alive for the call; the kernel only reads
    // them (and writes msg_len).
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Waits up to `timeout` for room to send on `fd`; true if there is.
pub(super) fn wait_writable(fd: RawFd, timeout: std::time::Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one pollfd on this stack frame, alive for the call; the kernel writes revents.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents & libc::POLLOUT != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_in_and_out() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let to = server.local_addr().unwrap();
        let mut b = RecvBatch::new();
        assert_eq!(
            b.recv_wait(server.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..5u8 {
            client.send_to(&[i; 3], to).unwrap();
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 5 && std::time::Instant::now() < deadline {
            match b.recv_wait(server.as_raw_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from) = b.get(i).unwrap();
                        assert_eq!(from, client.local_addr().unwrap());
                        got.push(d.to_vec());
                    }
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
        let replies: Vec<(Vec<u8>, SocketAddr)> = got
            .iter()
            .map(|d| {
                (
                    d.iter().map(|x| x + 100).collect(),
                    client.local_addr().unwrap(),
                )
            })
            .collect();
        assert_eq!(send(server.as_raw_fd(), &replies).unwrap(), 5);
        let mut buf = [0u8; 16];
        for i in 0..5u8 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&[i + 100; 3][..], to));
        }
        // Without SO_TIMESTAMPNS there is no receive time.
        assert_eq!(b.received_at(0), None);
    }

    #[test]
    fn a_timestamped_socket_reports_when_each_datagram_arrived() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        enable_timestamps(server.as_raw_fd()).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = std::time::SystemTime::now();
        client
            .send_to(b"one", server.local_addr().unwrap())
            .unwrap();
        client
            .send_to(b"two", server.local_addr().unwrap())
            .unwrap();
        let mut b = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < 2 {
            let n = b.recv_wait(server.as_raw_fd()).unwrap();
            for i in 0..n {
                got.push((b.get(i).unwrap().0.to_vec(), b.received_at(i).unwrap()));
            }
        }
        let after = std::time::SystemTime::now();
        assert_eq!(got[0].0, b"one");
        assert_eq!(got[1].0, b"two");
        for (_, at) in &got {
            assert!(
                *at >= before - std::time::Duration::from_millis(1) && *at <= after,
                "{at:?}"
            );
        }
        assert!(got[0].1 <= got[1].1);
    }
}
