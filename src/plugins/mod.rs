//! The compiled-in plugins and their execution order (CoreDNS 1.14.7 `plugin.cfg` order for the
//! plugins Sextant has). Adding a plugin: one folder here and one line in [`ORDER`].

use crate::plugin::PluginDef;

pub(crate) mod acl;
pub(crate) mod any;
pub(crate) mod auto;
pub(crate) mod autopath;
pub(crate) mod bind;
pub(crate) mod bufsize;
pub(crate) mod cache;
pub(crate) mod cancel;
pub(crate) mod chaos;
pub(crate) mod debug;
pub(crate) mod dns64;
pub(crate) mod dnssec;
pub(crate) mod dnstap;
pub(crate) mod erratic;
pub(crate) mod errors;
pub(crate) mod etcd;
pub(crate) mod file;
pub(crate) mod forward;
pub(crate) mod geoip;
pub(crate) mod grpc;
pub(crate) mod grpc_server;
pub(crate) mod header;
pub(crate) mod health;
pub(crate) mod hosts;
pub(crate) mod https;
pub(crate) mod https3;
pub(crate) mod k8s_external;
pub(crate) mod kubernetes;
pub(crate) mod loadbalance;
pub(crate) mod local;
pub(crate) mod log;
pub(crate) mod r#loop;
pub(crate) mod metadata;
pub(crate) mod minimal;
pub(crate) mod multisocket;
pub(crate) mod nsid;
pub(crate) mod pprof;
pub(crate) mod prometheus;
pub(crate) mod proxyproto;
pub(crate) mod quic;
pub(crate) mod ready;
pub(crate) mod reload;
pub(crate) mod rewrite;
pub(crate) mod root;
pub(crate) mod secondary;
pub(crate) mod shed;
pub(crate) mod sign;
pub(crate) mod template;
pub(crate) mod timeouts;
pub(crate) mod tls;
pub(crate) mod trace;
pub(crate) mod transfer;
pub(crate) mod tsig;
pub(crate) mod view;
pub(crate) mod whoami;

/// Execution order, whatever the order in the Corefile.
#[rustfmt::skip]
pub(crate) static ORDER: &[PluginDef] = &[
    PluginDef { name: "root", once: false, setup: root::setup },
    PluginDef { name: "metadata", once: true, setup: metadata::setup },
    PluginDef { name: "geoip", once: false, setup: geoip::setup },
    PluginDef { name: "cancel", once: false, setup: cancel::setup },
    PluginDef { name: "proxyproto", once: false, setup: proxyproto::setup },
    PluginDef { name: "quic", once: true, setup: quic::setup },
    PluginDef { name: "grpc_server", once: true, setup: grpc_server::setup },
    PluginDef { name: "https", once: true, setup: https::setup },
    PluginDef { name: "https3", once: true, setup: https3::setup },
    PluginDef { name: "timeouts", once: true, setup: timeouts::setup },
    PluginDef { name: "multisocket", once: true, setup: multisocket::setup },
    PluginDef { name: "reload", once: true, setup: reload::setup },
    PluginDef { name: "nsid", once: true, setup: nsid::setup },
    PluginDef { name: "bufsize", once: false, setup: bufsize::setup },
    PluginDef { name: "bind", once: false, setup: bind::setup },
    PluginDef { name: "debug", once: true, setup: debug::setup },
    PluginDef { name: "trace", once: false, setup: trace::setup },
    PluginDef { name: "ready", once: true, setup: ready::setup },
    PluginDef { name: "health", once: true, setup: health::setup },
    PluginDef { name: "pprof", once: true, setup: pprof::setup },
    PluginDef { name: "shed", once: true, setup: shed::setup },
    PluginDef { name: "prometheus", once: true, setup: prometheus::setup },
    PluginDef { name: "errors", once: true, setup: errors::setup },
    PluginDef { name: "log", once: false, setup: log::setup },
    PluginDef { name: "dnstap", once: false, setup: dnstap::setup },
    PluginDef { name: "local", once: false, setup: local::setup },
    PluginDef { name: "dns64", once: false, setup: dns64::setup },
    PluginDef { name: "any", once: true, setup: any::setup },
    PluginDef { name: "chaos", once: true, setup: chaos::setup },
    PluginDef { name: "loadbalance", once: false, setup: loadbalance::setup },
    PluginDef { name: "tsig", once: true, setup: tsig::setup },
    PluginDef { name: "rewrite", once: false, setup: rewrite::setup },
    PluginDef { name: "autopath", once: false, setup: autopath::setup },
    PluginDef { name: "acl", once: false, setup: acl::setup },
    PluginDef { name: "cache", once: true, setup: cache::setup },
    PluginDef { name: "header", once: false, setup: header::setup },
    PluginDef { name: "dnssec", once: true, setup: dnssec::setup },
    PluginDef { name: "tls", once: false, setup: tls::setup },
    PluginDef { name: "minimal", once: false, setup: minimal::setup },
    PluginDef { name: "template", once: false, setup: template::setup },
    PluginDef { name: "transfer", once: false, setup: transfer::setup },
    PluginDef { name: "hosts", once: true, setup: hosts::setup },
    PluginDef { name: "k8s_external", once: false, setup: k8s_external::setup },
    PluginDef { name: "kubernetes", once: true, setup: kubernetes::setup },
    PluginDef { name: "file", once: false, setup: file::setup },
    PluginDef { name: "auto", once: false, setup: auto::setup },
    PluginDef { name: "secondary", once: false, setup: secondary::setup },
    PluginDef { name: "etcd", once: true, setup: etcd::setup },
    PluginDef { name: "loop", once: true, setup: r#loop::setup },
    PluginDef { name: "forward", once: false, setup: forward::setup },
    PluginDef { name: "grpc", once: true, setup: grpc::setup },
    PluginDef { name: "erratic", once: false, setup: erratic::setup },
    PluginDef { name: "whoami", once: true, setup: whoami::setup },
    PluginDef { name: "sign", once: false, setup: sign::setup },
    PluginDef { name: "view", once: true, setup: view::setup },
];

/// CoreDNS plugins this build does not have yet: named in `-check` errors as such.
pub(crate) static PENDING: &[&str] = &[];
