//! The plugin toolkit (CoreDNS's `plugin/pkg`): the helpers every plugin setup, the command line
//! and node-cache share, one module per job, so no job is written twice.
//!
//! | module | job |
//! |---|---|
//! | [`zones`] | zones from directive arguments or the server block (CIDRs → reverse zones) |
//! | [`fallthrough`] | `fallthrough [ZONES...]` and whether a name falls through |
//! | [`cidr`] | CIDR arguments ([`sextant_wire::IpNet`]) |
//! | [`addr`] | `IP[:PORT]` arguments and the HTTP `[ADDRESS]` argument |
//! | [`tls`] | rustls client and server configurations from PEM files |
//! | [`duration`] | Go durations: parse and print |
//! | [`num`] | numeric arguments (Go `strconv.Atoi`, counts, sizes in bytes) |
//! | [`flags`] | command-line flags with Go's `flag` rules |
//! | [`clock`] | the one clock: time that decides behaviour, manual in tests |
//! | [`authority`] | serving a zone's data: answers, referrals, negative answers with SOA |
//! | [`shardcache`] | the bounded 256-shard map with random eviction (CoreDNS `plugin/pkg/cache`) |
//! | [`keyfile`] | DNSSEC key pairs from BIND key files (`key file`) |
//! | [`proxyproto`] | the PROXY protocol v1/v2 header decoder (streams and datagrams) |
//! | [`tsig`] | TSIG secrets, checking signed requests, signing replies (HMAC by `ring`) |
//!
//! Reverse names (address ↔ `in-addr.arpa.`/`ip6.arpa.` name) are methods of
//! [`sextant_wire::Name`].

pub(crate) mod addr;
pub(crate) mod authority;
pub(crate) mod cidr;
pub(crate) mod clock;
pub(crate) mod duration;
pub(crate) mod fallthrough;
pub(crate) mod flags;
pub(crate) mod keyfile;
pub(crate) mod num;
pub(crate) mod proxyproto;
pub(crate) mod shardcache;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod tls;
pub(crate) mod tsig;
pub(crate) mod zones;
