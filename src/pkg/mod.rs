//! Helpers shared by plugins (CoreDNS's `plugin/pkg`).

pub(crate) mod authority;
