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
/// The port is released before returning, so another process could in theory grab it; in
/// practice the kernel hands out ephemeral ports round-robin, so this is reliable for tests.
///
/// # Panics
/// If no such port is found after 1000 attempts (the machine is out of ports).
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(port) = udp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        let Ok(mut set) = handed_out().lock() else {
            continue;
        };
        if set.insert(port) {
            return port;
        }
    }
    panic!("sextant-testkit: no free UDP+TCP port on 127.0.0.1 after 1000 attempts");
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
    }
}
