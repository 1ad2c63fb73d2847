//! `fallthrough [ZONES...]` (CoreDNS `plugin/pkg/fall`): the zones for which a plugin hands a
//! query it cannot answer to the next plugin instead of answering NXDOMAIN. No zones means
//! every name. No I/O.

use sextant_corefile::{Directive, Error};
use sextant_wire::Name;

use super::zones;

/// Where a plugin falls through; off until a `fallthrough` line is parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fall {
    zones: Vec<Name>,
}

impl Fall {
    /// Parses a `fallthrough [ZONES...]` line: zones normalised (CIDRs expanded), none = the
    /// root.
    pub(crate) fn parse(d: &Directive) -> Result<Fall, Error> {
        let zones = if d.args.is_empty() {
            vec![Name::root()]
        } else {
            zones::normalize_all(d, &d.args)?
        };
        Ok(Fall { zones })
    }

    /// True when `qname` is in one of the zones (CoreDNS `F.Through`).
    pub(crate) fn through(&self, qname: &Name) -> bool {
        self.zones.iter().any(|z| qname.is_subdomain_of(z))
    }

    /// True when no `fallthrough` was given.
    pub(crate) fn is_off(&self) -> bool {
        self.zones.is_empty()
    }

    /// The zones, normalised.
    #[cfg(test)]
    pub(crate) fn zones(&self) -> &[Name] {
        &self.zones
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing;

    fn fall(line: &str) -> Result<Fall, Error> {
        let d = testing::line(&format!("hosts {{\n  {line}\n }}"));
        Fall::parse(&d.sub()[0])
    }

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn off_all_or_some_zones() {
        let off = Fall::default();
        assert!(off.is_off() && !off.through(&n("a.example.")));
        let all = fall("fallthrough").unwrap();
        assert_eq!(all.zones(), [Name::root()]);
        assert!(all.through(&n("a.example.")) && all.through(&Name::root()));
        let some = fall("fallthrough Example.org 10.0.0.0/15").unwrap();
        assert_eq!(
            some.zones(),
            [
                n("example.org."),
                n("0.10.in-addr.arpa."),
                n("1.10.in-addr.arpa.")
            ]
        );
        assert!(!some.is_off());
        assert!(some.through(&n("A.Example.org.")));
        assert!(some.through(&n("4.3.1.10.in-addr.arpa.")));
        assert!(!some.through(&n("4.3.2.10.in-addr.arpa.")));
        assert!(!some.through(&n("example.com.")));
    }

    #[test]
    fn bad_zone_names_the_line() {
        assert_eq!(
            fall("fallthrough a..b").unwrap_err().to_string(),
            "Corefile:3:15: fallthrough: zone is not a valid domain name (empty label): a..b"
        );
    }
}
