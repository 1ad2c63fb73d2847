//! Free loopback ports for tests: each port handed out is free for both UDP and TCP on
//! 127.0.0.1 when returned, and never handed out twice by this process. Owns no long-lived sockets.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static SET: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    SET.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port on 127.0.0.1 that is currently free for both UDP and TCP, and that this process
/// has not handed out before.
///
/// Ports come from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), at
/// random: the port is released before returning, and a port from the ephemeral range could be
/// given to some client socket (a test's resolver, an upstream exchange) before the server under
/// test binds it. Below the range only another explicit bind can take it.
///
/// # Panics
/// If no such port is found after 1000 attempts (the machine is out of ports).
pub fn free_port() -> u16 {
    let low = ephemeral_low();
    let mut state = seed();
    for _ in 0..1000 {
        // xorshift64: spread over [10000, low) without a dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let span = u64::from(low.saturating_sub(10_000).max(1));
        let Ok(port) = u16::try_from(10_000 + state % span) else {
            continue;
        };
        let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        drop(udp);
        let Ok(mut set) = handed_out().lock() else {
            continue;
        };
        if set.insert(port) {
            return port;
        }
    }
    panic!("sextant-testkit: no free UDP+TCP port on 127.0.0.1 after 1000 attempts");
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > 10_001)
        .unwrap_or(32_768)
}

/// A per-call seed: the clock, the process id and a counter, so that concurrent test
/// processes start from different places.
fn seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let s = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    if s == 0 {
        0x9E37_79B9_7F4A_7C15
    } else {
        s
    }
}

/// `n` distinct ports, each as from [`free_port`].
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| free_port()).collect()
}

/// `127.0.0.1:<free_port()>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_nonzero() {
        // Each port was bound for UDP and TCP when it was handed out; whether it is still free
        // later depends on every other process on the machine, so that is not asserted here.
        let ports = free_ports(20);
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), 20);
        assert!(ports.iter().all(|p| *p != 0));
        assert!(!set.contains(&free_port()), "never handed out twice");
        let low = ephemeral_low();
        assert!(
            ports.iter().all(|p| *p >= 10_000 && *p < low),
            "below the ephemeral range: {ports:?}"
        );
    }
}
