//! The `proxyproto` plugin: PROXY protocol v1/v2 headers on the block's listeners (UDP, TCP,
//! TLS, DoH, gRPC), from which sources they are taken (`allow`), what happens to the others
//! (`default use|ignore|reject|skip`) and UDP sessions of header-only datagrams
//! (`udp_session_tracking`). Setup only: the listeners do the work (`server::proxy`).

use std::time::Duration;

use sextant_corefile::{Directive, Error};

use crate::plugin::SetupCtx;
use crate::server::proxy::{Policy, ProxySettings, DEFAULT_MAX_SESSIONS};

/// Every `proxyproto` line of a block adds to one setting, as CoreDNS reads them: `allow`
/// lists add up, the last `default` and `udp_session_tracking` win.
fn parse(lines: &[&Directive]) -> Result<ProxySettings, Error> {
    let mut s = ProxySettings {
        allow: Vec::new(),
        default: None,
        session_ttl: Duration::ZERO,
        max_sessions: DEFAULT_MAX_SESSIONS,
    };
    for d in lines {
        if let Some(extra) = d.args.first() {
            return Err(d.arg_err(extra));
        }
        for sub in d.sub() {
            let last = sub.args.last().unwrap_or(&sub.name);
            match sub.name.text.as_str() {
                "allow" => {
                    for t in &sub.args {
                        s.allow.push(crate::pkg::cidr::arg(d, t)?);
                    }
                }
                "default" => {
                    let [v] = sub.args.as_slice() else {
                        return Err(d.arg_err(last));
                    };
                    s.default = Some(match v.text.to_ascii_lowercase().as_str() {
                        "use" => Policy::Use,
                        "ignore" => Policy::Ignore,
                        "reject" => Policy::Reject,
                        "skip" => Policy::Skip,
                        _ => return Err(d.arg_err(v)),
                    });
                }
                "udp_session_tracking" => {
                    if sub.args.is_empty() || sub.args.len() > 2 {
                        return Err(d.arg_err(last));
                    }
                    let t = &sub.args[0];
                    // A negative duration parses, as in Go, and turns tracking off.
                    s.session_ttl = match crate::pkg::duration::parse(&t.text) {
                        Ok(ttl) => ttl,
                        Err(crate::pkg::duration::DurationError::Negative(_)) => Duration::ZERO,
                        Err(e) => {
                            return Err(d.err_at(
                                t,
                                format!("udp_session_tracking: invalid duration {:?}: {e}", t.text),
                            ))
                        }
                    };
                    if let Some(n) = sub.args.get(1) {
                        let max = n.text.parse::<i64>().ok().filter(|m| *m > 0).ok_or_else(|| {
                            d.err_at(
                                n,
                                format!(
                                    "udp_session_tracking: invalid max sessions {:?}: must be a positive integer",
                                    n.text
                                ),
                            )
                        })?;
                        s.max_sessions = usize::try_from(max).unwrap_or(usize::MAX);
                    }
                }
                other => {
                    return Err(d.err_at(&sub.name, format!("unknown option '{other}'")));
                }
            }
        }
    }
    Ok(s)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let s = parse(lines)?;
    ctx.set_proxy(s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(body: &str) -> Result<ProxySettings, Error> {
        let cf = sextant_corefile::parse_str(
            "Corefile",
            &format!(".:53 {{\n    {body}\n}}\n"),
            std::path::Path::new("."),
        )
        .unwrap();
        let lines: Vec<&Directive> = cf.blocks[0].directives.iter().collect();
        parse(&lines)
    }

    #[test]
    fn options_and_lines_add_up() {
        let s = parse_text("proxyproto").unwrap();
        assert!(s.allow.is_empty() && s.default.is_none() && s.session_ttl.is_zero());
        let s = parse_text(
            "proxyproto {\n allow 10.0.0.0/8 192.168.1.1/32\n default REJECT\n udp_session_tracking 28s 20000\n }\n proxyproto {\n allow fd00::/8\n allow\n }",
        )
        .unwrap();
        assert_eq!(s.allow.len(), 3);
        assert_eq!(s.default, Some(Policy::Reject));
        assert_eq!(s.session_ttl, Duration::from_secs(28));
        assert_eq!(s.max_sessions, 20000);
        let s = parse_text("proxyproto {\n udp_session_tracking -5s\n default skip\n}").unwrap();
        assert!(s.session_ttl.is_zero());
        assert_eq!(s.default, Some(Policy::Skip));
    }

    #[test]
    fn errors_name_the_place_and_coredns_text() {
        let cases = [
            ("proxyproto extra", "Corefile:2:16: proxyproto: Wrong argument count or unexpected line ending after 'extra'"),
            ("proxyproto {\n allow 10.0.0.0/33\n }", "Corefile:3:8: proxyproto: invalid CIDR \"10.0.0.0/33\": invalid CIDR address: 10.0.0.0/33"),
            ("proxyproto {\n default maybe\n }", "Corefile:3:10: proxyproto: Wrong argument count or unexpected line ending after 'maybe'"),
            ("proxyproto {\n default\n }", "Corefile:3:2: proxyproto: Wrong argument count or unexpected line ending after 'default'"),
            ("proxyproto {\n udp_session_tracking 28\n }", "Corefile:3:23: proxyproto: udp_session_tracking: invalid duration \"28\": time: missing unit in duration \"28\""),
            ("proxyproto {\n udp_session_tracking 28s 0\n }", "Corefile:3:27: proxyproto: udp_session_tracking: invalid max sessions \"0\": must be a positive integer"),
            ("proxyproto {\n udp_session_tracking 1s 2 3\n }", "Corefile:3:28: proxyproto: Wrong argument count or unexpected line ending after '3'"),
            ("proxyproto {\n bogus 1\n }", "Corefile:3:2: proxyproto: unknown option 'bogus'"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_text(text).unwrap_err().to_string(), want, "{text}");
        }
    }
}
