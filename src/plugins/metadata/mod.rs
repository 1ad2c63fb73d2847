//! The `metadata` plugin: gives each request of its block a metadata map
//! ([`crate::plugin::Metadata`]) and fills it from the block's providers
//! ([`crate::plugin::MetadataProvider`]) before the chain runs, for the zones it is enabled for.

use std::sync::{Arc, OnceLock};

use sextant_corefile::{Directive, Error};
use sextant_wire::Name;

use crate::plugin::{
    BoxFuture, Handler, Metadata as Map, MetadataCollector, Next, Outcome, Request, SetupCtx,
};

/// The collector of one block.
pub(crate) struct Metadata {
    zones: Vec<Name>,
    /// The block's providers, found once every plugin of the block is set up.
    providers: OnceLock<Vec<Arc<dyn Handler>>>,
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    if let Some(sub) = d.sub().first() {
        return Err(sub.err(format!("unexpected token '{}'", sub.name.text)));
    }
    let zones = crate::pkg::zones::from_args(d, &d.args, &ctx.block.zones)?;
    let m = Arc::new(Metadata {
        zones,
        providers: OnceLock::new(),
    });
    let m2 = m.clone();
    ctx.link(d, move |chain| {
        let found = chain
            .iter()
            .filter(|h| h.metadata_provider().is_some())
            .cloned()
            .collect();
        let _ = m2.providers.set(found);
        Ok(())
    });
    ctx.add_handler(m);
    Ok(())
}

impl MetadataCollector for Metadata {
    fn collect(&self, req: &mut Request) {
        let mut md = Box::<Map>::default();
        let qname = req.qname();
        if self.zones.iter().any(|z| qname.is_subdomain_of(z)) {
            for p in self.providers.get().map(Vec::as_slice).unwrap_or_default() {
                if let Some(p) = p.metadata_provider() {
                    p.metadata(req, &mut md);
                }
            }
        }
        req.meta = Some(md);
    }
}

impl Handler for Metadata {
    fn name(&self) -> &'static str {
        "metadata"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        if req.meta.is_none() {
            self.collect(req);
        }
        next.run(req)
    }

    fn metadata_collector(&self) -> Option<&dyn MetadataCollector> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::MetadataProvider;
    use sextant_wire::{Message, RType};

    struct P;
    impl MetadataProvider for P {
        fn metadata(&self, req: &Request, md: &mut Map) {
            md.set("test/name", req.qname().to_string());
        }
    }
    struct H;
    impl Handler for H {
        fn name(&self) -> &'static str {
            "h"
        }
        fn serve<'a>(&'a self, req: &'a mut Request, _n: Next<'a>) -> BoxFuture<'a, Outcome> {
            let v = req.meta("test/name").unwrap_or("-").to_string();
            req.set_meta("test/seen", || v);
            Box::pin(async { Outcome::rcode("h", sextant_wire::Rcode::NOERROR) })
        }
        fn metadata_provider(&self) -> Option<&dyn MetadataProvider> {
            Some(&P)
        }
    }

    fn run(zone: &str, qname: &str) -> Request {
        let m = Metadata {
            zones: vec![Name::parse(zone).unwrap()],
            providers: OnceLock::new(),
        };
        let chain: Vec<Arc<dyn Handler>> = vec![Arc::new(H)];
        let _ = m.providers.set(chain.clone());
        let q = Message::query(1, Name::parse(qname).unwrap(), RType::A);
        let mut req = Request::new(q, "127.0.0.1:5".parse().unwrap(), crate::plugin::Proto::Udp);
        futures_lite(m.serve(&mut req, Next::new(&chain)));
        req
    }

    fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn providers_fill_the_map_for_the_zones_only() {
        let req = run("example.org.", "a.example.org.");
        assert_eq!(req.meta("test/name"), Some("a.example.org."));
        assert_eq!(req.meta("test/seen"), Some("a.example.org."));
        // Outside the zones: the map exists (later plugins may set labels), providers not asked.
        let req = run("example.org.", "a.example.com.");
        assert_eq!(req.meta("test/name"), None);
        assert_eq!(req.meta("test/seen"), Some("-"));
    }

    #[test]
    fn without_the_plugin_nothing_is_stored() {
        let q = Message::query(1, Name::parse("a.").unwrap(), RType::A);
        let mut req = Request::new(q, "127.0.0.1:5".parse().unwrap(), crate::plugin::Proto::Udp);
        req.set_meta("x/y", || unreachable!("not called without metadata"));
        assert!(!req.meta_enabled() && req.meta("x/y").is_none());
    }
}
