//! sextant-testkit: blocking helpers for Sextant's end-to-end tests — a process harness for
//! the `sextant` binary, a DNS client, a scripted upstream server, a fault-injecting proxy,
//! reference servers (Knot, Unbound) and network namespaces. Test-only: never linked into
//! the server. Every socket it opens is on loopback or inside a namespace it created.
//!
//! See `README.md` in this crate for examples.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod error;
mod ns;
mod ports;
mod process;
mod proxy;
mod refservers;
mod rng;
mod sched;
mod text;
mod upstream;

pub use client::{tcp, tcp_raw, udp, udp_from, udp_raw, AsWire, EdnsInfo, Query, Reply, TcpConn};
pub use error::{Error, Result};
pub use ns::{NetNs, Veth, IP};
pub use ports::{free_addr, free_port, free_ports};
pub use process::{coredns_bin, http_get, send_signal, wait_dns, Sextant, SextantBuilder, Stream};
pub use proxy::{FaultProxy, Faults, ProxyStats};
pub use refservers::{Knot, RefServer, Unbound, KNOTD, UNBOUND};
pub use rng::Rng;
pub use text::{parse_record, parse_records, rcode_name, record_to_string};
pub use upstream::{
    closed_port, records_handler, reply_to, Action, Handler, Proto, ReplyBuilder, Upstream,
    UpstreamRequest, UpstreamStats,
};

/// Re-export of the hickory-proto crate used as the DNS oracle.
pub use hickory_proto;
pub use hickory_proto::op::{Message, ResponseCode};
pub use hickory_proto::rr::{Record, RecordType};
/// Re-export of libc, for signal numbers (`sextant_testkit::libc::SIGTERM`).
pub use libc;
