//! The `log` plugin: one line per query in CoreDNS's Common Log Format (or a custom format with
//! the same placeholders), for names under the configured scopes and response classes.

use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Message, Name, Rcode, Reply};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};
use crate::plugins::cache::classify::{typify, MsgType};

/// `{common}`.
pub(crate) const COMMON: &str = "{remote}:{port} - {>id} \"{type} {class} {name} {proto} {size} {>do} {>bufsize}\" {rcode} {>rflags} {rsize} {duration}";

thread_local! {
    /// The line being rendered, reused by every query of the thread.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Response classes for `class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Success,
    Denial,
    Error,
}

struct Rule {
    scope: Name,
    format: Format,
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
                format: Format::parse(&format),
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

/// One placeholder of a format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Remote,
    Port,
    Local,
    Id,
    Opcode,
    Type,
    Class,
    Name,
    Proto,
    Size,
    Do,
    Bufsize,
    Rcode,
    Rflags,
    Rsize,
    Duration,
}

impl Field {
    fn of(key: &str) -> Option<Field> {
        Some(match key {
            "remote" => Field::Remote,
            "port" => Field::Port,
            "local" => Field::Local,
            ">id" => Field::Id,
            ">opcode" => Field::Opcode,
            "type" => Field::Type,
            "class" => Field::Class,
            "name" => Field::Name,
            "proto" => Field::Proto,
            "size" => Field::Size,
            ">do" => Field::Do,
            ">bufsize" => Field::Bufsize,
            "rcode" => Field::Rcode,
            ">rflags" => Field::Rflags,
            "rsize" => Field::Rsize,
            "duration" => Field::Duration,
            _ => return None,
        })
    }
}

/// A piece of a format.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    /// Written as is (unknown placeholders included).
    Text(String),
    Field(Field),
    /// `{/label}`: a metadata value.
    Meta(String),
}

/// A log format split once, at setup, into text and placeholders.
#[derive(Debug, PartialEq, Eq)]
struct Format(Vec<Piece>);

/// What a format is made of, in order: text, or a placeholder `{key}` (with its whole text).
enum Seg<'a> {
    Text(&'a str),
    Key(&'a str, &'a str),
}

/// Splits `format` into text and `{key}`s; an unterminated `{` starts text to the end.
fn scan<'a>(format: &'a str, mut f: impl FnMut(Seg<'a>)) {
    let mut rest = format;
    // Byte searches: '{' and '}' are ASCII, so the split points are char boundaries.
    while let Some(open) = rest.bytes().position(|b| b == b'{') {
        if open > 0 {
            f(Seg::Text(&rest[..open]));
        }
        let after = &rest[open..];
        let Some(close) = after.bytes().position(|b| b == b'}') else {
            f(Seg::Text(after));
            return;
        };
        f(Seg::Key(&after[1..close], &after[..=close]));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        f(Seg::Text(rest));
    }
}

/// The metadata label of a `{/label}` key.
fn meta_label(key: &str) -> Option<&str> {
    key.strip_prefix('/').filter(|l| !l.is_empty())
}

impl Format {
    fn parse(format: &str) -> Format {
        let mut pieces: Vec<Piece> = Vec::new();
        let text = |pieces: &mut Vec<Piece>, t: &str| match pieces.last_mut() {
            Some(Piece::Text(s)) => s.push_str(t),
            _ => pieces.push(Piece::Text(t.to_string())),
        };
        scan(format, |seg| match seg {
            Seg::Text(t) => text(&mut pieces, t),
            Seg::Key(key, whole) => match (Field::of(key), meta_label(key)) {
                (Some(f), _) => pieces.push(Piece::Field(f)),
                (None, Some(label)) => pieces.push(Piece::Meta(label.to_string())),
                (None, None) => text(&mut pieces, whole),
            },
        });
        Format(pieces)
    }

    /// Appends the line of one query to `out`, like [`render_into`].
    fn render(&self, out: &mut String, req: &Request, reply: Option<(&Message, usize)>) {
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => write_field(out, *f, req, reply),
                Piece::Meta(label) => out.push_str(req.meta(label).unwrap_or("-")),
            }
        }
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
    scan(format, |seg| match seg {
        Seg::Text(t) => out.push_str(t),
        Seg::Key(key, whole) => match (Field::of(key), meta_label(key)) {
            (Some(f), _) => write_field(out, f, req, reply),
            // `{/label}`: `-` when unset or without the metadata plugin.
            (None, Some(label)) => out.push_str(req.meta(label).unwrap_or("-")),
            (None, None) => out.push_str(whole),
        },
    });
}

fn write_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            push_u8(out, a);
            for o in [b, c, d] {
                out.push('.');
                push_u8(out, o);
            }
        }
        std::net::IpAddr::V6(a) => {
            use std::fmt::Write;
            let _ = write!(out, "[{a}]");
        }
    }
}

/// Appends `n` in decimal (what `{}` prints, without the formatting machinery).
fn push_uint(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // A few ASCII digits: pushed one by one, cheaper than a checked copy of a short slice.
    for &d in &buf[i..] {
        out.push(d as char);
    }
}

/// [`push_uint`] for an address byte.
fn push_u8(out: &mut String, n: u8) {
    if n >= 100 {
        out.push((b'0' + n / 100) as char);
    }
    if n >= 10 {
        out.push((b'0' + n / 10 % 10) as char);
    }
    out.push((b'0' + n % 10) as char);
}

/// Appends a mnemonic, or what `Display` prints for a value without one.
fn push_mnemonic(out: &mut String, m: Option<&'static str>, other: impl std::fmt::Display) {
    match m {
        Some(m) => out.push_str(m),
        None => {
            use std::fmt::Write;
            let _ = write!(out, "{other}");
        }
    }
}

/// Appends `{duration}`: seconds with as many decimals as needed and `s`, as CoreDNS's
/// `strconv.AppendFloat(secs, 'f', -1, 64)` (and Rust's `{}` of the `f64`) prints them. Under a
/// second (every answered query) the shortest decimal of `nanos / 1e9` is the nanosecond count
/// itself, trailing zeros dropped: that double is the nearest to that decimal of at most 9
/// significant digits, and decimals of at most 15 significant digits never share a double.
fn push_duration(out: &mut String, d: std::time::Duration) {
    if d.as_secs() == 0 {
        let nanos = d.subsec_nanos();
        if nanos == 0 {
            out.push_str("0s");
            return;
        }
        let mut digits = [b'0'; 9];
        let mut n = nanos;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let end = digits.iter().rposition(|&b| b != b'0').map_or(0, |i| i + 1);
        out.push_str("0.");
        // Only ASCII digits.
        out.push_str(std::str::from_utf8(&digits[..end]).unwrap_or("0"));
        out.push('s');
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{}s", d.as_secs_f64());
    }
}

/// Appends the value of one placeholder.
fn write_field(out: &mut String, f: Field, req: &Request, reply: Option<(&Message, usize)>) {
    match f {
        Field::Remote => write_ip(out, req.client.ip()),
        Field::Port => push_uint(out, req.client.port().into()),
        Field::Local => write_ip(out, req.local.ip()),
        Field::Id => push_uint(out, req.msg.header.id.into()),
        Field::Opcode => {
            use std::fmt::Write;
            let _ = write!(out, "{}", req.msg.header.opcode);
        }
        Field::Type => {
            let t = req.qtype();
            push_mnemonic(out, t.mnemonic(), t);
        }
        Field::Class => {
            let c = req.qclass();
            push_mnemonic(out, c.mnemonic(), c);
        }
        Field::Name => match req.msg.question() {
            Some(q) => q.name.write_lowercase(out),
            None => out.push('.'),
        },
        Field::Proto => out.push_str(req.proto.as_str()),
        Field::Size => push_uint(out, req.size as u64),
        Field::Do => out.push_str(if req.do_bit() { "true" } else { "false" }),
        Field::Bufsize => push_uint(out, req.bufsize().into()),
        Field::Rcode | Field::Rflags | Field::Rsize | Field::Duration => {
            let Some((reply, rsize)) = reply else {
                out.push('-');
                return;
            };
            match f {
                Field::Rcode => {
                    let r = reply.rcode();
                    push_mnemonic(out, r.mnemonic(), r);
                }
                Field::Rflags => reply.header.write_flags(out),
                Field::Rsize => push_uint(out, rsize as u64),
                _ => push_duration(out, req.start.elapsed()),
            }
        }
    }
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
            // Without a question the name is the root, under the root scope only.
            let rule = match req.msg.question() {
                Some(q) => self.rules.iter().find(|r| q.name.is_subdomain_of(&r.scope)),
                None => self.rules.iter().find(|r| r.scope.is_root()),
            };
            let Some(rule) = rule else {
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
                LINE.with_borrow_mut(|line| {
                    line.clear();
                    line.push_str("[INFO] ");
                    rule.format.render(line, req, Some((reply, rsize)));
                    crate::log::query(line.as_bytes());
                });
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Metadata, Proto};
    use sextant_wire::{Class as QClass, Edns, RType};
    use std::net::SocketAddr;
    use std::time::Duration;

    /// The straightforward renderer (`std::fmt` for every value) the fast one must match
    /// byte for byte.
    fn reference(format: &str, req: &Request, reply: Option<(&Message, usize)>) -> String {
        let ip = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("[{a}]"),
        };
        let mut out = String::new();
        let mut rest = format;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open..];
            let Some(close) = after.find('}') else {
                out.push_str(after);
                return out;
            };
            let key = &after[1..close];
            let v = match (key, reply) {
                ("rcode" | "rsize" | ">rflags", None) => Some("-".to_string()),
                ("rcode", Some((m, _))) => Some(m.rcode().to_string()),
                (">rflags", Some((m, _))) => Some(m.header.flags_string()),
                ("rsize", Some((_, n))) => Some(n.to_string()),
                ("remote", _) => Some(ip(req.client.ip())),
                ("port", _) => Some(req.client.port().to_string()),
                ("local", _) => Some(ip(req.local.ip())),
                (">id", _) => Some(req.msg.header.id.to_string()),
                (">opcode", _) => Some(req.msg.header.opcode.to_string()),
                ("type", _) => Some(req.qtype().to_string()),
                ("class", _) => Some(req.qclass().to_string()),
                ("name", _) => Some(
                    req.msg
                        .question()
                        .map_or(".".to_string(), |q| q.name.to_lowercase().to_string()),
                ),
                ("proto", _) => Some(req.proto.as_str().to_string()),
                ("size", _) => Some(req.size.to_string()),
                (">do", _) => Some(req.do_bit().to_string()),
                (">bufsize", _) => Some(req.bufsize().to_string()),
                (k, _) if k.len() > 1 && k.starts_with('/') => {
                    Some(req.meta(&k[1..]).unwrap_or("-").to_string())
                }
                _ => None,
            };
            out.push_str(v.as_deref().unwrap_or(&after[..=close]));
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }

    fn request(name: &str, qtype: RType, client: &str, proto: Proto) -> Request {
        let mut m = Message::query(4660, Name::parse(name).unwrap(), qtype);
        m.header.opcode = 2;
        let mut r = Request::new(m, client.parse::<SocketAddr>().unwrap(), proto);
        r.size = 1234;
        r
    }

    #[test]
    fn renders_as_the_fmt_reference() {
        let without_duration = COMMON.replace(" {duration}", "");
        let formats = [
            without_duration.as_str(),
            "{remote} {local} {>opcode} {>bufsize} {>do} {class} {type}",
            "{/log/type}:{/log/class} {/missing} {/} {} {nope} {{name}} {a{b} x",
            "plain text",
            "",
            "{name",
            "é{name}ü{rcode}",
        ];
        let mut v6 = request("X.Example.", RType::AAAA, "[2001:db8::1]:65535", Proto::Tcp);
        v6.local = "[::1]:53".parse().unwrap();
        v6.msg.edns = Some(Edns::new(4096));
        v6.msg.edns.as_mut().unwrap().dnssec_ok = true;
        v6.meta = Some(Box::<Metadata>::default());
        v6.set_meta("log/type", || "NOERROR".into());
        let odd = request(
            "x\\032Y\\.b.EXAMPLE.org.",
            RType(65280),
            "10.0.0.255:0",
            Proto::Udp,
        );
        let mut odd_class = request("a.", RType::SRV, "192.168.1.2:53", Proto::Udp);
        odd_class.msg.questions[0].qclass = QClass(1234);
        let mut no_question = request("a.", RType::A, "1.2.3.4:5", Proto::Udp);
        no_question.msg.questions.clear();
        for req in [&v6, &odd, &odd_class, &no_question] {
            let mut replies = vec![None];
            for rcode in [Rcode::NOERROR, Rcode::NXDOMAIN, Rcode(3841)] {
                let mut m = req.reply();
                m.set_rcode(rcode);
                m.header.ra = true;
                m.header.ad = true;
                replies.push(Some(m));
            }
            for f in formats {
                let parsed = Format::parse(f);
                for reply in &replies {
                    let reply = reply.as_ref().map(|m| (m, 77));
                    let want = reference(f, req, reply);
                    let mut got = String::from("> ");
                    parsed.render(&mut got, req, reply);
                    assert_eq!(got, format!("> {want}"), "format {f:?}");
                    let mut got = String::new();
                    render_into(&mut got, f, req, reply);
                    assert_eq!(got, want, "format {f:?}");
                }
            }
        }
    }

    #[test]
    fn duration_is_printed_as_the_f64_display() {
        let mut nanos = vec![
            0,
            1,
            9,
            10,
            100,
            289_493,
            100_000_000,
            120_000_000,
            999_999_999,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly short durations, some with every digit.
            nanos.push((x % 1_000_000_000) as u32 >> (x >> 60));
        }
        for (i, n) in nanos.into_iter().enumerate() {
            for secs in [0, (i % 5) as u64, 86_400] {
                let d = Duration::new(secs, n);
                let mut got = String::new();
                push_duration(&mut got, d);
                assert_eq!(got, format!("{}s", d.as_secs_f64()), "{d:?}");
            }
        }
    }

    #[test]
    fn integers_are_printed_as_display() {
        for n in [0, 1, 9, 10, 99, 100, 65_535, 4_294_967_296, u64::MAX] {
            let mut got = String::new();
            push_uint(&mut got, n);
            assert_eq!(got, n.to_string());
        }
        for n in 0..=u8::MAX {
            let mut got = String::new();
            push_u8(&mut got, n);
            assert_eq!(got, n.to_string());
        }
    }
}
