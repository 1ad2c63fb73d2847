//! `rewrite` rules: parsing the argument list of one rule (CoreDNS's error texts) and applying
//! it to a query, plus the response rules a matched rule hands back. No I/O. The `edns0` and
//! `cname` rule types live in `edns0.rs` and `cname.rs`.

use regex::Regex;
use sextant_wire::{Class, Message, Name, RData, RType, Rcode, Record};

use super::cname::CnameRule;
use super::edns0::{Edns0Rule, Env, Revert};

pub(crate) const MAX_REGEXP_LEN: usize = 10000;

/// Why a `rewrite` rule does not parse, with CoreDNS's texts (its typos included). Rule types
/// are the words users write (`ttl`, `rcode`, `cname`, `local`, ...).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError {
    #[error("no rule type specified for rewrite")]
    NoRuleType,
    #[error("{0} rule must begin with a rule type")]
    ModeWithoutType(String),
    #[error("response rewrites must begin with a name rule")]
    AnswerFirst,
    #[error("invalid rule type \"{0}\"")]
    UnknownRuleType(String),
    #[error("{0} rules must have exactly two arguments")]
    TwoArguments(String),
    #[error("invalid type \"{0}\"")]
    InvalidType(String),
    #[error("invalid class \"{0}\"")]
    InvalidClass(String),

    #[error("too few arguments for a name rule")]
    NameTooFew,
    #[error("name rule supports only exact, prefix, suffix, substring, and regex name matching, received: {0}")]
    NameMatchKind(String),
    #[error("too few ({n}) arguments for a {rule} rule")]
    TooFew { rule: &'static str, n: usize },
    /// CoreDNS's text for too many arguments.
    #[error("many few arguments for a {0} rule")]
    TooMany(&'static str),
    #[error("{0} rule supports only exact, prefix, suffix, substring, and regex name matching")]
    MatchKind(&'static str),
    #[error("regex pattern too long in a {rule} rule: {len} > {max}", max = MAX_REGEXP_LEN)]
    RuleRegexTooLong { rule: &'static str, len: usize },
    #[error("invalid regex pattern in a {rule} rule: {pattern}")]
    RuleRegex { rule: &'static str, pattern: String },
    #[error("invalid TTL '{0}' for a ttl rule")]
    Ttl(String),
    #[error("invalid matching RCODE '{0}' for a rcode rule")]
    MatchingRcode(String),
    #[error("invalid replacement RCODE '{0}' for a rcode rule")]
    ReplacementRcode(String),

    // A name rule's regular expressions and its `answer` rules.
    #[error("regex pattern too long: {0} > {max}", max = MAX_REGEXP_LEN)]
    RegexTooLong(usize),
    #[error("invalid regex matching pattern: {0}")]
    Regex(String),
    #[error("the rewrite regex pattern ({to}) uses more subexpressions than its corresponding matching regex pattern ({from})")]
    SubExpressions { to: String, from: String },
    #[error("invalid arguments for {0} rule")]
    AnswerArguments(String),
    #[error("exceeded the number of arguments for a non-answer rule argument for {0} rule")]
    NotAnAnswer(String),
    #[error("type missing for answer rule for {0} rule")]
    AnswerTypeMissing(String),
    #[error("{field} answer rule for {rule} rule: 2 arguments required")]
    AnswerTwoArguments { field: String, rule: String },
    #[error("{field} answer rule for {rule} rule: {source}")]
    AnswerRegex {
        field: String,
        rule: String,
        source: Box<RewriteError>,
    },
    #[error("invalid type \"{field}\" for answer rule for {rule} rule")]
    AnswerType { field: String, rule: String },
    /// CoreDNS's text (`anwer`).
    #[error("auto name answer rule cannot be combined with explicit name anwer rules")]
    AutoAndNames,

    // `edns0` rules.
    #[error("too few arguments for an EDNS0 rule")]
    Edns0TooFew,
    #[error("invalid action: {0:?}")]
    Edns0Action(String),
    #[error("invalid rule type {0:?}")]
    Edns0RuleType(String),
    /// `local` and `subnet`.
    #[error("EDNS0 {0} rules require three or four args")]
    Edns0ThreeOrFour(&'static str),
    #[error("EDNS0 NSID rules can accept no more than one arg")]
    Edns0Nsid,
    /// `{0} unset action requires exactly {1}`: the rule type and "two arguments"/"one argument".
    #[error("{0} unset action requires exactly {1}")]
    Edns0Unset(&'static str, &'static str),
    #[error("unsupported variable name {0:?}")]
    Edns0Variable(String),
    #[error("invalid IPv4 bit mask length {0}")]
    Edns0V4Mask(u64),
    #[error("invalid IPv6 bit mask length {0}")]
    Edns0V6Mask(u64),
    /// Go's `strconv.ParseUint` texts.
    #[error("strconv.ParseUint: parsing {0:?}: invalid syntax")]
    UintSyntax(String),
    #[error("strconv.ParseUint: parsing {0:?}: value out of range")]
    UintRange(String),
    /// Go's `hex.DecodeString` texts.
    #[error("encoding/hex: invalid byte: {}", hex_byte(*.0))]
    HexByte(u8),
    #[error("encoding/hex: odd length hex string")]
    HexOddLength,

    // `cname` rules.
    #[error("unknown cname rewrite type: {0}")]
    CnameType(String),
    /// The regex crate's reason (the last line of its report).
    #[error("invalid cname rewrite regex pattern: {0}")]
    CnameRegex(String),
}

/// How Go prints a bad hex byte: `U+0067 'g'`, without the quoted character when it is not
/// printable.
fn hex_byte(c: u8) -> String {
    if c.is_ascii_graphic() || c == b' ' {
        format!("U+{:04X} '{}'", c, c as char)
    } else {
        format!("U+{:04X}", c)
    }
}

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

    fn parse(kind: &str, arg: &str, what: &'static str) -> Result<Matcher, RewriteError> {
        Ok(match kind.to_ascii_lowercase().as_str() {
            "exact" => Matcher::Exact(normalize(arg)),
            "prefix" => Matcher::Prefix(normalize(arg)),
            "suffix" => Matcher::Suffix(normalize(arg)),
            "substring" => Matcher::Substring(normalize(arg)),
            "regex" => {
                if arg.len() > MAX_REGEXP_LEN {
                    return Err(RewriteError::RuleRegexTooLong {
                        rule: what,
                        len: arg.len(),
                    });
                }
                Matcher::Regex(Regex::new(arg).map_err(|_| RewriteError::RuleRegex {
                    rule: what,
                    pattern: arg.to_string(),
                })?)
            }
            _ => return Err(RewriteError::MatchKind(what)),
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

fn valid_regex(from: &str, to: &str) -> Result<Regex, RewriteError> {
    if from.len() > MAX_REGEXP_LEN {
        return Err(RewriteError::RegexTooLong(from.len()));
    }
    let re = Regex::new(from).map_err(|_| RewriteError::Regex(from.to_string()))?;
    if sub_expr_usage(to) > re.captures_len() - 1 {
        return Err(RewriteError::SubExpressions {
            to: to.to_string(),
            from: from.to_string(),
        });
    }
    Ok(re)
}

fn parse_answers(name: &str, args: &[String]) -> Result<(bool, Vec<ResponseRule>), RewriteError> {
    let mut auto = false;
    let mut rules = Vec::new();
    let mut name_rules = 0;
    let mut last = "";
    let mut i = 0;
    if args.len() < 2 {
        return Err(RewriteError::AnswerArguments(name.to_string()));
    }
    while i < args.len() {
        if last.is_empty() && args[i] != "answer" {
            return Err(RewriteError::NotAnAnswer(name.to_string()));
        }
        if args[i] == "answer" {
            i += 1;
        }
        if i >= args.len() {
            return Err(RewriteError::AnswerTypeMissing(name.to_string()));
        }
        last = &args[i];
        i += 1;
        match last {
            "auto" => auto = true,
            "name" | "value" => {
                if args.len() - i < 2 {
                    return Err(RewriteError::AnswerTwoArguments {
                        field: last.to_string(),
                        rule: name.to_string(),
                    });
                }
                let re =
                    valid_regex(&args[i], &args[i + 1]).map_err(|e| RewriteError::AnswerRegex {
                        field: last.to_string(),
                        rule: name.to_string(),
                        source: Box::new(e),
                    })?;
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
                return Err(RewriteError::AnswerType {
                    field: other.to_string(),
                    rule: name.to_string(),
                })
            }
        }
    }
    if auto && name_rules > 0 {
        return Err(RewriteError::AutoAndNames);
    }
    Ok((auto, rules))
}

fn parse_name(args: &[String]) -> Result<Kind, RewriteError> {
    if args.len() < 2 {
        return Err(RewriteError::NameTooFew);
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
        other => return Err(RewriteError::NameMatchKind(other.to_string())),
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

fn parse_ttl(args: &[String]) -> Result<Kind, RewriteError> {
    if args.len() < 2 {
        return Err(RewriteError::TooFew {
            rule: "ttl",
            n: args.len(),
        });
    }
    if args.len() > 3 {
        return Err(RewriteError::TooMany("ttl"));
    }
    let v = &args[args.len() - 1];
    let (min, max) = parse_ttl_value(v).ok_or_else(|| RewriteError::Ttl(v.clone()))?;
    let m = if args.len() == 3 {
        Matcher::parse(&args[0], &args[1], "ttl")?
    } else {
        Matcher::Exact(normalize(&args[0]))
    };
    Ok(Kind::Respond(m, ResponseRule::Ttl(min, max)))
}

fn parse_rcode(args: &[String]) -> Result<Kind, RewriteError> {
    if args.len() < 3 {
        return Err(RewriteError::TooFew {
            rule: "rcode",
            n: args.len(),
        });
    }
    let (old_s, new_s) = match args.len() {
        3 => (&args[1], &args[2]),
        4 => (&args[2], &args[3]),
        _ => return Err(RewriteError::TooMany("rcode")),
    };
    let old = parse_rcode_value(old_s).ok_or_else(|| RewriteError::MatchingRcode(old_s.clone()))?;
    let new =
        parse_rcode_value(new_s).ok_or_else(|| RewriteError::ReplacementRcode(new_s.clone()))?;
    let m = if args.len() == 4 {
        Matcher::parse(&args[0], &args[1], "rcode")?
    } else {
        Matcher::Exact(normalize(&args[0]))
    };
    Ok(Kind::Respond(m, ResponseRule::Rcode(old, new)))
}

impl Rule {
    /// Parses one rule from its flattened arguments (`[continue|stop] FIELD ...`).
    pub(crate) fn parse(args: &[String]) -> Result<Rule, RewriteError> {
        if args.is_empty() {
            return Err(RewriteError::NoRuleType);
        }
        let a0 = args[0].to_ascii_lowercase();
        let (mode, field, rest, expect) = match a0.as_str() {
            "continue" | "stop" => {
                if args.len() < 2 {
                    return Err(RewriteError::ModeWithoutType(a0));
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
            "answer" => return Err(RewriteError::AnswerFirst),
            "name" => parse_name(rest)?,
            "class" | "type" => {
                if expect != 3 {
                    return Err(RewriteError::TwoArguments(field));
                }
                if field == "type" {
                    let t = |s: &String| {
                        RType::from_name(&s.to_ascii_uppercase())
                            .ok_or_else(|| RewriteError::InvalidType(s.to_ascii_uppercase()))
                    };
                    Kind::Type(t(&rest[0])?, t(&rest[1])?)
                } else {
                    let c = |s: &String| {
                        Class::from_name(&s.to_ascii_uppercase())
                            .ok_or_else(|| RewriteError::InvalidClass(s.to_ascii_uppercase()))
                    };
                    Kind::Class(c(&rest[0])?, c(&rest[1])?)
                }
            }
            "ttl" => parse_ttl(rest)?,
            "rcode" => parse_rcode(rest)?,
            "edns0" => Kind::Edns0(Edns0Rule::parse(rest)?),
            "cname" => Kind::Cname(CnameRule::parse(rest)?),
            _ => return Err(RewriteError::UnknownRuleType(args[0].clone())),
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
