//! The `autopath` plugin: walks the client's search path on the server and returns the first
//! answer that is not NXDOMAIN behind a CNAME from the asked name. The search path comes from a
//! resolv.conf file or from another plugin through [`SearchPath`] (`@kubernetes`).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use sextant_corefile::{Directive, Error};
use sextant_wire::{Message, Name, RData, Rcode, Record, Reply};

use crate::metrics::metrics;
use crate::pkg::zones;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

metrics! {
    SUCCESS: CounterVec("coredns_autopath_success_total", "Counter of requests that did autopath.", ["server"]);
}

/// A plugin that knows a client's search path (the `kubernetes` plugin, from the client pod's
/// namespace with `pods verified`). The list is in resolv.conf order, fully qualified, and ends
/// with the root name standing for the bare name. `qname` is the asked name (the provider picks
/// the zone it falls in, as CoreDNS's `AutoPath(state)` does). `None` (or an empty list) means:
/// don't autopath this query.
pub(crate) trait SearchPath: Send + Sync {
    fn search_path(&self, client: IpAddr, qname: &Name) -> Option<Vec<Name>>;
}

/// Filled once the block's chain is complete, with the named plugin's search path.
type Slot = Arc<OnceLock<Arc<dyn SearchPath>>>;

pub(crate) enum Source {
    /// resolv.conf search list, ending with the root (bare name).
    Static(Vec<Name>),
    Plugin(String, Slot),
}

pub(crate) struct AutoPath {
    zones: Vec<Name>,
    source: Source,
}

/// The `search` (or `domain`) list of a resolv.conf, as miekg/dns reads it.
pub(crate) fn parse_resolv(text: &str) -> Vec<String> {
    let mut search = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first().copied() {
            Some("search") => search = f[1..].iter().map(|s| s.to_string()).collect(),
            Some("domain") if f.len() > 1 => search = vec![f[1].to_string()],
            _ => {}
        }
    }
    search
}

pub(crate) fn parse(d: &Directive, block_zones: &[String]) -> Result<(Vec<Name>, Source), Error> {
    let Some((last, zone_args)) = d.args.split_last() else {
        return Err(d.err("no resolv-conf specified"));
    };
    let source = if let Some(p) = last.text.strip_prefix('@') {
        Source::Plugin(p.to_string(), Arc::new(OnceLock::new()))
    } else {
        let text = std::fs::read_to_string(&last.text)
            .map_err(|e| d.err_at(last, format!("failed to parse \"{}\": {e}", last.text)))?;
        let mut list = Vec::new();
        for s in parse_resolv(&text) {
            let mut n = Name::parse(&s).map_err(|e| {
                d.err_at(
                    last,
                    format!(
                        "failed to parse \"{}\": bad search domain {s}: {e}",
                        last.text
                    ),
                )
            })?;
            n.make_lowercase();
            list.push(n);
        }
        list.push(Name::root());
        Source::Static(list)
    };
    let zones = zones::from_args(d, zone_args, block_zones)?;
    Ok((zones, source))
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let mut last = None;
    for d in lines {
        last = Some(parse(d, &ctx.block.zones)?);
    }
    let Some((zones, source)) = last else {
        return Ok(());
    };
    if let Source::Plugin(p, slot) = &source {
        // Like CoreDNS, a block without that plugin (or one that knows no search path) leaves
        // autopath with nothing to do, which is not an error.
        let (p, slot) = (p.clone(), slot.clone());
        if let Some(d) = lines.last() {
            ctx.link(d, move |chain| {
                if let Some(sp) = chain
                    .iter()
                    .filter(|h| h.name() == p)
                    .find_map(|h| h.search_path())
                {
                    let _ = slot.set(sp);
                }
                Ok(())
            });
        }
    }
    ctx.add_handler(Arc::new(AutoPath { zones, source }));
    Ok(())
}

/// CoreDNS's `cnamer`: a CNAME from the asked name to the owner of the first answer record with
/// another name, put first, with that record's TTL.
pub(crate) fn cnamer(m: &mut Message, original: &Name) {
    if let Some(a) = m.answers.iter().find(|a| a.name != *original) {
        let c = Record::new(original.clone(), a.ttl, RData::Cname(a.name.clone()));
        m.answers.insert(0, c);
    }
    if let Some(q) = m.questions.first_mut() {
        q.name = original.clone();
    }
}

fn join(base: &[&[u8]], suffix: &Name) -> Option<Name> {
    let mut n = suffix.clone();
    for l in base.iter().rev() {
        n = n.prepend(l).ok()?;
    }
    Some(n)
}

impl AutoPath {
    fn search(&self, client: IpAddr, qname: &Name) -> Vec<Name> {
        match &self.source {
            Source::Static(v) => v.clone(),
            Source::Plugin(_, slot) => slot
                .get()
                .and_then(|p| p.search_path(client, qname))
                .unwrap_or_default(),
        }
    }
}

impl Handler for AutoPath {
    fn name(&self) -> &'static str {
        "autopath"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let qname = req.qname();
            if !self.zones.iter().any(|z| qname.is_subdomain_of(z)) {
                return next.run(req).await;
            }
            let path = self.search(req.client.ip(), &qname);
            let Some(first) = path.first() else {
                return next.run(req).await;
            };
            if !qname.is_subdomain_of(first) {
                return next.run(req).await;
            }
            let base: Vec<&[u8]> = qname.prefix_labels(first).unwrap_or_default();
            if base.is_empty() {
                return Outcome::error(
                    "autopath",
                    Rcode::SERVFAIL,
                    format!("trimzone: overshot qname: {qname}for zone {first}"),
                );
            }
            let orig_q = req.msg.questions[0].clone();
            let mut first_out: Option<Outcome> = None;
            for (i, s) in path.iter().enumerate() {
                let Some(new) = join(&base, s) else {
                    continue;
                };
                req.msg.questions[0].name = new;
                let mut out = next.run(req).await;
                // Cache hits come back as bytes; decode so the reply can be inspected and edited.
                out.message_mut();
                req.msg.questions[0] = orig_q.clone();
                if out.error.is_some() {
                    return out;
                }
                let Some(reply) = out.reply.as_ref().and_then(Reply::as_message) else {
                    if i == 0 {
                        first_out = Some(out);
                    }
                    continue;
                };
                if reply.rcode() == Rcode::NXDOMAIN {
                    if i == 0 {
                        first_out = Some(out);
                    }
                    continue;
                }
                if let Some(m) = out.message_mut() {
                    cnamer(m, &qname);
                }
                SUCCESS.with_label_values(&[&req.server]).inc();
                return out;
            }
            match first_out {
                Some(o) => o,
                None => Outcome::rcode("autopath", Rcode::SERVFAIL),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::directive;
    use sextant_wire::RType;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn resolv_conf_search_list() {
        assert_eq!(
            parse_resolv("nameserver 10.0.0.1\nsearch a.svc.cluster.local svc.cluster.local\noptions ndots:5\n"),
            vec!["a.svc.cluster.local", "svc.cluster.local"]
        );
        assert_eq!(parse_resolv("domain example.org\n"), vec!["example.org"]);
        assert!(parse_resolv("nameserver 1.1.1.1\n").is_empty());
    }

    #[test]
    fn parse_forms_and_errors() {
        let p = std::env::temp_dir().join(format!("sextant-autopath-{}", std::process::id()));
        std::fs::write(&p, "search Ns.svc.cluster.local svc.cluster.local\n").unwrap();
        let d = directive(&format!(
            ".:53 {{\n autopath cluster.local {}\n}}\n",
            p.display()
        ));
        let (zones, src) = parse(&d, &[".".into()]).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(zones, vec![n("cluster.local.")]);
        match src {
            Source::Static(v) => assert_eq!(
                v,
                vec![
                    n("ns.svc.cluster.local."),
                    n("svc.cluster.local."),
                    Name::root()
                ]
            ),
            _ => panic!("static"),
        }
        let d = directive(".:53 {\n autopath @kubernetes\n}\n");
        let (zones, src) = parse(&d, &[".".into()]).unwrap();
        assert_eq!(zones, vec![Name::root()]);
        assert!(matches!(src, Source::Plugin(p, _) if p == "kubernetes"));
        let d = directive(".:53 {\n autopath\n}\n");
        assert_eq!(
            parse(&d, &[]).err().unwrap().to_string(),
            "Corefile:2:2: autopath: no resolv-conf specified"
        );
        let d = directive(".:53 {\n autopath /nonexistent/resolv.conf\n}\n");
        let e = parse(&d, &[]).err().unwrap().to_string();
        assert!(
            e.starts_with(
                "Corefile:2:11: autopath: failed to parse \"/nonexistent/resolv.conf\": "
            ),
            "{e}"
        );
    }

    #[test]
    fn cname_is_prepended_with_answer_ttl() {
        let orig = n("web.ns.svc.cluster.local.");
        let mut m = Message::query(1, n("web.svc.cluster.local."), RType::A);
        m.answers.push(Record::new(
            n("web.svc.cluster.local."),
            5,
            RData::A([1, 2, 3, 4].into()),
        ));
        cnamer(&mut m, &orig);
        assert_eq!(m.answers.len(), 2);
        assert_eq!(
            m.answers[0],
            Record::new(orig.clone(), 5, RData::Cname(n("web.svc.cluster.local.")))
        );
        assert_eq!(m.questions[0].name, orig);
    }

    struct Fixed(Vec<Name>);
    impl SearchPath for Fixed {
        fn search_path(&self, _client: IpAddr, _qname: &Name) -> Option<Vec<Name>> {
            Some(self.0.clone())
        }
    }

    #[test]
    fn provider_slot_gives_the_search_path() {
        let slot: Slot = Arc::new(OnceLock::new());
        let _ = slot.set(Arc::new(Fixed(vec![n("a."), Name::root()])));
        let ap = AutoPath {
            zones: vec![Name::root()],
            source: Source::Plugin("kubernetes".into(), slot),
        };
        assert_eq!(
            ap.search("10.0.0.1".parse().unwrap(), &n("x.a.")),
            vec![n("a."), Name::root()]
        );
    }
}
