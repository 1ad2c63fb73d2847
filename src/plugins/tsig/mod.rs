//! The `tsig` plugin (CoreDNS `plugin/tsig`): TSIG secrets, a check of every signed request to
//! its zones (MAC, key, time), REFUSED for unsigned requests of the query types or opcodes that
//! `require` names, and a TSIG on every message of the reply to a signed request — over UDP,
//! over TCP and on each message of a zone transfer — through the server's reply signer.

use std::path::Path;
use std::sync::Arc;

use sextant_corefile::{Directive, Error, Token};
use sextant_wire::tsig::TSIG;
use sextant_wire::{opcode, Name, RType, Rcode};

use crate::log::PluginLog;
use crate::pkg::clock::Clock;
use crate::pkg::tsig::{self, Secrets, Verdict};
use crate::pkg::zones;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

const LOG: PluginLog = PluginLog("tsig");

/// Which requests must be signed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Require {
    pub(crate) all: bool,
    pub(crate) set: Vec<u16>,
}

impl Require {
    fn matches(&self, v: u16) -> bool {
        self.all || self.set.contains(&v)
    }
}

/// The `tsig` line of a block, parsed.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) zones: Vec<Name>,
    pub(crate) secrets: Secrets,
    pub(crate) types: Require,
    pub(crate) opcodes: Require,
}

/// The secret of `secret NAME KEY` (or a `secrets` file's), base64 as BIND writes it.
fn decode_secret(s: &str) -> Option<Vec<u8>> {
    sextant_zone::base64_decode(s).filter(|k| !k.is_empty())
}

fn key_name(s: &str) -> Option<Name> {
    Name::parse(s).ok().map(|n| n.to_lowercase())
}

/// Reads a `secrets` file (`named.conf` key clauses, one statement a line, as CoreDNS reads
/// them): `key "NAME" {`, `algorithm ...;` (ignored), `secret "BASE64";`, `};`. Errors name
/// `file:line`.
pub(crate) fn parse_secrets_file(text: &str, file: &str) -> Result<Vec<(Name, Vec<u8>)>, String> {
    let mut out: Vec<(Name, Vec<u8>)> = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((no, line)) = lines.next() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = fields.first() else {
            continue;
        };
        if *first != "key" {
            return Err(format!("{file}:{no}: unexpected token {first:?}"));
        }
        let raw = fields
            .get(1)
            .map(|f| f.trim_matches(|c| c == '"' || c == '{'));
        let Some(name) = raw.filter(|r| !r.is_empty()) else {
            return Err(format!("{file}:{no}: expected key name {:?}", line));
        };
        let Some(name) = key_name(name) else {
            return Err(format!("{file}:{no}: invalid key name {name:?}"));
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("{file}:{no}: key {:?} redefined", name.to_string()));
        }
        let mut secret = None;
        for (no, line) in lines.by_ref() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(first) = fields.first() else {
                continue;
            };
            match *first {
                "algorithm" => continue,
                "secret" => {
                    let s = fields
                        .get(1)
                        .map(|f| f.trim_matches(|c| c == '"' || c == ';'))
                        .filter(|s| !s.is_empty());
                    let Some(s) = s else {
                        return Err(format!("{file}:{no}: expected secret key {line:?}"));
                    };
                    let Some(k) = decode_secret(s) else {
                        return Err(format!(
                            "{file}:{no}: secret of key {:?} is not valid base64",
                            name.to_string()
                        ));
                    };
                    secret = Some(k);
                }
                "}" | "};" => break,
                other => return Err(format!("{file}:{no}: unexpected token {other:?}")),
            }
        }
        let Some(k) = secret else {
            return Err(format!(
                "{file}: expected secret for key {:?}",
                name.to_string()
            ));
        };
        out.push((name, k));
    }
    Ok(out)
}

fn parse_types(sub: &Directive) -> Result<Require, Error> {
    let mut r = Require::default();
    let Some(first) = sub.args.first() else {
        return Err(sub.arg_err(&sub.name));
    };
    match first.text.as_str() {
        "all" => r.all = true,
        "none" => {}
        _ => {
            for a in &sub.args {
                // miekg/dns's StringToType: the mnemonic exactly as written.
                let t = sextant_zone::rtype_from_name(&a.text)
                    .filter(|t| sextant_zone::rtype_name(*t) == a.text)
                    .ok_or_else(|| sub.err_at(a, format!("unknown query type '{}'", a.text)))?;
                r.set.push(t.0);
            }
        }
    }
    Ok(r)
}

fn parse_opcodes(sub: &Directive) -> Result<Require, Error> {
    let mut r = Require::default();
    let Some(first) = sub.args.first() else {
        return Err(sub.arg_err(&sub.name));
    };
    match first.text.as_str() {
        "all" => r.all = true,
        "none" => {}
        _ => {
            for a in &sub.args {
                let op = match a.text.as_str() {
                    "QUERY" => opcode::QUERY,
                    "IQUERY" => opcode::IQUERY,
                    "STATUS" => opcode::STATUS,
                    "NOTIFY" => opcode::NOTIFY,
                    "UPDATE" => opcode::UPDATE,
                    _ => return Err(sub.err_at(a, format!("unknown opcode '{}'", a.text))),
                };
                r.set.push(op as u16);
            }
        }
    }
    Ok(r)
}

fn add_secret(
    secrets: &mut Secrets,
    sub: &Directive,
    at: &Token,
    name: Name,
    k: Vec<u8>,
) -> Result<(), Error> {
    if !secrets.insert(name.clone(), k) {
        return Err(sub.err_at(at, format!("key {:?} redefined", name.to_string())));
    }
    Ok(())
}

pub(crate) fn parse(d: &Directive, block: &[String], base: &Path) -> Result<Config, Error> {
    let zones = zones::from_args(d, &d.args, block)?;
    let mut c = Config {
        zones,
        secrets: Secrets::default(),
        types: Require::default(),
        opcodes: Require::default(),
    };
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "secret" => {
                if sub.args.len() != 2 {
                    return Err(sub.arg_err(&sub.name));
                }
                let (n, k) = (&sub.args[0], &sub.args[1]);
                let name = key_name(&n.text)
                    .ok_or_else(|| sub.err_at(n, format!("invalid key name {:?}", n.text)))?;
                let key = decode_secret(&k.text).ok_or_else(|| {
                    sub.err_at(
                        k,
                        format!("secret of key {:?} is not valid base64", name.to_string()),
                    )
                })?;
                add_secret(&mut c.secrets, sub, n, name, key)?;
            }
            "secrets" => {
                if sub.args.len() != 1 {
                    return Err(sub.arg_err(&sub.name));
                }
                let a = &sub.args[0];
                let path = base.join(&a.text);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| sub.err_at(a, format!("open {}: {e}", a.text)))?;
                let keys = parse_secrets_file(&text, &a.text).map_err(|e| sub.err_at(a, e))?;
                for (name, k) in keys {
                    add_secret(&mut c.secrets, sub, a, name, k)?;
                }
            }
            "require" => c.types = parse_types(sub)?,
            "require_opcode" => c.opcodes = parse_opcodes(sub)?,
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    Ok(c)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let c = parse(lines[0], &ctx.block.zones, Path::new("."))?;
    let clock = ctx.clock();
    ctx.add_handler(Arc::new(TsigPlugin {
        c: Arc::new(c),
        clock,
    }));
    Ok(())
}

/// The handler.
pub(crate) struct TsigPlugin {
    c: Arc<Config>,
    clock: Clock,
}

impl TsigPlugin {
    fn required(&self, qtype: RType, op: u8) -> bool {
        self.c.types.matches(qtype.0) || self.c.opcodes.matches(op as u16)
    }
}

impl Handler for TsigPlugin {
    fn name(&self) -> &'static str {
        "tsig"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let signed = req.msg.additional.last().is_some_and(|r| r.rtype == TSIG);
        let qtype = req.qtype();
        let op = req.msg.header.opcode;
        if (!signed && !self.required(qtype, op))
            || zones::matches(&self.c.zones, &req.qname()).is_none()
        {
            return next.run(req);
        }
        if !signed {
            LOG.debug(&format!("rejecting '{qtype}' request without TSIG"));
            let mut m = req.reply();
            m.set_rcode(Rcode::REFUSED);
            return Box::pin(async move { Outcome::reply("tsig", m) });
        }
        // The next plugins do not see the TSIG (CoreDNS strips it too).
        req.msg.additional.pop();
        let now = self.clock.unix();
        let checked = req
            .raw
            .as_deref()
            .and_then(|raw| tsig::check(raw, &self.c.secrets, now));
        let clock = self.clock.clone();
        Box::pin(async move {
            let Some(checked) = checked else {
                // A TSIG that cannot be read: FORMERR, unsigned.
                let mut m = req.reply();
                m.set_rcode(Rcode::FORMERR);
                return Outcome::reply("tsig", m);
            };
            let mut out = if let Verdict::Bad(e) = checked.verdict {
                LOG.debug(&format!(
                    "TSIG validation failed: {qtype} {}",
                    match e {
                        17 => "dns: bad signature key",
                        18 => "dns: bad time",
                        _ => "dns: bad signature",
                    }
                ));
                let mut m = req.reply();
                m.set_rcode(Rcode::NOTAUTH);
                Outcome::reply("tsig", m)
            } else {
                next.run(req).await
            };
            let signer = tsig::Signer::new(checked, Box::new(move || clock.unix()));
            out.ext_mut().signer = Some(Box::new(signer));
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_corefile::parse_str;

    fn conf(text: &str) -> Result<Config, Error> {
        let cf = parse_str("Corefile", text, Path::new(".")).expect("corefile");
        let d = cf.blocks[0]
            .directives
            .iter()
            .find(|d| d.name.text == "tsig")
            .unwrap();
        parse(d, &[".".to_string()], Path::new("."))
    }

    const K: &str = "NoTCJU+DMqFWywaPyxSijrDEA/eC3nK0xi3AMEZuPVk=";

    #[test]
    fn options() {
        let c = conf(&format!(". {{\n tsig example.com {{\n  secret Key.Name {K}\n  require A AAAA\n  require_opcode UPDATE NOTIFY\n }}\n}}\n")).unwrap();
        assert_eq!(c.zones, [Name::parse("example.com.").unwrap()]);
        assert_eq!(c.secrets.len(), 1);
        assert!(c.secrets.get(&Name::parse("key.name.").unwrap()).is_some());
        assert_eq!(c.types.set, [1, 28]);
        assert_eq!(c.opcodes.set, [5, 4]);
        let c = conf(&format!(
            ". {{\n tsig {{\n  secret k {K}\n  require all\n  require_opcode none\n }}\n}}\n"
        ))
        .unwrap();
        assert!(c.types.all && !c.opcodes.all && c.opcodes.set.is_empty());
        assert_eq!(c.zones, [Name::root()]);
        let c = conf(&format!(". {{\n tsig {{\n  secret k {K}\n }}\n}}\n")).unwrap();
        assert_eq!(c.types, Require::default());
    }

    #[test]
    fn errors_name_position() {
        let e = conf(". {\n tsig {\n  secret k not*base64\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:12: secret: secret of key \"k.\" is not valid base64"
        );
        let e = conf(&format!(
            ". {{\n tsig {{\n  secret k {K}\n  secret K. {K}\n }}\n}}\n"
        ))
        .unwrap_err();
        assert_eq!(e.to_string(), "Corefile:4:10: secret: key \"k.\" redefined");
        let e = conf(". {\n tsig {\n  secret k\n }\n}\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Corefile:3:3: secret: Wrong argument count"),
            "{e}"
        );
        let e = conf(". {\n tsig {\n  require axfr\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:11: require: unknown query type 'axfr'"
        );
        let e = conf(". {\n tsig {\n  require_opcode PUSH\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:18: require_opcode: unknown opcode 'PUSH'"
        );
        let e = conf(". {\n tsig {\n  require\n }\n}\n").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("Corefile:3:3: require: Wrong argument count"));
        let e = conf(". {\n tsig {\n  bogus\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:3: bogus: unknown property 'bogus'"
        );
        let e = conf(". {\n tsig {\n  secrets /nonexistent/keys\n }\n}\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Corefile:3:11: secrets: open /nonexistent/keys:"),
            "{e}"
        );
    }

    #[test]
    fn secrets_files() {
        let ok = format!("key \"a.example.\" {{\n  algorithm hmac-sha256;\n  secret \"{K}\";\n}};\n\nkey b {{\n secret {K}\n}}\n");
        let keys = parse_secrets_file(&ok, "keys.conf").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].0.to_string(), "a.example.");
        for (text, want) in [
            ("bogus\n", "keys.conf:1: unexpected token \"bogus\""),
            ("key {\n", "keys.conf:1: expected key name \"key {\""),
            (
                "key a {\n secret \"***\";\n};\n",
                "keys.conf:2: secret of key \"a.\" is not valid base64",
            ),
            (
                "key a {\n algorithm x;\n};\n",
                "keys.conf: expected secret for key \"a.\"",
            ),
            (
                "key a {\n banana;\n};\n",
                "keys.conf:2: unexpected token \"banana;\"",
            ),
        ] {
            assert_eq!(parse_secrets_file(text, "keys.conf").unwrap_err(), want);
        }
        let dup = format!("key a {{\n secret {K};\n}};\nkey A. {{\n secret {K};\n}};\n");
        assert_eq!(
            parse_secrets_file(&dup, "k").unwrap_err(),
            "k:4: key \"a.\" redefined"
        );
    }
}
