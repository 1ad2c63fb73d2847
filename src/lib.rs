//! Sextant: a Kubernetes cluster DNS server that reads CoreDNS Corefiles.

pub mod cli;
pub mod log;
pub mod metrics;
pub mod nodecache;
pub mod plugin;
pub mod plugins;
pub mod server;
pub mod tracing_bridge;
