//! The `log` plugin: one line per query in CoreDNS's Common Log Format (or a custom format with
//! the same placeholders), for names under the configured scopes and response classes.

use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Message, Name, Rcode};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

/// `{common}`.
pub const COMMON: &str = "{remote}:{port} - {>id} \"{type} {class} {name} {proto} {size} {>do} {>bufsize}\" {rcode} {>rflags} {rsize} {duration}";

/// Response classes for `class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Success,
    Denial,
    Error,
}

struct Rule {
    scope: Name,
    format: String,
    /// Empty = all.
    classes: Vec<Class>,
}

pub struct Log {
    rules: Vec<Rule>,
}

fn format_arg(s: &str) -> String {
    match s {
        "{common}" => COMMON.to_string(),
        "{combined}" => format!("{COMMON} \"{{>opcode}}\""),
        other => other.to_string(),
    }
}

pub fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let mut rules = Vec::new();
    for d in lines {
        let args: Vec<&str> = d.args.iter().map(|t| t.text.as_str()).collect();
        let (scopes, format): (Vec<&str>, String) = match args.len() {
            0 => (vec!["."], COMMON.to_string()),
            1 => (vec![args[0]], COMMON.to_string()),
            _ => {
                let last = args[args.len() - 1];
                if last.contains('{') {
                    (args[..args.len() - 1].to_vec(), format_arg(last))
                } else {
                    (args.clone(), COMMON.to_string())
                }
            }
        };
        let mut classes = Vec::new();
        for sub in d.sub() {
            match sub.name.text.as_str() {
                "class" => {
                    sub.arg_count(1, usize::MAX)?;
                    for t in &sub.args {
                        match t.text.as_str() {
                            "success" => classes.push(Class::Success),
                            "denial" => classes.push(Class::Denial),
                            "error" => classes.push(Class::Error),
                            "all" => {
                                classes = vec![Class::Success, Class::Denial, Class::Error];
                            }
                            other => return Err(sub.err_at(t, format!("invalid class '{other}'"))),
                        }
                    }
                }
                other => return Err(sub.err(format!("unknown property '{other}'"))),
            }
        }
        for s in scopes {
            let scope =
                Name::parse(s).map_err(|e| d.err(format!("invalid name scope {s:?}: {e}")))?;
            rules.push(Rule {
                scope,
                format: format.clone(),
                classes: classes.clone(),
            });
        }
    }
    ctx.add_handler(Arc::new(Log { rules }));
    Ok(())
}

/// CoreDNS's `response.Classify` on the rcode.
pub fn classify(rcode: Rcode) -> Class {
    match rcode {
        Rcode::NOERROR => Class::Success,
        Rcode::NXDOMAIN => Class::Denial,
        _ => Class::Error,
    }
}

/// Fills in a log format for one answered query.
pub fn render(format: &str, req: &Request, reply: &Message, rsize: usize) -> String {
    let mut out = String::with_capacity(format.len() + 64);
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let Some(close) = after.find('}') else {
            out.push_str(after);
            return out;
        };
        let key = &after[1..close];
        match value(key, req, reply, rsize) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&after[..=close]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

fn value(key: &str, req: &Request, reply: &Message, rsize: usize) -> Option<String> {
    Some(match key {
        "remote" => match req.client.ip() {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("[{a}]"),
        },
        "port" => req.client.port().to_string(),
        "local" => match req.local.ip() {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("[{a}]"),
        },
        ">id" => req.msg.header.id.to_string(),
        ">opcode" => req.msg.header.opcode.to_string(),
        "type" => req.qtype().to_string(),
        "class" => req.qclass().to_string(),
        "name" => req.qname().to_lowercase_string(),
        "proto" => req.proto.as_str().to_string(),
        "size" => req.size.to_string(),
        ">do" => req.do_bit().to_string(),
        ">bufsize" => req.bufsize().to_string(),
        "rcode" => reply.rcode().to_string(),
        ">rflags" => reply.header.flags_string(),
        "rsize" => rsize.to_string(),
        "duration" => format!("{}s", req.start.elapsed().as_secs_f64()),
        _ => return None,
    })
}

impl Handler for Log {
    fn name(&self) -> &'static str {
        "log"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let qname = req.qname();
            let Some(rule) = self.rules.iter().find(|r| qname.is_subdomain_of(&r.scope)) else {
                return next.run(req).await;
            };
            let out = next.run(req).await;
            let rcode = out.final_rcode();
            if rule.classes.is_empty() || rule.classes.contains(&classify(rcode)) {
                // Like CoreDNS: log what was written, or a synthetic reply with the rcode.
                let synthetic;
                let (reply, rsize) = match (&out.reply, &out.wire) {
                    (Some(m), _) => (m, m.uncompressed_len()),
                    (None, Some(w)) => {
                        // A reply sent as bytes: the header is all the format needs.
                        synthetic = Message {
                            header: w.header(),
                            ..Message::default()
                        };
                        let rsize = w
                            .to_message()
                            .map(|m| m.uncompressed_len())
                            .unwrap_or(w.bytes.len());
                        (&synthetic, rsize)
                    }
                    (None, None) => {
                        let mut m = req.reply();
                        m.set_rcode(rcode);
                        synthetic = m;
                        (&synthetic, synthetic.uncompressed_len())
                    }
                };
                crate::log::raw(&format!(
                    "[INFO] {}",
                    render(&rule.format, req, reply, rsize)
                ));
            }
            out
        })
    }
}
