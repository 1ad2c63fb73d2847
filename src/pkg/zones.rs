//! Zones from directive arguments, normalised like CoreDNS's `plugin.Host(..).NormalizeExact`
//! and `plugin.OriginsFromArgsOrServerBlock`: lower-case FQDNs, a scheme and port dropped, a
//! CIDR (`10.0.0.0/15`) expanded to its reverse zones; no arguments means the server block's
//! zones. Errors name file:line:column and the directive. No I/O.

use sextant_corefile::{normalize_zone, Directive, Error, Token};
use sextant_wire::Name;

/// The zones one argument stands for (one, or several for a CIDR off an octet/nibble boundary).
pub(crate) fn normalize(d: &Directive, t: &Token) -> Result<Vec<Name>, Error> {
    let zones = normalize_zone(t).map_err(|e| d.err_at(t, e.msg))?;
    zones
        .iter()
        .map(|z| Name::parse(z).map_err(|e| d.err_at(t, format!("invalid zone: {e}"))))
        .collect()
}

/// The first zone of one argument (CoreDNS takes `NormalizeExact()[0]`, e.g. forward's FROM).
pub(crate) fn first(d: &Directive, t: &Token) -> Result<Name, Error> {
    normalize(d, t)?
        .into_iter()
        .next()
        .ok_or_else(|| d.err_at(t, format!("unable to normalize '{}'", t.text)))
}

/// The zones of every argument in `args`, in order.
pub(crate) fn normalize_all(d: &Directive, args: &[Token]) -> Result<Vec<Name>, Error> {
    let mut out = Vec::new();
    for t in args {
        out.extend(normalize(d, t)?);
    }
    Ok(out)
}

/// A server block's zones (already normalised by the server) as names.
pub(crate) fn of_block(block: &[String]) -> Vec<Name> {
    block.iter().filter_map(|z| Name::parse(z).ok()).collect()
}

/// The zones named in `args`, or the server block's zones when there are none.
pub(crate) fn from_args(
    d: &Directive,
    args: &[Token],
    block: &[String],
) -> Result<Vec<Name>, Error> {
    if args.is_empty() {
        return Ok(of_block(block));
    }
    normalize_all(d, args)
}

/// The longest of `zones` that `qname` is in (the first of equals), like CoreDNS's
/// `plugin.Zones.Matches`.
pub(crate) fn matches<'z>(zones: &'z [Name], qname: &Name) -> Option<&'z Name> {
    let mut best: Option<&Name> = None;
    for z in zones {
        if qname.is_subdomain_of(z) && best.is_none_or(|b| z.label_count() > b.label_count()) {
            best = Some(z);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::line as directive;

    fn names(v: &[&str]) -> Vec<Name> {
        v.iter().map(|s| Name::parse(s).unwrap()).collect()
    }

    #[test]
    fn arguments_are_normalised_and_cidrs_expanded() {
        let d = directive("x Example.ORG dns://a.example:53 10.0.0.0/15 fd00::/64 .");
        let block = ["block.example.".to_string()];
        assert_eq!(
            from_args(&d, &d.args, &block).unwrap(),
            names(&[
                "example.org.",
                "a.example.",
                "0.10.in-addr.arpa.",
                "1.10.in-addr.arpa.",
                "0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
                ".",
            ])
        );
        assert_eq!(
            first(&d, &d.args[2]).unwrap(),
            Name::parse("0.10.in-addr.arpa.").unwrap()
        );
        assert_eq!(normalize(&d, &d.args[0]).unwrap(), names(&["example.org."]));
        assert_eq!(normalize_all(&d, &d.args[..2]).unwrap().len(), 2);
    }

    #[test]
    fn no_arguments_means_the_server_block() {
        let d = directive("x");
        let block = ["a.example.".to_string(), "10.in-addr.arpa.".to_string()];
        assert_eq!(
            from_args(&d, &d.args, &block).unwrap(),
            names(&["a.example.", "10.in-addr.arpa."])
        );
        assert_eq!(of_block(&block).len(), 2);
    }

    #[test]
    fn longest_zone_matches() {
        let z = names(&["example.org.", "sub.example.org.", ".", "other."]);
        let m = |q: &str| matches(&z, &Name::parse(q).unwrap()).map(Name::to_string);
        assert_eq!(m("a.SUB.example.org.").as_deref(), Some("sub.example.org."));
        assert_eq!(m("a.example.org.").as_deref(), Some("example.org."));
        assert_eq!(m("example.com.").as_deref(), Some("."));
        assert_eq!(
            matches(&z[..2], &Name::parse("example.com.").unwrap()),
            None
        );
    }

    #[test]
    fn errors_name_position_and_directive() {
        let d = directive("hosts a..b");
        assert_eq!(
            from_args(&d, &d.args, &[]).unwrap_err().to_string(),
            "Corefile:2:8: hosts: zone is not a valid domain name (empty label): a..b"
        );
        let d = directive("kubernetes foo://x");
        assert_eq!(
            normalize(&d, &d.args[0]).unwrap_err().to_string(),
            "Corefile:2:13: kubernetes: unsupported scheme 'foo' in 'foo://x': expected dns, tls, quic, grpc, https or https3"
        );
    }
}
