//! The replies of a UDP socket's waiting queries (forwarded ones, mostly) handed back to the
//! socket's reader thread while it is busy, so that they go out with its next `sendmmsg`
//! instead of one `sendto` each from the runtime.
//!
//! Why: on loopback and on a node, sending a datagram to a client that sleeps in `recv` wakes
//! it from inside the send, on the sender's CPU (an inter-processor interrupt, costly in a VM).
//! One `sendmmsg` wakes a client once for the whole batch; a `sendto` per forwarded reply woke
//! it once per reply. In the overload benchmark at 1× capacity, where the client is idle often
//! enough, those wake-ups took a tenth of the server's CPU and most of them came from the
//! runtime's single sends.
//!
//! The protocol: the reader marks itself busy from the moment a `recvmmsg` returns datagrams
//! until it is about to wait for more; it takes what was handed over before each `sendmmsg`,
//! and once more right after it stops being busy. A task hands its reply over only while the
//! reader is busy, and looks again after: if the reader stopped being busy meanwhile, the task
//! takes everything back and sends it itself. So no reply waits for a reader that is blocked in
//! `recvmmsg` (or gone): it is sent by whichever of the two comes last.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What a task does with its reply after offering it ([`Outbox::offer`]).
#[derive(Debug, PartialEq)]
pub(crate) enum Offer {
    /// The reader sends it.
    Taken,
    /// The reader is not busy: the task sends its own reply.
    Yours(Vec<u8>, SocketAddr),
    /// The reader went idle while the reply was handed over: the task sends everything that
    /// was handed over (its own reply among it).
    All(Vec<(Vec<u8>, SocketAddr)>),
}

/// Replies waiting for the reader's next send.
pub(crate) struct Outbox {
    busy: AtomicBool,
    queue: Mutex<Vec<(Vec<u8>, SocketAddr)>>,
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        Outbox {
            busy: AtomicBool::new(false),
            queue: Mutex::new(Vec::new()),
        }
    }

    /// The reader got datagrams and will send replies.
    pub(crate) fn set_busy(&self) {
        self.busy.store(true, Ordering::SeqCst);
    }

    /// The reader is about to wait (or stop): from now on tasks send their own replies. Returns
    /// what was handed over before, for the reader to send now.
    pub(crate) fn set_idle(&self) -> Vec<(Vec<u8>, SocketAddr)> {
        self.busy.store(false, Ordering::SeqCst);
        self.take()
    }

    /// Moves what was handed over onto the end of `out` (the reader, before it sends).
    pub(crate) fn drain_into(&self, out: &mut Vec<(Vec<u8>, SocketAddr)>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        out.append(&mut q);
    }

    fn take(&self) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *q)
    }

    /// A task's reply: handed to the reader if it is busy; [`Offer`] says what the task must
    /// send itself.
    pub(crate) fn offer(&self, reply: Vec<u8>, dst: SocketAddr) -> Offer {
        if !self.busy.load(Ordering::SeqCst) {
            return Offer::Yours(reply, dst);
        }
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((reply, dst));
        // The reader takes the queue after it marks itself idle; if it did so before our push,
        // it saw an empty queue and we see idle here.
        if self.busy.load(Ordering::SeqCst) {
            return Offer::Taken;
        }
        Offer::All(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn dst(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// What the task sends itself, as a list.
    fn offer(o: &Outbox, reply: Vec<u8>, dst: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
        match o.offer(reply, dst) {
            Offer::Taken => Vec::new(),
            Offer::Yours(reply, dst) => vec![(reply, dst)],
            Offer::All(all) => all,
        }
    }

    #[test]
    fn an_idle_reader_leaves_the_reply_to_the_task() {
        let o = Outbox::new();
        assert_eq!(offer(&o, vec![1], dst(1)), vec![(vec![1], dst(1))]);
        let mut out = Vec::new();
        o.drain_into(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_busy_reader_takes_the_replies_before_it_sends_and_when_it_goes_idle() {
        let o = Outbox::new();
        o.set_busy();
        assert!(offer(&o, vec![1], dst(1)).is_empty());
        assert!(offer(&o, vec![2], dst(2)).is_empty());
        let mut out = vec![(vec![0], dst(9))];
        o.drain_into(&mut out);
        assert_eq!(
            out,
            vec![(vec![0], dst(9)), (vec![1], dst(1)), (vec![2], dst(2))]
        );
        assert!(offer(&o, vec![3], dst(3)).is_empty());
        assert_eq!(o.set_idle(), vec![(vec![3], dst(3))]);
        assert_eq!(offer(&o, vec![4], dst(4)), vec![(vec![4], dst(4))]);
    }

    #[test]
    fn no_reply_is_lost_or_sent_twice_when_the_reader_goes_idle_meanwhile() {
        // Tasks offer while the reader flips between busy and idle a few times and then goes
        // idle for good (blocked in recvmmsg, or stopped): every reply comes out exactly once,
        // from one side or the other, and none is left behind in the queue. Many short rounds,
        // so that the last flip often falls in the middle of an offer.
        const ROUNDS: usize = 2_000;
        const TASKS: usize = 2;
        const EACH: usize = 40;
        for _ in 0..ROUNDS {
            let o = Arc::new(Outbox::new());
            let start = Arc::new(std::sync::Barrier::new(TASKS + 1));
            let offered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            // The reader flips until half the replies were offered, then goes idle for good.
            let reader = {
                let (o, start, offered) = (o.clone(), start.clone(), offered.clone());
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    start.wait();
                    while offered.load(Ordering::SeqCst) < TASKS * EACH / 2 {
                        o.set_busy();
                        o.drain_into(&mut got);
                        got.extend(o.set_idle());
                    }
                    got
                })
            };
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let (o, start, offered) = (o.clone(), start.clone(), offered.clone());
                    std::thread::spawn(move || {
                        let mut sent = Vec::new();
                        start.wait();
                        for i in 0..EACH {
                            let id = ((t * EACH + i) as u32).to_be_bytes().to_vec();
                            sent.extend(offer(&o, id, dst(1)));
                            offered.fetch_add(1, Ordering::SeqCst);
                        }
                        sent
                    })
                })
                .collect();
            let mut all: Vec<u32> = Vec::new();
            let mut collect = |v: Vec<(Vec<u8>, SocketAddr)>| {
                for (b, _) in v {
                    all.push(u32::from_be_bytes(b.try_into().unwrap()));
                }
            };
            for t in tasks {
                collect(t.join().unwrap());
            }
            collect(reader.join().unwrap());
            let mut left = Vec::new();
            o.drain_into(&mut left);
            assert!(left.is_empty(), "left behind for an idle reader: {left:?}");
            all.sort_unstable();
            let want: Vec<u32> = (0..(TASKS * EACH) as u32).collect();
            assert!(all == want, "a reply was lost or sent twice: {all:?}");
        }
    }
}
