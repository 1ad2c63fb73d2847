//! The `bind` plugin: restricts a server block's listeners to given addresses or interfaces,
//! minus `except` ones.

use std::net::IpAddr;

use sextant_corefile::{Directive, Error, Token};

use crate::plugin::SetupCtx;

/// Addresses of interface `name` (every family), or None if there is no such interface.
fn interface_addrs(name: &str) -> Option<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let mut out = Vec::new();
    let mut found = false;
    for ifa in addrs {
        if ifa.interface_name != name {
            continue;
        }
        found = true;
        if let Some(a) = ifa.address {
            if let Some(v4) = a.as_sockaddr_in() {
                out.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = a.as_sockaddr_in6() {
                // Link-local IPv6 needs a scope; CoreDNS skips those too.
                let ip = v6.ip();
                if ip.segments()[0] & 0xffc0 != 0xfe80 {
                    out.push(IpAddr::V6(ip));
                }
            }
        }
    }
    found.then_some(out)
}

fn resolve(d: &Directive, t: &Token) -> Result<Vec<IpAddr>, Error> {
    if let Ok(ip) = t
        .text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(vec![ip]);
    }
    interface_addrs(&t.text).ok_or_else(|| {
        d.err_at(
            t,
            format!("not a valid IP address or interface name: {:?}", t.text),
        )
    })
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let mut all = Vec::new();
    let mut except = Vec::new();
    for d in lines {
        d.arg_count(1, usize::MAX)?;
        for t in &d.args {
            all.extend(resolve(d, t)?);
        }
        for sub in d.sub() {
            if sub.name.text != "except" {
                return Err(sub.err(format!("unknown property '{}'", sub.name.text)));
            }
            sub.arg_count(1, usize::MAX)?;
            for t in &sub.args {
                except.extend(resolve(sub, t)?);
            }
        }
    }
    all.retain(|ip| !except.contains(ip));
    let mut seen = Vec::new();
    for ip in all {
        if !seen.contains(&ip) {
            seen.push(ip);
        }
    }
    if seen.is_empty() {
        return Err(lines[0].err("no addresses to bind to"));
    }
    ctx.bind(seen);
    Ok(())
}
