//! DNS wire format for Sextant: names, records, whole messages (parse/encode with compression and
//! truncation), reverse mapping (CIDRs, `in-addr.arpa.`/`ip6.arpa.` names) and an in-place query
//! scanner for the hot path. No I/O, no allocation-free promises
//! outside `scan`.

#![forbid(unsafe_code)]

pub mod message;
pub mod name;
pub mod reply;
pub mod reverse;
pub mod rr;
pub mod scan;
pub mod tsig;
pub mod types;
pub mod typify;

pub use message::{
    opcode_supported, read_name, Edns, EdnsOption, Header, Message, ParseError, Question,
    HEADER_LEN,
};
pub use name::Name;
pub use reply::{Asked, ClientEdns, Encoded, Reply};
pub use reverse::{CidrError, IpNet};
pub use rr::{RData, Record, Soa, Srv};
pub use scan::{scan_query, OptView, QueryView, ScanError};
pub use types::{opcode, Class, RType, Rcode};

/// What can be wrong with wire data or a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message ends early")]
    ShortMessage,
    #[error("name runs past the end of the message")]
    NameTruncated,
    #[error("label longer than 63 octets")]
    LabelTooLong,
    #[error("name longer than 255 octets")]
    NameTooLong,
    #[error("empty label")]
    EmptyLabel,
    #[error("bad escape in name")]
    BadEscape,
    #[error("reserved label type")]
    BadLabelType,
    #[error("bad compression pointer")]
    BadPointer,
    #[error("record data does not match its length or type")]
    BadRdata,
    #[error("malformed EDNS option")]
    BadOption,
    #[error("more than one OPT record")]
    MultipleOpt,
    #[error("OPT record owner is not the root")]
    OptNotRoot,
    #[error("OPT record outside the additional section")]
    OptOutsideAdditional,
    #[error("trailing bytes after the message")]
    TrailingData,
}
