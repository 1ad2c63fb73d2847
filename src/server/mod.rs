//! The DNS server: configuration generations, listeners, routing and the process runtime.

pub(crate) mod backlog;
pub(crate) mod config;
pub(crate) mod doh;
mod doh_h2;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod invalidate;
pub(crate) mod lifecycle;
pub(crate) mod listen;
mod mmsg;
mod outbox;
pub(crate) mod proxy;
pub(crate) mod quic;
pub(crate) mod runtime;
pub(crate) mod site;
pub(crate) mod stream;
pub(crate) mod transport;
pub(crate) mod wstack;
