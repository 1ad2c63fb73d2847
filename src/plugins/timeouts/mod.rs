//! The `timeouts` plugin: read, write and idle timeouts of the block's TCP and TLS connections,
//! and the number of queries one connection may ask (`maxtcpqueries`).

use std::time::Duration;

use sextant_corefile::{Directive, Error};

use crate::plugin::SetupCtx;
use crate::server::config::TimeoutSettings;

/// CoreDNS's bounds for a timeout.
const MIN: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(24 * 3600);

/// A duration as CoreDNS's `durations.NewDurationFromArg` reads it: a bare integer is seconds.
fn duration(d: &Directive, t: &sextant_corefile::Token) -> Result<Duration, Error> {
    let text = &t.text;
    let parsed = if !text.is_empty() && crate::pkg::num::atoi(d, t).is_ok() {
        crate::pkg::duration::parse(&format!("{text}s"))
    } else {
        crate::pkg::duration::parse(text)
    };
    let shown = if crate::pkg::num::atoi(d, t).is_ok() {
        format!("{text}s")
    } else {
        text.clone()
    };
    parsed.map_err(|_| d.err_at(t, format!("failed to parse duration '{shown}'")))
}

fn parse(d: &Directive) -> Result<TimeoutSettings, Error> {
    if let Some(extra) = d.args.first() {
        return Err(d.arg_err(extra));
    }
    let mut t = TimeoutSettings::default();
    let mut set = 0;
    for sub in d.sub() {
        let name = sub.name.text.as_str();
        if sub.args.len() != 1 || sub.block.is_some() {
            let after = sub.args.last().unwrap_or(&sub.name);
            return Err(d.arg_err(after));
        }
        let v = &sub.args[0];
        if name == "maxtcpqueries" {
            let n = crate::pkg::num::atoi(d, v).map_err(|e| {
                d.err_at(
                    v,
                    format!("invalid value for maxtcpqueries '{}': {}", v.text, e.msg),
                )
            })?;
            if n == 0 || n < -1 {
                return Err(d.err_at(
                    v,
                    format!(
                        "maxtcpqueries provided '{n}' needs to be -1 (unlimited) or a positive integer"
                    ),
                ));
            }
            t.max_queries = Some(n);
            set += 1;
            continue;
        }
        let dur = duration(d, v)?;
        if !(MIN..=MAX).contains(&dur) {
            return Err(d.err_at(
                v,
                format!(
                    "timeout provided '{}' needs to be between 1 second and 24 hours",
                    crate::pkg::duration::format(dur)
                ),
            ));
        }
        match name {
            "read" => t.read = Some(dur),
            "write" => t.write = Some(dur),
            "idle" => t.idle = Some(dur),
            other => return Err(d.err_at(&sub.name, format!("unknown option: '{other}'"))),
        }
        set += 1;
    }
    if set == 0 {
        return Err(d.err("timeouts block with no timeouts specified"));
    }
    Ok(t)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let t = parse(lines[0])?;
    ctx.set_timeouts(t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(body: &str) -> Result<TimeoutSettings, Error> {
        let cf = sextant_corefile::parse_str(
            "Corefile",
            &format!(".:53 {{\n    {body}\n}}\n"),
            std::path::Path::new("."),
        )
        .unwrap();
        parse(&cf.blocks[0].directives[0])
    }

    #[test]
    fn every_option_and_bare_seconds() {
        let t = parse_text(
            "timeouts {\n        read 10\n        write 20s\n        idle 1m\n        maxtcpqueries 128\n    }",
        )
        .unwrap();
        assert_eq!(t.read, Some(Duration::from_secs(10)));
        assert_eq!(t.write, Some(Duration::from_secs(20)));
        assert_eq!(t.idle, Some(Duration::from_secs(60)));
        assert_eq!(t.max_queries, Some(128));
        let t = parse_text("timeouts {\n        maxtcpqueries -1\n    }").unwrap();
        assert_eq!(t.max_queries, Some(-1));
        assert_eq!(t.read, None);
    }

    #[test]
    fn errors_are_coredns_texts_at_the_value() {
        for (body, want) in [
            ("timeouts", "Corefile:2:5: timeouts: timeouts block with no timeouts specified"),
            (
                "timeouts {\n        read 500ms\n    }",
                "Corefile:3:14: timeouts: timeout provided '500ms' needs to be between 1 second and 24 hours",
            ),
            (
                "timeouts {\n        idle 25h\n    }",
                "timeout provided '25h0m0s' needs to be between 1 second and 24 hours",
            ),
            ("timeouts {\n        read abc\n    }", "failed to parse duration 'abc'"),
            ("timeouts {\n        foo 5s\n    }", "Corefile:3:9: timeouts: unknown option: 'foo'"),
            (
                "timeouts {\n        maxtcpqueries 0\n    }",
                "maxtcpqueries provided '0' needs to be -1 (unlimited) or a positive integer",
            ),
            (
                "timeouts {\n        maxtcpqueries x\n    }",
                "invalid value for maxtcpqueries 'x': strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            (
                "timeouts {\n        read 5 6\n    }",
                "Corefile:3:16: timeouts: Wrong argument count or unexpected line ending after '6'",
            ),
            ("timeouts 1 {\n        read 5\n    }", "Corefile:2:14"),
        ] {
            let e = parse_text(body).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }
}
