//! The DNS server: configuration generations, listeners, routing and the process runtime.

pub(crate) mod config;
pub(crate) mod http;
pub(crate) mod invalidate;
pub(crate) mod lifecycle;
pub(crate) mod listen;
mod mmsg;
pub(crate) mod runtime;
pub(crate) mod site;
pub(crate) mod wstack;
