//! The DNS server: configuration generations, listeners, routing and the process runtime.

pub mod config;
pub mod http;
pub mod invalidate;
pub mod listen;
mod mmsg;
pub mod runtime;
pub mod site;
