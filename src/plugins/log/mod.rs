//! The `log` plugin: one line per query in CoreDNS's Common Log Format (or a custom format with
//! the same placeholders), for names under the configured scopes and response classes.

use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Message, Name, Rcode, Reply};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};
use crate::plugins::cache::classify::{typify, MsgType};

/// `{common}`.
pub(crate) const COMMON: &str = "{remote}:{port} - {>id} \"{type} {class} {name} {proto} {size} {>do} {>bufsize}\" {rcode} {>rflags} {rsize} {duration}";

/// Response classes for `class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
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

pub(crate) struct Log {
    rules: Vec<Rule>,
}

fn format_arg(s: &str) -> String {
    match s {
        "{common}" => COMMON.to_string(),
        "{combined}" => format!("{COMMON} \"{{>opcode}}\""),
        other => other.to_string(),
    }
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
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
pub(crate) fn classify(rcode: Rcode) -> Class {
    match rcode {
        Rcode::NOERROR => Class::Success,
        Rcode::NXDOMAIN => Class::Denial,
        _ => Class::Error,
    }
}

/// Fills in a log format (CoreDNS's replacer) for one query, appending to `out`, with no
/// allocation per placeholder. Without a reply (`dnstap`'s `extra`, CoreDNS's replacer without
/// a recorder) `{rcode}`, `{rsize}`, `{duration}` and `{>rflags}` are `-`.
pub(crate) fn render_into(
    out: &mut String,
    format: &str,
    req: &Request,
    reply: Option<(&Message, usize)>,
) {
    let mut rest = format;
    // Byte searches: '{' and '}' are ASCII, so the split points are char boundaries.
    while let Some(open) = rest.bytes().position(|b| b == b'{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let Some(close) = after.bytes().position(|b| b == b'}') else {
            out.push_str(after);
            return;
        };
        let key = &after[1..close];
        if !value(out, key, req, reply) {
            out.push_str(&after[..=close]);
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
}

fn write_ip(out: &mut String, ip: std::net::IpAddr) {
    use std::fmt::Write;
    let _ = match ip {
        std::net::IpAddr::V4(a) => write!(out, "{a}"),
        std::net::IpAddr::V6(a) => write!(out, "[{a}]"),
    };
}

/// Appends the value of placeholder `key`; false when the key is unknown.
fn value(out: &mut String, key: &str, req: &Request, reply: Option<(&Message, usize)>) -> bool {
    use std::fmt::Write;
    let Some((reply, rsize)) = reply else {
        return match key {
            "rcode" | "rsize" | "duration" | ">rflags" => {
                out.push('-');
                true
            }
            _ => value_of_query(out, key, req),
        };
    };
    let _ = match key {
        "rcode" => write!(out, "{}", reply.rcode()),
        ">rflags" => {
            out.push_str(&reply.header.flags_string());
            Ok(())
        }
        "rsize" => write!(out, "{rsize}"),
        "duration" => write!(out, "{}s", req.start.elapsed().as_secs_f64()),
        _ => return value_of_query(out, key, req),
    };
    true
}

/// Appends the value of a placeholder that depends only on the query; false when unknown.
fn value_of_query(out: &mut String, key: &str, req: &Request) -> bool {
    use std::fmt::Write;
    let _ = match key {
        "remote" => {
            write_ip(out, req.client.ip());
            Ok(())
        }
        "port" => write!(out, "{}", req.client.port()),
        "local" => {
            write_ip(out, req.local.ip());
            Ok(())
        }
        ">id" => write!(out, "{}", req.msg.header.id),
        ">opcode" => write!(out, "{}", req.msg.header.opcode),
        "type" => write!(out, "{}", req.qtype()),
        "class" => write!(out, "{}", req.qclass()),
        "name" => {
            match req.msg.question() {
                Some(q) => q.name.write_lowercase(out),
                None => out.push('.'),
            }
            Ok(())
        }
        "proto" => {
            out.push_str(req.proto.as_str());
            Ok(())
        }
        "size" => write!(out, "{}", req.size),
        ">do" => write!(out, "{}", req.do_bit()),
        ">bufsize" => write!(out, "{}", req.bufsize()),
        // `{/label}`: a metadata value (`-` when unset or without the metadata plugin).
        _ if key.len() > 1 && key.starts_with('/') => {
            out.push_str(req.meta(&key[1..]).unwrap_or("-"));
            Ok(())
        }
        _ => return false,
    };
    true
}

/// CoreDNS's `response.Type` names.
fn type_name(t: MsgType) -> &'static str {
    match t {
        MsgType::NoError => "NOERROR",
        MsgType::NameError => "NXDOMAIN",
        MsgType::ServerError => "SERVFAIL",
        MsgType::NoData => "NODATA",
        MsgType::Delegation => "DELEGATION",
        MsgType::Meta => "META",
        MsgType::Update => "UPDATE",
        MsgType::OtherError => "OTHERERROR",
    }
}

/// `log/type` and `log/class` metadata of the reply (CoreDNS's `response.Typify` and
/// `Classify`), for `{/log/type}` in formats and later plugins.
fn set_response_metadata(req: &mut Request, out: &mut Outcome) {
    let t = match out.message_mut() {
        Some(m) => typify(m),
        None => {
            let mut m = req.reply();
            m.set_rcode(out.final_rcode());
            typify(&m)
        }
    };
    let class = match t {
        MsgType::NoError | MsgType::Delegation => "success",
        MsgType::NameError | MsgType::NoData => "denial",
        _ => "error",
    };
    req.set_meta("log/type", || type_name(t).to_string());
    req.set_meta("log/class", || class.to_string());
}

impl Handler for Log {
    fn name(&self) -> &'static str {
        "log"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let root = Name::root();
            let qname = req.msg.question().map(|q| &q.name).unwrap_or(&root);
            let Some(rule) = self.rules.iter().find(|r| qname.is_subdomain_of(&r.scope)) else {
                return next.run(req).await;
            };
            let mut out = next.run(req).await;
            if req.meta_enabled() {
                set_response_metadata(req, &mut out);
            }
            let rcode = out.final_rcode();
            if rule.classes.is_empty() || rule.classes.contains(&classify(rcode)) {
                // Like CoreDNS: log what was written, or a synthetic reply with the rcode.
                let synthetic;
                let (reply, rsize) = match &out.reply {
                    Some(Reply::Parsed(m)) => (m, m.uncompressed_len()),
                    Some(r @ Reply::Encoded(_)) => {
                        // A reply sent as bytes: the header is all the format needs.
                        synthetic = Message {
                            header: r.header(),
                            ..Message::default()
                        };
                        let rsize = r.uncompressed_len().unwrap_or_else(|| r.wire_len());
                        (&synthetic, rsize)
                    }
                    None => {
                        let mut m = req.reply();
                        m.set_rcode(rcode);
                        synthetic = m;
                        (&synthetic, synthetic.uncompressed_len())
                    }
                };
                let mut line = String::with_capacity(rule.format.len() + 96);
                line.push_str("[INFO] ");
                render_into(&mut line, &rule.format, req, Some((reply, rsize)));
                crate::log::query(line.as_bytes());
            }
            out
        })
    }
}
