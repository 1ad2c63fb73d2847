//! Go durations: parsing as Go's `time.ParseDuration` does (`5s`, `1m30s`, `1.5h`, `500ms`,
//! `+2s`, `0`) and printing as Go's `Duration.String` (`1m30s`, `1.5s`, `0s`), for Corefile
//! arguments, flags and log lines. No I/O.

use std::fmt;
use std::time::Duration;

use sextant_corefile::{Directive, Error, Token};

/// Why a duration does not parse; displays as Go's error for `orig`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// Not the duration grammar, or out of range.
    Invalid(String),
    /// A number without a unit (Go accepts a bare `0` only).
    MissingUnit(String),
    /// A unit Go does not know (the unit, the whole text).
    UnknownUnit(String, String),
    /// A valid negative duration: Sextant's durations cannot be negative.
    Negative(String),
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Invalid(s) => write!(f, "time: invalid duration {s:?}"),
            DurationError::MissingUnit(s) => write!(f, "time: missing unit in duration {s:?}"),
            DurationError::UnknownUnit(u, s) => {
                write!(f, "time: unknown unit {u:?} in duration {s:?}")
            }
            DurationError::Negative(s) => write!(f, "negative duration {s:?}"),
        }
    }
}

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
/// Go's `Duration` is an int64 of nanoseconds.
const LIMIT: u64 = 1 << 63;

fn unit(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => NS,
        "us" | "\u{b5}s" | "\u{3bc}s" => US,
        "ms" => MS,
        "s" => SEC,
        "m" => MIN,
        "h" => HOUR,
        _ => return None,
    })
}

/// Parses a duration with Go's grammar `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` (or a bare `0`),
/// rounding fractions the way Go does. A negative duration is an error here.
pub(crate) fn parse(orig: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(orig.to_string());
    let mut s = orig;
    let mut neg = false;
    if let Some(c) = s.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            s = &s[1..];
        }
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part.
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v: u64 = 0;
        for &c in &b[..int_len] {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(c - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
        }
        s = &s[int_len..];
        // The fraction: digits past what fits are ignored, as in Go.
        let (mut f, mut scale, mut frac_len) = (0u64, 1f64, 0usize);
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            let mut overflow = false;
            for &c in s.as_bytes().iter().take_while(|c| c.is_ascii_digit()) {
                frac_len += 1;
                if overflow {
                    continue;
                }
                if f > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = f * 10 + u64::from(c - b'0');
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                f = y;
                scale *= 10.0;
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(orig.to_string()));
        }
        let u = &s[..unit_len];
        s = &s[unit_len..];
        let Some(unit) = unit(u) else {
            return Err(DurationError::UnknownUnit(u.to_string(), orig.to_string()));
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        return if total == 0 {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::Negative(orig.to_string()))
        };
    }
    if total > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(total))
}

/// A duration argument of a Corefile directive; the error names the token:
/// `invalid duration '10'`.
pub(crate) fn arg(d: &Directive, t: &Token) -> Result<Duration, Error> {
    parse(&t.text).map_err(|_| d.err_at(t, format!("invalid duration '{}'", t.text)))
}

/// Prints a duration the way Go's `Duration.String` does: `0s`, `1.5µs`, `500ms`, `1.5s`,
/// `1m30s`, `1h0m0s`. Durations beyond Go's range print saturated.
pub(crate) fn format(d: Duration) -> String {
    let u = u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX)
        .min(LIMIT - 1);
    if u == 0 {
        return "0s".to_string();
    }
    if u < SEC {
        let (unit, prec) = if u < US {
            ("ns", 0)
        } else if u < MS {
            ("\u{b5}s", 3)
        } else {
            ("ms", 6)
        };
        let (int, frac) = split_frac(u, prec);
        return format!("{int}{frac}{unit}");
    }
    let (secs, frac) = split_frac(u, 9);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}{frac}s")
    } else if m > 0 {
        format!("{m}m{s}{frac}s")
    } else {
        format!("{s}{frac}s")
    }
}

/// `v / 10^prec` and its fraction as `.123` without trailing zeros (empty when zero).
fn split_frac(v: u64, prec: u32) -> (u64, String) {
    let p = 10u64.pow(prec);
    let (int, frac) = (v / p, v % p);
    if frac == 0 {
        return (int, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (int, format!(".{}", digits.trim_end_matches('0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::line;

    fn ok(s: &str) -> Duration {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_go_grammar() {
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("5.s"), Duration::from_secs(5));
        assert_eq!(ok("1us"), Duration::from_micros(1));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok("1μs"), Duration::from_micros(1));
        assert_eq!(ok("3ns"), Duration::from_nanos(3));
        assert_eq!(ok("1h2m3s4ms5us6ns").as_nanos(), 3_723_004_005_006);
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("+0"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("+2s"), Duration::from_secs(2));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("2562047h47m16.854775807s").as_nanos(), (1u128 << 63) - 1);
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "",
            "x",
            "s",
            ".s",
            "-",
            "+",
            " 5s",
            "5s.",
            "9223372036854775808ns",
        ] {
            assert!(
                matches!(parse(bad), Err(DurationError::Invalid(_))),
                "{bad:?} must be invalid, got {:?}",
                parse(bad)
            );
        }
        assert_eq!(parse("5"), Err(DurationError::MissingUnit("5".into())));
        assert_eq!(
            parse("1.2.3s"),
            Err(DurationError::MissingUnit("1.2.3s".into()))
        );
        assert_eq!(
            parse("5x"),
            Err(DurationError::UnknownUnit("x".into(), "5x".into()))
        );
        assert_eq!(
            parse("5 s"),
            Err(DurationError::UnknownUnit(" s".into(), "5 s".into()))
        );
        assert_eq!(parse("-5s"), Err(DurationError::Negative("-5s".into())));
        assert_eq!(
            parse("x").unwrap_err().to_string(),
            "time: invalid duration \"x\""
        );
        assert_eq!(
            parse("5").unwrap_err().to_string(),
            "time: missing unit in duration \"5\""
        );
        assert_eq!(
            parse("5d").unwrap_err().to_string(),
            "time: unknown unit \"d\" in duration \"5d\""
        );
    }

    #[test]
    fn prints_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1100), "1.1µs"),
            (Duration::from_micros(2200), "2.2ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3661), "1h1m1s"),
            (Duration::from_nanos(3_723_004_005_006), "1h2m3.004005006s"),
        ];
        for (d, want) in cases {
            assert_eq!(format(*d), *want, "{d:?}");
            assert_eq!(ok(want), *d, "round trip of {want}");
        }
    }

    #[test]
    fn argument_errors_name_the_token() {
        let d = line("health {\n  lameduck 5x\n }");
        let sub = &d.sub()[0];
        assert_eq!(
            arg(sub, &sub.args[0]).unwrap_err().to_string(),
            "Corefile:3:12: lameduck: invalid duration '5x'"
        );
    }
}
