//! The `template` plugin: answers queries that match a class, type, zones and regular
//! expressions with records made from Go templates ([`gotmpl`]) and read as presentation-form
//! records ([`rrtext`]), with an rcode, an extended DNS error, and CNAME targets resolved
//! through the whole server for A/AAAA questions.

mod gotmpl;
mod rrtext;

use std::sync::Arc;

use regex::Regex;
use sextant_corefile::{Directive, Error, Token};
use sextant_wire::{Class, Edns, EdnsOption, Name, RData, RType, Rcode, Record};

use crate::metrics::metrics;
use crate::pkg::fallthrough::Fall;
use crate::pkg::zones;
use crate::plugin::{BoxFuture, Handler, Metadata, Next, Outcome, Request, SetupCtx};

use gotmpl::{Template as GoTemplate, Value};

metrics! {
    MATCHES: CounterVec("coredns_template_matches_total", "Counter of template regex matches.", ["server", "zone", "view", "class", "type"]);
    FAILURES: CounterVec("coredns_template_template_failures_total", "Counter of go template failures.", ["server", "zone", "view", "class", "type", "section", "template"]);
    RR_FAILURES: CounterVec("coredns_template_rr_failures_total", "Counter of mis-templated RRs.", ["server", "zone", "view", "class", "type", "section", "template"]);
}

/// The longest regular expression accepted (CoreDNS's limit against costly compiles).
const MAX_REGEX_LEN: usize = 10000;
/// EDNS option code of Extended DNS Errors (RFC 8914).
const EDE: u16 = 15;

/// One compiled record template and its Go tree text (the `template` metric label).
struct RrTemplate {
    tmpl: GoTemplate,
    label: String,
}

struct Tmpl {
    zones: Vec<Name>,
    /// `None`: ANY.
    qclass: Option<Class>,
    qtype: Option<RType>,
    regex: Vec<Regex>,
    answer: Vec<RrTemplate>,
    additional: Vec<RrTemplate>,
    authority: Vec<RrTemplate>,
    rcode: Rcode,
    ederror: Option<(u16, String)>,
    fall: Fall,
}

pub(crate) struct TemplatePlugin {
    zones: Vec<Name>,
    templates: Vec<Tmpl>,
}

/// miekg/dns's `StringToClass`: exact mnemonics.
fn parse_class(t: &str) -> Option<Option<Class>> {
    match t {
        "ANY" => Some(None),
        "IN" | "CH" | "HS" | "NONE" => Class::from_name(t).map(Some),
        "CS" => Some(Some(Class(2))),
        _ => None,
    }
}

/// miekg/dns's `StringToType`: exact upper-case mnemonics.
fn parse_type(t: &str) -> Option<Option<RType>> {
    if t == "ANY" {
        return Some(None);
    }
    if t.starts_with("TYPE") || t != t.to_ascii_uppercase() {
        return None;
    }
    RType::from_name(t).map(Some)
}

/// miekg/dns's `StringToRcode`.
fn parse_rcode(t: &str) -> Option<Rcode> {
    if t.bytes().all(|b| b.is_ascii_digit()) || t != t.to_ascii_uppercase() {
        return None;
    }
    Rcode::from_name(t)
}

fn compile(
    d: &Directive,
    section: &'static str,
    t: &Token,
    out: &mut Vec<RrTemplate>,
) -> Result<(), Error> {
    let tmpl = GoTemplate::parse(section, &t.text)
        .map_err(|e| d.err_at(t, format!("could not compile template: {}, {e}", t.text)))?;
    out.push(RrTemplate {
        label: tmpl.to_string(),
        tmpl,
    });
    Ok(())
}

fn parse_one(d: &Directive, block_zones: &[String]) -> Result<Tmpl, Error> {
    d.arg_count(2, usize::MAX)?;
    let qclass = parse_class(&d.args[0].text).ok_or_else(|| {
        d.err_at(
            &d.args[0],
            format!("invalid query class {}", d.args[0].text),
        )
    })?;
    let qtype = parse_type(&d.args[1].text)
        .ok_or_else(|| d.err_at(&d.args[1], format!("invalid RR class {}", d.args[1].text)))?;
    let zones = zones::from_args(d, &d.args[2..], block_zones)?;
    let mut t = Tmpl {
        zones,
        qclass,
        qtype,
        regex: Vec::new(),
        answer: Vec::new(),
        additional: Vec::new(),
        authority: Vec::new(),
        rcode: Rcode::NOERROR,
        ederror: None,
        fall: Fall::default(),
    };
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "match" => {
                sub.arg_count(1, usize::MAX)?;
                for a in &sub.args {
                    if a.text.len() > MAX_REGEX_LEN {
                        return Err(sub.err_at(
                            a,
                            format!("regex pattern too long: {} > {MAX_REGEX_LEN}", a.text.len()),
                        ));
                    }
                    let re = Regex::new(&a.text).map_err(|e| {
                        let e = e.to_string().replace('\n', " ");
                        sub.err_at(a, format!("could not parse regex: {}, {e}", a.text))
                    })?;
                    t.regex.push(re);
                }
            }
            s @ ("answer" | "additional" | "authority") => {
                sub.arg_count(1, usize::MAX)?;
                let (section, list) = match s {
                    "answer" => ("answer", &mut t.answer),
                    "additional" => ("additional", &mut t.additional),
                    _ => ("authority", &mut t.authority),
                };
                for a in &sub.args {
                    compile(sub, section, a, list)?;
                }
            }
            "rcode" => {
                sub.arg_count(1, 1)?;
                let a = &sub.args[0];
                t.rcode = parse_rcode(&a.text)
                    .ok_or_else(|| sub.err_at(a, format!("unknown rcode {}", a.text)))?;
            }
            "ederror" => {
                sub.arg_count(1, 2)?;
                let a = &sub.args[0];
                let code: u16 = a.text.parse().map_err(|_| {
                    sub.err_at(
                        a,
                        format!("error parsing extended DNS error code {}", a.text),
                    )
                })?;
                let reason = sub.args.get(1).map(|r| r.text.clone()).unwrap_or_default();
                t.ederror = Some((code, reason));
            }
            "fallthrough" => t.fall = Fall::parse(sub)?,
            // Accepted and ignored, as in CoreDNS (CNAME targets are always resolved).
            "upstream" => {}
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    if t.regex.is_empty() {
        t.regex.push(Regex::new(".*").expect("constant regex"));
    }
    Ok(t)
}

fn parse(lines: &[&Directive], block_zones: &[String]) -> Result<TemplatePlugin, Error> {
    let mut templates = Vec::new();
    let mut zones = Vec::new();
    for d in lines {
        let t = parse_one(d, block_zones)?;
        zones.extend(t.zones.iter().cloned());
        templates.push(t);
    }
    Ok(TemplatePlugin { zones, templates })
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let p = parse(lines, &ctx.block.zones)?;
    std::sync::LazyLock::force(&MATCHES);
    std::sync::LazyLock::force(&FAILURES);
    std::sync::LazyLock::force(&RR_FAILURES);
    ctx.add_handler(Arc::new(p));
    Ok(())
}

/// The data a template runs on, and `.Meta`.
struct TData<'a> {
    root: Value,
    meta: Option<&'a Metadata>,
}

impl gotmpl::Data for TData<'_> {
    fn root(&self) -> &Value {
        &self.root
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        match (name, args) {
            ("Meta", [Value::Str(label)]) => Ok(Value::Str(
                self.meta
                    .and_then(|m| m.get(label))
                    .unwrap_or_default()
                    .to_string(),
            )),
            ("Meta", [other]) => Err(format!(
                "wrong type for value; expected string; got {other:?}"
            )),
            (_, a) => Err(format!(
                "wrong number of args for {name}: want 1 got {}",
                a.len()
            )),
        }
    }
}

/// miekg/dns's `Question.String()`.
fn question_text(name: &Name, qclass: Class, qtype: RType) -> String {
    format!(";{name}\t{qclass}\t {qtype}")
}

/// What one match gives the templates.
struct Matched {
    zone: String,
    class: String,
    rtype: String,
    root: Value,
}

impl Tmpl {
    /// `Ok(Some)`: a match; `Ok(None)`: no match, fall through; `Err(())`: no match and no
    /// fallthrough (SERVFAIL).
    fn matches(&self, req: &Request, lname: &str) -> Result<Option<Matched>, ()> {
        let Some(q) = req.msg.question() else {
            return Ok(None);
        };
        let Some(zone) = self
            .zones
            .iter()
            .filter(|z| q.name.is_subdomain_of(z))
            .max_by_key(|z| z.wire_len())
        else {
            return Ok(None);
        };
        let any_class = Class::ANY;
        if let Some(c) = self.qclass {
            if q.qclass != any_class && q.qclass != c {
                return Ok(None);
            }
        }
        if let Some(t) = self.qtype {
            if q.qtype != RType::ANY && q.qtype != t {
                return Ok(None);
            }
        }
        for re in &self.regex {
            let Some(caps) = re.captures(lname) else {
                continue;
            };
            let s = |x: &str| Value::Str(x.to_string());
            let matches: Vec<Value> = caps
                .iter()
                .map(|m| s(m.map_or("", |m| m.as_str())))
                .collect();
            let mut group: Vec<(String, Value)> = matches
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v.clone()))
                .collect();
            for (i, n) in re.capture_names().enumerate() {
                if let Some(n) = n {
                    group.retain(|(k, _)| k != n);
                    group.push((n.to_string(), matches[i].clone()));
                }
            }
            let class = if q.qclass != any_class {
                q.qclass.to_string()
            } else {
                self.qclass.map_or("ANY".to_string(), |c| c.to_string())
            };
            let rtype = if q.qtype != RType::ANY {
                q.qtype.to_string()
            } else {
                self.qtype.map_or("ANY".to_string(), |t| t.to_string())
            };
            let zone_s = zone.to_lowercase_string();
            let h = &req.msg.header;
            let question = Value::Struct(
                vec![
                    ("Name", s(&q.name.to_string())),
                    ("Qtype", Value::Uint(q.qtype.0 as u64)),
                    ("Qclass", Value::Uint(q.qclass.0 as u64)),
                ],
                question_text(&q.name, q.qclass, q.qtype),
            );
            let message = Value::Struct(
                vec![
                    ("Id", Value::Uint(h.id as u64)),
                    ("Opcode", Value::Int(h.opcode as i64)),
                    ("RecursionDesired", Value::Bool(h.rd)),
                    ("CheckingDisabled", Value::Bool(h.cd)),
                    ("AuthenticatedData", Value::Bool(h.ad)),
                    ("Question", Value::List(vec![question.clone()])),
                ],
                format!(
                    ";; opcode: QUERY, id: {}\n;; QUESTION SECTION:\n{}\n",
                    h.id,
                    question_text(&q.name, q.qclass, q.qtype)
                ),
            );
            let ip = match req.client.ip() {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
                v4 => v4,
            };
            let root = Value::Struct(
                vec![
                    ("Zone", s(&zone_s)),
                    ("Name", s(lname)),
                    ("Regex", s(re.as_str())),
                    ("Match", Value::List(matches)),
                    ("Group", Value::map(group)),
                    ("Class", s(&class)),
                    ("Type", s(&rtype)),
                    ("Message", message),
                    ("Question", question),
                    ("Remote", s(&ip.to_string())),
                    ("Meta", Value::Method("Meta")),
                ],
                "{...}".to_string(),
            );
            return Ok(Some(Matched {
                zone: zone_s,
                class,
                rtype,
                root,
            }));
        }
        if self.fall.through(&q.name) {
            Ok(None)
        } else {
            Err(())
        }
    }
}

/// Runs one record template; failures are counted and returned as the query's error.
fn execute(
    req: &Request,
    m: &Matched,
    section: &'static str,
    t: &RrTemplate,
) -> Result<Option<Record>, String> {
    let data = TData {
        root: m.root.clone(),
        meta: req.meta.as_deref(),
    };
    let labels = [
        &*req.server,
        m.zone.as_str(),
        "",
        m.class.as_str(),
        m.rtype.as_str(),
        section,
        t.label.as_str(),
    ];
    let out = t.tmpl.execute(&data).inspect_err(|_| {
        FAILURES.with_label_values(&labels).inc();
    })?;
    rrtext::parse_rr(&out).inspect_err(|_| {
        RR_FAILURES.with_label_values(&labels).inc();
    })
}

impl TemplatePlugin {
    async fn answer(&self, req: &mut Request, t: &Tmpl, m: Matched) -> Outcome {
        MATCHES
            .with_label_values(&[&*req.server, &m.zone, "", &m.class, &m.rtype])
            .inc();
        if t.rcode == Rcode::SERVFAIL {
            return Outcome::rcode("template", Rcode::SERVFAIL);
        }
        let mut msg = req.reply();
        msg.header.aa = true;
        msg.set_rcode(t.rcode);
        let qtype = req.qtype();
        for a in &t.answer {
            let rr = match execute(req, &m, "answer", a) {
                Ok(Some(rr)) => rr,
                Ok(None) => continue,
                Err(e) => return Outcome::error("template", Rcode::SERVFAIL, e),
            };
            let target = match (&rr.data, qtype) {
                (RData::Cname(target), RType::A | RType::AAAA) => Some(target.clone()),
                _ => None,
            };
            msg.answers.push(rr);
            if let Some(target) = target {
                let mut up = req.resolve(target, qtype).await;
                if let Some(r) = up.message_mut() {
                    msg.header.tc = r.header.tc;
                    msg.answers.append(&mut r.answers);
                }
            }
        }
        for a in &t.additional {
            match execute(req, &m, "additional", a) {
                Ok(Some(rr)) => msg.additional.push(rr),
                Ok(None) => {}
                Err(e) => return Outcome::error("template", Rcode::SERVFAIL, e),
            }
        }
        for a in &t.authority {
            match execute(req, &m, "authority", a) {
                Ok(Some(rr)) => msg.authority.push(rr),
                Ok(None) => {}
                Err(e) => return Outcome::error("template", Rcode::SERVFAIL, e),
            }
        }
        if let Some((code, reason)) = &t.ederror {
            let e = msg.edns.get_or_insert_with(|| Edns::new(4096));
            e.dnssec_ok = true;
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(reason.as_bytes());
            e.options.push(EdnsOption { code: EDE, data });
        }
        Outcome::reply("template", msg)
    }
}

impl Handler for TemplatePlugin {
    fn name(&self) -> &'static str {
        "template"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        let in_zone = req
            .msg
            .question()
            .is_some_and(|q| self.zones.iter().any(|z| q.name.is_subdomain_of(z)));
        if !in_zone {
            return next.run(req);
        }
        Box::pin(async move {
            let lname = req.qname().to_lowercase_string();
            for t in &self.templates {
                match t.matches(req, &lname) {
                    Err(()) => return Outcome::rcode("template", Rcode::SERVFAIL),
                    Ok(None) => continue,
                    Ok(Some(m)) => return self.answer(req, t, m).await,
                }
            }
            next.run(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(text: &str) -> Result<TemplatePlugin, Error> {
        let cf = sextant_corefile::parse_str("Corefile", text, std::path::Path::new(".")).unwrap();
        let d: Vec<&Directive> = cf.blocks[0].directives.iter().collect();
        parse(&d, &["example.".to_string()])
    }

    #[test]
    fn setup_errors_name_the_token() {
        for (cf, want) in [
            (". {\n template XX A\n}\n", "Corefile:2:11: template: invalid query class XX"),
            (". {\n template IN a\n}\n", "Corefile:2:14: template: invalid RR class a"),
            (". {\n template IN\n}\n", "Corefile:2:2: template: wrong argument count: expected at least 2, got 1"),
            (
                ". {\n template IN A {\n  match \"(\"\n }\n}\n",
                "Corefile:3:9: match: could not parse regex: (,",
            ),
            (
                ". {\n template IN A {\n  answer \"{{ .Name | upper }}\"\n }\n}\n",
                "Corefile:3:10: answer: could not compile template: {{ .Name | upper }}, template: answer:1: function \"upper\" not defined",
            ),
            (". {\n template IN A {\n  rcode NOPE\n }\n}\n", "Corefile:3:9: rcode: unknown rcode NOPE"),
            (". {\n template IN A {\n  ederror x\n }\n}\n", "Corefile:3:11: ederror: error parsing extended DNS error code x"),
            (". {\n template IN A {\n  ederror 1 2 3\n }\n}\n", "Corefile:3:15: ederror: wrong argument count"),
            (". {\n template IN A {\n  answer\n }\n}\n", "Corefile:3:3: answer: wrong argument count"),
            (". {\n template IN A {\n  bogus 1\n }\n}\n", "Corefile:3:3: bogus: unknown property 'bogus'"),
        ] {
            let e = plugin(cf).err().unwrap_or_else(|| panic!("{cf} parses")).to_string();
            assert!(e.starts_with(want), "{cf}\n{e}\nwant {want}");
        }
        let long = format!(
            ". {{\n template IN A {{\n  match {}\n }}\n}}\n",
            "a".repeat(10001)
        );
        assert!(plugin(&long)
            .err()
            .unwrap()
            .to_string()
            .contains("regex pattern too long: 10001 > 10000"));
    }

    #[test]
    fn options_parse() {
        let p = plugin(
            ". {\n template IN ANY example. other. {\n  match ^a ^b\n  answer \"{{ .Name }} 60 IN A 1.2.3.4\" \"{{ .Name }} 60 IN A 1.2.3.5\"\n  additional \"x. 1 IN A 1.1.1.1\"\n  authority \"{{ .Zone }} 60 IN NS ns.{{ .Zone }}\"\n  rcode NXDOMAIN\n  ederror 21 \"why not\"\n  fallthrough in-addr.arpa\n  upstream 1.2.3.4\n }\n}\n",
        )
        .unwrap();
        let t = &p.templates[0];
        assert_eq!((t.zones.len(), t.regex.len(), t.answer.len()), (2, 2, 2));
        assert_eq!(t.qtype, None);
        assert_eq!(t.rcode, Rcode::NXDOMAIN);
        assert_eq!(t.ederror, Some((21, "why not".to_string())));
        assert_eq!(t.fall.zones(), [Name::parse("in-addr.arpa.").unwrap()]);
        assert_eq!(t.answer[0].label, "{{.Name}} 60 IN A 1.2.3.4");
    }
}
