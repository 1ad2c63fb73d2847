//! The per-block cache invalidation bus: a data source in a server block (the `kubernetes`
//! plugin) announces the names whose answers changed, and the caches of the same block drop
//! what they hold for them before the publisher returns. No tasks, no I/O.
//!
//! # Contract
//!
//! * Both sides get the bus of their block with `ctx.invalidation()` during setup (the same `Arc`
//!   for every plugin of one block in one generation; a reload builds new buses).
//! * A cache calls [`InvalidationBus::subscribe`] with a `Weak` to itself. Subscribers are called
//!   synchronously, in the publisher's task, so they must be quick and must not block on I/O.
//! * A publisher calls [`InvalidationBus::publish`] **after** its new data is visible to queries
//!   (e.g. after swapping in the new index snapshot). `publish` first bumps [`InvalidationBus::seq`]
//!   and then calls every subscriber. A cache reads `seq` before it sends a query down the chain
//!   and does not store the answer if `seq` moved meanwhile; together this means no answer
//!   computed from data older than a publish is served from a cache after that publish returns.
//! * What to publish for a Kubernetes change (zone `Z`): for a changed Service `svc` in `ns`,
//!   `subtrees: [svc.ns.svc.Z]` (covers endpoints and `_port._proto.svc.ns.svc.Z` SRV names);
//!   for a changed namespace or Service, `negative_subtrees: [ns.svc.Z]`; for changed addresses,
//!   `names: [<reverse name of each IP>]`; for a full re-list, `all: true`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, Weak};

use sextant_wire::Name;

/// Names whose cached answers are no longer true.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Invalidation {
    /// Drop every cached answer (positive and negative, any type) for these names and every
    /// name below them.
    pub subtrees: Vec<Name>,
    /// Drop every cached answer (any type) for exactly these names.
    pub names: Vec<Name>,
    /// Drop negative answers (NXDOMAIN, NODATA, cached SERVFAIL) for these names and every name
    /// below them; positive answers stay.
    pub negative_subtrees: Vec<Name>,
    /// Drop everything.
    pub all: bool,
}

impl Invalidation {
    /// True when it drops nothing.
    pub(crate) fn is_empty(&self) -> bool {
        !self.all
            && self.subtrees.is_empty()
            && self.names.is_empty()
            && self.negative_subtrees.is_empty()
    }
}

/// Something that holds answers and can forget them (a cache).
pub(crate) trait Invalidate: Send + Sync {
    fn invalidate(&self, inv: &Invalidation);
}

/// One block's bus. See the module docs for the contract.
#[derive(Default)]
pub(crate) struct InvalidationBus {
    seq: AtomicU64,
    subs: RwLock<Vec<Weak<dyn Invalidate>>>,
}

impl InvalidationBus {
    /// Registers a subscriber; it is dropped from the list once the `Weak` is dead.
    pub(crate) fn subscribe(&self, sub: Weak<dyn Invalidate>) {
        if let Ok(mut s) = self.subs.write() {
            s.retain(|w| w.strong_count() > 0);
            s.push(sub);
        }
    }

    /// Bumps the sequence number, then has every live subscriber drop what `inv` names.
    pub(crate) fn publish(&self, inv: &Invalidation) {
        if inv.is_empty() {
            return;
        }
        self.seq.fetch_add(1, Ordering::SeqCst);
        let subs: Vec<_> = match self.subs.read() {
            Ok(s) => s.iter().filter_map(Weak::upgrade).collect(),
            Err(_) => return,
        };
        for s in subs {
            s.invalidate(inv);
        }
    }

    /// How many publishes happened so far.
    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Number of live subscribers.
    #[cfg(test)]
    pub(crate) fn subscribers(&self) -> usize {
        self.subs
            .read()
            .map(|s| s.iter().filter(|w| w.strong_count() > 0).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Rec(Mutex<Vec<Invalidation>>);

    impl Invalidate for Rec {
        fn invalidate(&self, inv: &Invalidation) {
            self.0.lock().unwrap().push(inv.clone());
        }
    }

    #[test]
    fn publish_reaches_live_subscribers_and_bumps_seq() {
        let bus = InvalidationBus::default();
        let a = Arc::new(Rec(Mutex::new(Vec::new())));
        let weak: Weak<dyn Invalidate> = Arc::downgrade(&(a.clone() as Arc<dyn Invalidate>));
        bus.subscribe(weak);
        assert_eq!(bus.seq(), 0);
        bus.publish(&Invalidation::default());
        assert_eq!(bus.seq(), 0, "an empty invalidation is not published");
        let inv = Invalidation {
            names: vec![Name::parse("1.0.0.10.in-addr.arpa.").unwrap()],
            ..Invalidation::default()
        };
        bus.publish(&inv);
        assert_eq!(bus.seq(), 1);
        assert_eq!(a.0.lock().unwrap().as_slice(), std::slice::from_ref(&inv));
        assert_eq!(bus.subscribers(), 1);
        drop(a);
        assert_eq!(bus.subscribers(), 0);
        bus.publish(&inv);
        assert_eq!(bus.seq(), 2);
    }
}
