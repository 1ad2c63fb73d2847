//! Small parsing helpers shared by plugin setups (durations, counts, sizes, addresses). No I/O.

use std::time::Duration;

use sextant_corefile::{Directive, Error, Token};

/// Parses a Go-style duration (`5s`, `1m30s`, `500ms`, `1h`).
pub(crate) fn parse_duration(d: &Directive, t: &Token) -> Result<Duration, Error> {
    parse_go_duration(&t.text).ok_or_else(|| d.err_at(t, format!("invalid duration '{}'", t.text)))
}

/// Go's `time.ParseDuration` subset: sequences of number+unit (ns, us, µs, ms, s, m, h).
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * mult;
    }
    if !total.is_finite() || total < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// Parses an unsigned integer argument.
pub(crate) fn parse_u64(d: &Directive, t: &Token) -> Result<u64, Error> {
    t.text
        .parse()
        .map_err(|_| d.err_at(t, format!("invalid number '{}'", t.text)))
}

/// Parses a size in bytes the way Kubernetes writes quantities: a whole number with an optional
/// suffix `k`, `M`, `G` (powers of 1000) or `Ki`, `Mi`, `Gi` (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Option<u64> {
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

/// Formats a duration the way Go prints it (`5s`, `1m30s`, `500ms`).
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{sec}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("x"), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64Mi"), Some(64 << 20));
        assert_eq!(parse_size("2k"), Some(2000));
        assert_eq!(parse_size("1G"), Some(1_000_000_000));
        for bad in ["", "Mi", "1.5Mi", "64MB", "-1", "99999999999999999999"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
