//! CIDR arguments of Corefile directives (`10.0.0.0/8`, `fd00::/64`): parsed with Go's
//! `net.ParseCIDR` rules into [`IpNet`] (network, prefix, `contains`, reverse zones — the type
//! lives in `sextant_wire` so the Corefile parser expands CIDR keys with the same code). No I/O.

use sextant_corefile::{Directive, Error, Token};
pub(crate) use sextant_wire::IpNet;

/// A CIDR argument; the error names the token: `invalid CIDR "x": invalid CIDR address: x`.
pub(crate) fn arg(d: &Directive, t: &Token) -> Result<IpNet, Error> {
    IpNet::parse(&t.text).map_err(|e| d.err_at(t, format!("invalid CIDR {:?}: {e}", t.text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::line;

    #[test]
    fn parses_and_names_the_token() {
        let d = line("loadbalance {\n  prefer 10.1.2.3/16 10.0.0.0/33\n }");
        let sub = &d.sub()[0];
        let net = arg(sub, &sub.args[0]).unwrap();
        assert_eq!(net.to_string(), "10.1.0.0/16");
        assert!(net.contains(&"10.1.9.9".parse().unwrap()));
        assert_eq!(
            arg(sub, &sub.args[1]).unwrap_err().to_string(),
            "Corefile:3:22: prefer: invalid CIDR \"10.0.0.0/33\": invalid CIDR address: 10.0.0.0/33"
        );
    }
}
