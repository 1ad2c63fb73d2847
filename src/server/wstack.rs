//! The bounded write stack of a UDP socket (the `shed` plugin's write discipline): replies
//! are pushed onto a stack of fixed depth that evicts its oldest entry when full, and one writer
//! thread per socket sends the newest first, so under overload the socket's capacity goes to
//! the freshest answers and a full stack tells the chain to drop new queries early.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Entries a stack holds (CoreDNS: 1024, a burst budget rather than a setting).
pub(crate) const DEPTH: usize = 1024;

/// Called with the listener's metric label for every reply that is dropped (evicted, refused
/// after the stack closed, or refused by the kernel).
#[derive(Clone, Copy)]
pub(crate) struct DropHook(pub(crate) fn(&str));

impl PartialEq for DropHook {
    /// Every hook counts the same drops: comparing listener options ignores which.
    fn eq(&self, _: &DropHook) -> bool {
        true
    }
}

impl Eq for DropHook {}

impl std::fmt::Debug for DropHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DropHook")
    }
}

struct Ring {
    items: VecDeque<(Vec<u8>, SocketAddr)>,
    closed: bool,
}

/// One UDP socket's stack of replies waiting for its writer.
pub(crate) struct WriteStack {
    ring: Mutex<Ring>,
    ready: Condvar,
    len: AtomicUsize,
    /// Readers and pending tasks that may still push; the stack closes when none is left.
    producers: AtomicUsize,
    hook: DropHook,
    label: Arc<str>,
}

impl WriteStack {
    pub(crate) fn new(hook: DropHook, label: Arc<str>) -> Arc<WriteStack> {
        Arc::new(WriteStack {
            ring: Mutex::new(Ring {
                items: VecDeque::with_capacity(DEPTH),
                closed: false,
            }),
            ready: Condvar::new(),
            len: AtomicUsize::new(0),
            producers: AtomicUsize::new(0),
            hook,
            label,
        })
    }

    fn dropped(&self) {
        (self.hook.0)(&self.label);
    }

    /// True while the stack is full: the socket is not keeping up (a racy read, as a load
    /// shedding signal may be).
    pub(crate) fn full(&self) -> bool {
        self.len.load(Ordering::Relaxed) >= DEPTH
    }

    /// Pushes a reply as the newest entry, evicting the oldest when full; never blocks.
    pub(crate) fn push(&self, reply: Vec<u8>, dst: SocketAddr) {
        let Ok(mut r) = self.ring.lock() else {
            return;
        };
        if r.closed {
            drop(r);
            self.dropped();
            return;
        }
        let evicted = if r.items.len() >= DEPTH {
            r.items.pop_front();
            true
        } else {
            false
        };
        r.items.push_back((reply, dst));
        self.len.store(r.items.len(), Ordering::Relaxed);
        drop(r);
        self.ready.notify_one();
        if evicted {
            self.dropped();
        }
    }

    /// Takes up to `max` of the newest entries into `out` (newest first), waiting up to
    /// `wait` for one. False once the stack is closed and empty.
    fn pop_newest(&self, max: usize, out: &mut Vec<(Vec<u8>, SocketAddr)>, wait: Duration) -> bool {
        let Ok(mut r) = self.ring.lock() else {
            return false;
        };
        if r.items.is_empty() && !r.closed {
            r = match self.ready.wait_timeout(r, wait) {
                Ok((r, _)) => r,
                Err(_) => return false,
            };
        }
        while out.len() < max {
            match r.items.pop_back() {
                Some(x) => out.push(x),
                None => break,
            }
        }
        self.len.store(r.items.len(), Ordering::Relaxed);
        !(r.closed && r.items.is_empty() && out.is_empty())
    }
}

/// Keeps a stack open while it lives (a reader thread, a query still being answered).
pub(crate) struct Producer(Arc<WriteStack>);

impl Producer {
    pub(crate) fn new(s: &Arc<WriteStack>) -> Producer {
        s.producers.fetch_add(1, Ordering::AcqRel);
        Producer(s.clone())
    }

    pub(crate) fn stack(&self) -> &Arc<WriteStack> {
        &self.0
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if self.0.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut r) = self.0.ring.lock() {
                r.closed = true;
            }
            self.0.ready.notify_all();
        }
    }
}

/// The writer of one socket: sends the newest replies in batches until the stack is closed
/// and empty. A batch the socket has no room for is waited on briefly, then dropped (counted).
pub(crate) fn writer(fd: std::os::fd::RawFd, stack: Arc<WriteStack>) {
    let mut out = Vec::with_capacity(crate::server::mmsg::BATCH);
    while stack.pop_newest(
        crate::server::mmsg::BATCH,
        &mut out,
        Duration::from_millis(100),
    ) {
        let mut done = 0;
        while done < out.len() {
            match crate::server::mmsg::send(fd, &out[done..]) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !crate::server::mmsg::wait_writable(fd, Duration::from_millis(100)) {
                        break;
                    }
                }
                Err(_) => {
                    stack.dropped();
                    done += 1;
                }
            }
        }
        for _ in done..out.len() {
            stack.dropped();
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    static DROPS: AtomicU64 = AtomicU64::new(0);

    fn count(_: &str) {
        DROPS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn evicts_the_oldest_pops_the_newest_and_closes_with_its_last_producer() {
        let s = WriteStack::new(DropHook(count), Arc::from("dns://:53"));
        let p = Producer::new(&s);
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        for i in 0..DEPTH + 3 {
            s.push((i as u32).to_be_bytes().to_vec(), a);
        }
        assert!(s.full());
        assert_eq!(DROPS.load(Ordering::SeqCst), 3, "three oldest evicted");
        let mut out = Vec::new();
        assert!(s.pop_newest(2, &mut out, Duration::ZERO));
        let firsts: Vec<u32> = out
            .iter()
            .map(|(b, _)| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(firsts, vec![DEPTH as u32 + 2, DEPTH as u32 + 1]);
        assert!(!s.full());
        drop(p);
        out.clear();
        // Closed: what is left still comes out, then the end; later pushes are drops.
        assert!(s.pop_newest(usize::MAX, &mut out, Duration::ZERO));
        assert_eq!(out.len(), DEPTH - 2);
        out.clear();
        assert!(!s.pop_newest(1, &mut out, Duration::ZERO));
        s.push(vec![1], a);
        assert_eq!(DROPS.load(Ordering::SeqCst), 4);
    }
}
