//! `rewrite` rules: parsing the argument list of one rule (CoreDNS's error texts) and applying
//! it to a query, plus the response rules a matched rule hands back. No I/O. The `edns0` and
//! `cname` rule types live in `edns0.rs` and `cname.rs`.

use regex::Regex;
use sextant_wire::{Class, Message, Name, RData, RType, Rcode, Record};

use super::cname::CnameRule;
use super::edns0::{Edns0Rule, Env, Revert};

pub(crate) const MAX_REGEXP_LEN: usize = 10000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Stop,
    Continue,
}

/// How a rule matches the question name.
#[derive(Clone, Debug)]
pub(crate) enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Substring(String),
    Regex(Regex),
}

impl Matcher {
    fn is_match(&self, name: &str) -> bool {
        match self {
            Matcher::Exact(s) => name == s,
            Matcher::Prefix(s) => name.starts_with(s.as_str()),
            Matcher::Suffix(s) => name.ends_with(s.as_str()),
            Matcher::Substring(s) => name.contains(s.as_str()),
            Matcher::Regex(r) => r.is_match(name),
        }
    }

    fn parse(kind: &str, arg: &str, what: &str) -> Result<Matcher, String> {
        Ok(match kind.to_ascii_lowercase().as_str() {
            "exact" => Matcher::Exact(normalize(arg)),
            "prefix" => Matcher::Prefix(normalize(arg)),
            "suffix" => Matcher::Suffix(normalize(arg)),
            "substring" => Matcher::Substring(normalize(arg)),
            "regex" => {
                if arg.len() > MAX_REGEXP_LEN {
                    return Err(format!(
                        "regex pattern too long in a {what} rule: {} > {MAX_REGEXP_LEN}",
                        arg.len()
                    ));
                }
                Matcher::Regex(
                    Regex::new(arg)
                        .map_err(|_| format!("invalid regex pattern in a {what} rule: {arg}"))?,
                )
            }
            _ => {
                return Err(format!(
                "{what} rule supports only exact, prefix, suffix, substring, and regex name matching"
            ))
            }
        })
    }
}

/// String rewriters used by response rules.
#[derive(Clone, Debug)]
pub(crate) enum StrRewriter {
    /// Whole string replaced by the template when the regex matches (`{N}` groups).
    Regex(Regex, String),
    /// `orig` or `*.orig` → replacement (answer auto for exact/prefix/substring/regex).
    Remap(String, String),
    /// Suffix swap (answer auto for suffix rules).
    Suffix(String, String),
}

fn expand(re: &Regex, src: &str, template: &str) -> Option<String> {
    let caps = re.captures(src)?;
    let mut s = template.to_string();
    for (i, g) in caps.iter().enumerate() {
        s = s.replace(&format!("{{{i}}}"), g.map(|m| m.as_str()).unwrap_or(""));
    }
    Some(s)
}

impl StrRewriter {
    fn rewrite(&self, src: &str) -> String {
        match self {
            StrRewriter::Regex(re, t) => expand(re, src, t).unwrap_or_else(|| src.to_string()),
            StrRewriter::Remap(orig, rep) => {
                if src == orig {
                    return rep.clone();
                }
                if src.len() > orig.len() {
                    let i = src.len() - orig.len();
                    if src.as_bytes()[i - 1] == b'.' && src.is_char_boundary(i) && &src[i..] == orig
                    {
                        return format!("{}{rep}", &src[..i]);
                    }
                }
                src.to_string()
            }
            StrRewriter::Suffix(suf, rep) => match src.strip_suffix(suf.as_str()) {
                Some(before) => format!("{before}{rep}"),
                None => src.to_string(),
            },
        }
    }
}

/// What a matched rule changes in the reply.
#[derive(Clone, Debug)]
pub(crate) enum ResponseRule {
    Name(StrRewriter),
    Value(StrRewriter),
    Ttl(u32, u32),
    Rcode(Rcode, Rcode),
    /// Undo of an `edns0 ... revert` rule, on the reply's OPT and the query's OPT it echoes.
    Edns(Revert),
    /// A `cname` rule: rewrite a CNAME target and resolve the new target (the handler does it).
    Cname(CnameRule),
}

fn rewrite_name(n: &Name, rw: &StrRewriter) -> Option<Name> {
    let s = n.to_string();
    let new = rw.rewrite(&s);
    if new == s {
        return None;
    }
    Name::parse(&new).ok()
}

impl ResponseRule {
    /// Applies the rule to one record (or, with `None`, to a reply without records).
    pub(crate) fn apply(&self, rcode: &mut Rcode, rr: Option<&mut Record>) {
        match (self, rr) {
            (ResponseRule::Rcode(old, new), _) if rcode == old => *rcode = *new,
            (ResponseRule::Name(rw), Some(rr)) => {
                if let Some(n) = rewrite_name(&rr.name, rw) {
                    rr.name = n;
                }
            }
            (ResponseRule::Value(rw), Some(rr)) => {
                let target = match &mut rr.data {
                    RData::Srv(s) => Some(&mut s.target),
                    RData::Mx { exchange, .. } => Some(exchange),
                    RData::Cname(n) | RData::Ns(n) | RData::Dname(n) | RData::Ptr(n) => Some(n),
                    RData::Soa(s) => Some(&mut s.mname),
                    _ => None,
                };
                if let Some(t) = target {
                    if let Some(n) = rewrite_name(t, rw) {
                        *t = n;
                    }
                }
            }
            (ResponseRule::Ttl(min, max), Some(rr)) => {
                if rr.ttl < *min {
                    rr.ttl = *min;
                } else if rr.ttl > *max {
                    rr.ttl = *max;
                }
            }
            _ => {}
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// Question name rewrite: matcher, replacement, auto answer rewrite, static response rules.
    Name {
        matcher: Matcher,
        to: String,
        auto: bool,
        answers: Vec<ResponseRule>,
    },
    Type(RType, RType),
    Class(Class, Class),
    /// Matches the name and only changes the reply.
    Respond(Matcher, ResponseRule),
    Edns0(Edns0Rule),
    Cname(CnameRule),
}

#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub mode: Mode,
    pub kind: Kind,
}

/// CoreDNS's `plugin.Name(s).Normalize()`: lower case, trailing dot.
fn normalize(s: &str) -> String {
    let mut s = s.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn sub_expr_usage(s: &str) -> usize {
    (0..=100)
        .filter(|i| s.contains(&format!("{{{i}}}")))
        .count()
}

fn valid_regex(from: &str, to: &str) -> Result<Regex, String> {
    if from.len() > MAX_REGEXP_LEN {
        return Err(format!(
            "regex pattern too long: {} > {MAX_REGEXP_LEN}",
            from.len()
        ));
    }
    let re = Regex::new(from).map_err(|_| format!("invalid regex matching pattern: {from}"))?;
    if sub_expr_usage(to) > re.captures_len() - 1 {
        return Err(format!("the rewrite regex pattern ({to}) uses more subexpressions than its corresponding matching regex pattern ({from})"));
    }
    Ok(re)
}

fn parse_answers(name: &str, args: &[String]) -> Result<(bool, Vec<ResponseRule>), String> {
    let mut auto = false;
    let mut rules = Vec::new();
    let mut name_rules = 0;
    let mut last = "";
    let mut i = 0;
    if args.len() < 2 {
        return Err(format!("invalid arguments for {name} rule"));
    }
    while i < args.len() {
        if last.is_empty() && args[i] != "answer" {
            return Err(format!(
                "exceeded the number of arguments for a non-answer rule argument for {name} rule"
            ));
        }
        if args[i] == "answer" {
            i += 1;
        }
        if i >= args.len() {
            return Err(format!("type missing for answer rule for {name} rule"));
        }
        last = &args[i];
        i += 1;
        match last {
            "auto" => auto = true,
            "name" | "value" => {
                if args.len() - i < 2 {
                    return Err(format!(
                        "{last} answer rule for {name} rule: 2 arguments required"
                    ));
                }
                let re = valid_regex(&args[i], &args[i + 1])
                    .map_err(|e| format!("{last} answer rule for {name} rule: {e}"))?;
                let rw = StrRewriter::Regex(re, normalize(&args[i + 1]));
                if last == "name" {
                    rules.push(ResponseRule::Name(rw));
                    name_rules += 1;
                } else {
                    rules.push(ResponseRule::Value(rw));
                }
                i += 2;
            }
            other => {
                return Err(format!(
                    "invalid type \"{other}\" for answer rule for {name} rule"
                ))
            }
        }
    }
    if auto && name_rules > 0 {
        return Err(
            "auto name answer rule cannot be combined with explicit name anwer rules".into(),
        );
    }
    Ok((auto, rules))
}

fn parse_name(args: &[String]) -> Result<Kind, String> {
    if args.len() < 2 {
        return Err("too few arguments for a name rule".into());
    }
    let (kind, mut from, mut to) = if args.len() == 2 {
        (
            "exact".to_string(),
            normalize(&args[0]),
            normalize(&args[1]),
        )
    } else {
        let k = args[0].to_ascii_lowercase();
        if k == "regex" {
            (k, args[1].clone(), args[2].clone())
        } else {
            (k, normalize(&args[1]), normalize(&args[2]))
        }
    };
    if kind == "exact" || kind == "suffix" {
        if !from.ends_with('.') {
            from.push('.');
        }
        if !to.ends_with('.') {
            to.push('.');
        }
    }
    let (auto, mut answers) = if args.len() > 3 {
        parse_answers(&kind, &args[3..])?
    } else {
        (false, Vec::new())
    };
    let (matcher, auto) = match kind.as_str() {
        "exact" => {
            valid_regex(&to, &from)?;
            (Matcher::Exact(from), true)
        }
        "prefix" => (Matcher::Prefix(from), auto),
        "suffix" => {
            if auto {
                let rw = StrRewriter::Suffix(to.clone(), from.clone());
                answers.insert(0, ResponseRule::Value(rw.clone()));
                answers.insert(0, ResponseRule::Name(rw));
            }
            (Matcher::Suffix(from), false)
        }
        "substring" => (Matcher::Substring(from), auto),
        "regex" => {
            let re = valid_regex(&from, &to)?;
            to = normalize(&args[2]);
            (Matcher::Regex(re), auto)
        }
        other => return Err(format!("name rule supports only exact, prefix, suffix, substring, and regex name matching, received: {other}")),
    };
    Ok(Kind::Name {
        matcher,
        to,
        auto,
        answers,
    })
}

fn parse_ttl_value(v: &str) -> Option<(u32, u32)> {
    let parts: Vec<&str> = v.split('-').collect();
    let num = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match parts.as_slice() {
        [one] => num(one).map(|n| (n, n)),
        [lo, hi] => {
            let min = if lo.is_empty() { 0 } else { num(lo)? };
            let max = if hi.is_empty() {
                if lo.is_empty() {
                    return None;
                }
                2147483647
            } else {
                num(hi)?
            };
            (min <= max).then_some((min, max))
        }
        _ => None,
    }
}

fn parse_rcode_value(v: &str) -> Option<Rcode> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return match v.parse::<u16>() {
            Ok(n) if n <= 23 => Some(Rcode(n)),
            _ => None,
        };
    }
    Rcode::from_name(&v.to_ascii_uppercase())
}

fn parse_ttl(args: &[String]) -> Result<Kind, String> {
    if args.len() < 2 {
        return Err(format!("too few ({}) arguments for a ttl rule", args.len()));
    }
    if args.len() > 3 {
        return Err("many few arguments for a ttl rule".into());
    }
    let v = &args[args.len() - 1];
    let (min, max) =
        parse_ttl_value(v).ok_or_else(|| format!("invalid TTL '{v}' for a ttl rule"))?;
    let m = if args.len() == 3 {
        Matcher::parse(&args[0], &args[1], "ttl")?
    } else {
        Matcher::Exact(normalize(&args[0]))
    };
    Ok(Kind::Respond(m, ResponseRule::Ttl(min, max)))
}

fn parse_rcode(args: &[String]) -> Result<Kind, String> {
    if args.len() < 3 {
        return Err(format!(
            "too few ({}) arguments for a rcode rule",
            args.len()
        ));
    }
    let (old_s, new_s) = match args.len() {
        3 => (&args[1], &args[2]),
        4 => (&args[2], &args[3]),
        _ => return Err("many few arguments for a rcode rule".into()),
    };
    let old = parse_rcode_value(old_s)
        .ok_or_else(|| format!("invalid matching RCODE '{old_s}' for a rcode rule"))?;
    let new = parse_rcode_value(new_s)
        .ok_or_else(|| format!("invalid replacement RCODE '{new_s}' for a rcode rule"))?;
    let m = if args.len() == 4 {
        Matcher::parse(&args[0], &args[1], "rcode")?
    } else {
        Matcher::Exact(normalize(&args[0]))
    };
    Ok(Kind::Respond(m, ResponseRule::Rcode(old, new)))
}

impl Rule {
    /// Parses one rule from its flattened arguments (`[continue|stop] FIELD ...`).
    pub(crate) fn parse(args: &[String]) -> Result<Rule, String> {
        if args.is_empty() {
            return Err("no rule type specified for rewrite".into());
        }
        let a0 = args[0].to_ascii_lowercase();
        let (mode, field, rest, expect) = match a0.as_str() {
            "continue" | "stop" => {
                if args.len() < 2 {
                    return Err(format!("{a0} rule must begin with a rule type"));
                }
                let mode = if a0 == "continue" {
                    Mode::Continue
                } else {
                    Mode::Stop
                };
                (
                    mode,
                    args[1].to_ascii_lowercase(),
                    &args[2..],
                    args.len() - 1,
                )
            }
            _ => (Mode::Stop, a0.clone(), &args[1..], args.len()),
        };
        let kind = match field.as_str() {
            "answer" => return Err("response rewrites must begin with a name rule".into()),
            "name" => parse_name(rest)?,
            "class" | "type" => {
                if expect != 3 {
                    return Err(format!("{field} rules must have exactly two arguments"));
                }
                if field == "type" {
                    let t = |s: &String| {
                        RType::from_name(&s.to_ascii_uppercase())
                            .ok_or_else(|| format!("invalid type \"{}\"", s.to_ascii_uppercase()))
                    };
                    Kind::Type(t(&rest[0])?, t(&rest[1])?)
                } else {
                    let c = |s: &String| {
                        Class::from_name(&s.to_ascii_uppercase())
                            .ok_or_else(|| format!("invalid class \"{}\"", s.to_ascii_uppercase()))
                    };
                    Kind::Class(c(&rest[0])?, c(&rest[1])?)
                }
            }
            "ttl" => parse_ttl(rest)?,
            "rcode" => parse_rcode(rest)?,
            "edns0" => Kind::Edns0(Edns0Rule::parse(rest)?),
            "cname" => Kind::Cname(CnameRule::parse(rest)?),
            _ => return Err(format!("invalid rule type \"{}\"", args[0])),
        };
        Ok(Rule { mode, kind })
    }

    /// Applies the rule to the query. `Ok(None)`: did not match. `Ok(Some(rules))`: matched,
    /// with the response rules to apply later. `Err(name)`: the new name is not a valid name.
    #[cfg(test)]
    pub(crate) fn rewrite(&self, msg: &mut Message) -> Result<Option<Vec<ResponseRule>>, String> {
        let env = Env {
            client: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
            local: std::net::SocketAddr::from(([127, 0, 0, 1], 53)),
            proto: crate::plugin::Proto::Udp,
        };
        self.rewrite_env(msg, &env)
    }

    /// [`Rule::rewrite`] for a query from `env` (client and server addresses, transport).
    pub(crate) fn rewrite_env(
        &self,
        msg: &mut Message,
        env: &Env,
    ) -> Result<Option<Vec<ResponseRule>>, String> {
        match &self.kind {
            Kind::Edns0(r) => {
                return Ok(r
                    .rewrite(msg, env)
                    .map(|v| v.into_iter().map(ResponseRule::Edns).collect()))
            }
            Kind::Cname(c) => return Ok(c.active().then(|| vec![ResponseRule::Cname(c.clone())])),
            _ => {}
        }
        let Some(q) = msg.questions.first_mut() else {
            return Ok(None);
        };
        let name = q.name.to_lowercase_string();
        match &self.kind {
            Kind::Type(from, to) => {
                if q.qtype == *from {
                    q.qtype = *to;
                    return Ok(Some(Vec::new()));
                }
                Ok(None)
            }
            Kind::Class(from, to) => {
                if q.qclass == *from {
                    q.qclass = *to;
                    return Ok(Some(Vec::new()));
                }
                Ok(None)
            }
            Kind::Respond(m, r) => Ok(m.is_match(&name).then(|| vec![r.clone()])),
            Kind::Edns0(_) | Kind::Cname(_) => Ok(None),
            Kind::Name {
                matcher,
                to,
                auto,
                answers,
            } => {
                let new = match matcher {
                    Matcher::Exact(s) => (name == *s).then(|| to.clone()),
                    Matcher::Prefix(p) => name.strip_prefix(p.as_str()).map(|r| format!("{to}{r}")),
                    Matcher::Suffix(s) => name.strip_suffix(s.as_str()).map(|b| format!("{b}{to}")),
                    Matcher::Substring(s) => name
                        .contains(s.as_str())
                        .then(|| name.replace(s.as_str(), to)),
                    Matcher::Regex(re) => expand(re, &name, to),
                };
                let Some(new) = new else {
                    return Ok(None);
                };
                let Ok(parsed) = Name::parse(&new) else {
                    return Err(new);
                };
                q.name = parsed;
                let mut out = Vec::new();
                if *auto {
                    let rw = StrRewriter::Remap(new, name);
                    out.push(ResponseRule::Name(rw.clone()));
                    out.push(ResponseRule::Value(rw));
                }
                out.extend(answers.iter().cloned());
                Ok(Some(out))
            }
        }
    }
}
