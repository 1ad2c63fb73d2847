//! Numeric arguments of Corefile directives: Go's `strconv.Atoi` with its error texts, unsigned
//! counts, and sizes in bytes. Errors name the token. No I/O.

use sextant_corefile::{Directive, Error, Token};

/// Go's `strconv.Atoi`: an optional sign and decimal digits; the error text is Go's
/// (`strconv.Atoi: parsing "x": invalid syntax` / `value out of range`).
pub(crate) fn atoi(d: &Directive, t: &Token) -> Result<i64, Error> {
    let s = t.text.as_str();
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(d.err_at(t, format!("strconv.Atoi: parsing {s:?}: invalid syntax")));
    }
    s.parse::<i64>().map_err(|_| {
        d.err_at(
            t,
            format!("strconv.Atoi: parsing {s:?}: value out of range"),
        )
    })
}

/// An unsigned count: `invalid number 'x'`.
pub(crate) fn count(d: &Directive, t: &Token) -> Result<u64, Error> {
    t.text
        .parse()
        .map_err(|_| d.err_at(t, format!("invalid number '{}'", t.text)))
}

/// An unsigned count that fits in 32 bits: `invalid number 'x'`.
pub(crate) fn count32(d: &Directive, t: &Token) -> Result<u32, Error> {
    u32::try_from(count(d, t)?).map_err(|_| d.err_at(t, format!("invalid number '{}'", t.text)))
}

/// One limit option of the transport plugins (`https`, `https3`, `quic`, `grpc_server`):
/// `NAME VALUE` stored in `slot`, with CoreDNS's errors for a value that is not an integer, is
/// negative (or zero when `positive`), or was already given in the block.
pub(crate) fn limit(
    sub: &Directive,
    slot: &mut Option<usize>,
    positive: bool,
) -> Result<(), Error> {
    sub.arg_count(1, 1)?;
    let name = &sub.name.text;
    let t = &sub.args[0];
    let v = atoi(sub, t)
        .map_err(|e| sub.err_at(t, format!("invalid {name} value '{}': {}", t.text, e.msg)))?;
    if positive && v <= 0 {
        return Err(sub.err_at(t, format!("{name} must be a positive integer: {v}")));
    }
    if v < 0 {
        return Err(sub.err_at(t, format!("{name} must be a non-negative integer: {v}")));
    }
    if slot.is_some() {
        return Err(sub.err(format!("{name} already defined for this server block")));
    }
    *slot = Some(usize::try_from(v).unwrap_or(usize::MAX));
    Ok(())
}

/// A size in bytes written the way Kubernetes writes quantities: a whole number with an optional
/// suffix `k`, `M`, `G` (powers of 1000) or `Ki`, `Mi`, `Gi` (powers of 1024); more than 0.
pub(crate) fn size(d: &Directive, t: &Token) -> Result<u64, Error> {
    parse_size(&t.text).filter(|n| *n > 0).ok_or_else(|| {
        d.err_at(
            t,
            format!(
                "invalid size '{}': a number of bytes, optionally with k, M, G, Ki, Mi or Gi",
                t.text
            ),
        )
    })
}

fn parse_size(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let mult: u64 = match &s[digits..] {
        "" => 1,
        "k" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::line;

    #[test]
    fn atoi_like_go() {
        let d = line("x 12 +3 -4 x 1.5 99999999999999999999 -");
        let v: Vec<Result<i64, String>> = d
            .args
            .iter()
            .map(|t| atoi(&d, t).map_err(|e| e.to_string()))
            .collect();
        assert_eq!(v[0], Ok(12));
        assert_eq!(v[1], Ok(3));
        assert_eq!(v[2], Ok(-4));
        assert_eq!(
            v[3],
            Err("Corefile:2:13: x: strconv.Atoi: parsing \"x\": invalid syntax".into())
        );
        assert!(v[4].as_ref().unwrap_err().ends_with("invalid syntax"));
        assert!(v[5].as_ref().unwrap_err().ends_with("value out of range"));
        assert!(v[6].as_ref().unwrap_err().ends_with("invalid syntax"));
    }

    #[test]
    fn limits_like_the_transport_plugins() {
        let mut slot = None;
        let ok = line("max_streams 16");
        assert!(limit(&ok, &mut slot, true).is_ok());
        assert_eq!(slot, Some(16));
        assert_eq!(
            limit(&ok, &mut slot, true).unwrap_err().msg,
            "max_streams already defined for this server block"
        );
        let mut slot = None;
        let zero = line("max_streams 0");
        assert_eq!(
            limit(&zero, &mut slot, true).unwrap_err().msg,
            "max_streams must be a positive integer: 0"
        );
        assert!(limit(&zero, &mut slot, false).is_ok());
        let neg = line("max_connections -1");
        assert_eq!(
            limit(&neg, &mut None, false).unwrap_err().msg,
            "max_connections must be a non-negative integer: -1"
        );
        let bad = line("max_connections x");
        assert_eq!(
            limit(&bad, &mut None, false).unwrap_err().msg,
            "invalid max_connections value 'x': strconv.Atoi: parsing \"x\": invalid syntax"
        );
    }

    #[test]
    fn counts() {
        let d = line("x 7 -1 4294967296");
        assert_eq!(count(&d, &d.args[0]).unwrap(), 7);
        assert_eq!(count32(&d, &d.args[0]).unwrap(), 7);
        assert_eq!(
            count(&d, &d.args[1]).unwrap_err().to_string(),
            "Corefile:2:6: x: invalid number '-1'"
        );
        assert_eq!(count(&d, &d.args[2]).unwrap(), 1 << 32);
        assert_eq!(
            count32(&d, &d.args[2]).unwrap_err().msg,
            "invalid number '4294967296'"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64Mi"), Some(64 << 20));
        assert_eq!(parse_size("2k"), Some(2000));
        assert_eq!(parse_size("1G"), Some(1_000_000_000));
        for bad in [
            "",
            "Mi",
            "1.5Mi",
            "64MB",
            "-1",
            "99999999999999999999",
            "99999999999Gi",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
