//! Zone data for Sextant: RFC 1035 master files parsed into records ([`parse_zone`]), the
//! in-memory zone ([`Zone`]) with the authoritative lookup of CoreDNS's `file` plugin
//! (delegations with glue, wildcards, CNAME chasing inside the zone, DNAME, NODATA/NXDOMAIN
//! with the SOA, DNSSEC records with DO), answers for the common case encoded straight to wire
//! form, and the records of a zone in transfer order. No network I/O; `$INCLUDE` reads through a
//! loader the caller passes.

#![forbid(unsafe_code)]

mod codec;
pub mod dnssec;
mod lexer;
mod loc;
mod parse;
mod rdata;
mod svcb;
mod types;
pub mod wire;
mod zone;

pub use codec::{base32hex_encode, base64_decode, base64_encode, hex_encode};
pub use parse::{parse_zone, ttl, IncludeLoader};
pub use rdata::type_bitmap;
pub use types::{rtype_from_name, rtype_name};
pub use zone::{serial_less, Builder, External, InsertError, Lookup, Res, Zone};

/// An error in a zone file, at `file:line:col`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {msg}")]
pub struct ZoneError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}
