//! A Go `text/template` subset for the `template` plugin: text and `{{ }}` actions with trim
//! markers and comments; pipelines of fields (`.Name`, `.Group.a`), variables (`$`, `$x :=`),
//! literals and function calls; `if`/`else if`/`else`, `range` and `with` blocks; the functions
//! `parseInt`, `index`, `len`, `printf`, `print`, `println`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`,
//! `and`, `or`, `not`. Anything else (`define`, `template`, `block`, `break`, `continue`, other
//! functions, character constants) is refused when the template is parsed. Printing follows Go's
//! rules (`<no value>` for a missing map key, `map[k:v]`, `[a b]`). [`Template`]'s `Display` is
//! Go's `Tree.Root.String()`, used as a metric label. No I/O.

use std::fmt::{self, Write as _};

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template {
    name: String,
    root: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    Range(Branch),
    With(Branch),
}

#[derive(Clone, Debug, PartialEq)]
struct Branch {
    pipe: Pipe,
    list: Vec<Node>,
    else_list: Option<Vec<Node>>,
}

#[derive(Clone, Debug, PartialEq)]
struct Pipe {
    decl: Vec<String>,
    is_assign: bool,
    cmds: Vec<Cmd>,
}

#[derive(Clone, Debug, PartialEq)]
struct Cmd {
    args: Vec<Arg>,
}

#[derive(Clone, Debug, PartialEq)]
enum Arg {
    /// `.A.B`
    Field(Vec<String>),
    /// `$x.A.B` (first element includes the `$`).
    Var(Vec<String>),
    Dot,
    Nil,
    Bool(bool),
    Number(String, Value),
    Str(String, String),
    Func(String),
    Pipe(Box<Pipe>),
    /// `(pipe).A.B`
    Chain(Box<Arg>, Vec<String>),
}

/// The functions this subset knows.
const FUNCS: &[&str] = &[
    "parseInt", "index", "len", "printf", "print", "println", "eq", "ne", "lt", "le", "gt", "ge",
    "and", "or", "not",
];

/// A value while a template runs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// Go's invalid value: prints `<no value>`.
    Missing,
    Nil,
    Str(String),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    List(Vec<Value>),
    /// A map, keys sorted (Go prints and ranges over maps in key order).
    Map(Vec<(String, Value)>),
    /// A struct: its fields and how it prints.
    Struct(Vec<(&'static str, Value)>, String),
    /// A method taking one string (`.Meta "label"`): the lookup is done by the caller's
    /// [`Data::call`].
    Method(&'static str),
}

/// The data a template runs on.
pub(crate) trait Data {
    /// The root value (`.` and `$` at the start).
    fn root(&self) -> &Value;
    /// Calls method `name` with `args`.
    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String>;
}

impl Value {
    pub(crate) fn map(mut entries: Vec<(String, Value)>) -> Value {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|b, a| a.0 == b.0);
        Value::Map(entries)
    }

    fn truth(&self) -> bool {
        match self {
            Value::Missing | Value::Nil => false,
            Value::Str(s) => !s.is_empty(),
            Value::Int(i) => *i != 0,
            Value::Uint(u) => *u != 0,
            Value::Float(f) => *f != 0.0,
            Value::Bool(b) => *b,
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Struct(..) | Value::Method(_) => true,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Missing => "invalid",
            Value::Nil => "nil",
            Value::Str(_) => "string",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint64",
            Value::Float(_) => "float64",
            Value::Bool(_) => "bool",
            Value::List(_) => "slice",
            Value::Map(_) => "map",
            Value::Struct(..) => "struct",
            Value::Method(_) => "func",
        }
    }
}

impl fmt::Display for Value {
    /// Go's `fmt.Print` of the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Missing => f.write_str("<no value>"),
            Value::Nil => f.write_str("<nil>"),
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Uint(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{}", go_float(*x)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("map[")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{k}:{v}")?;
                }
                f.write_str("]")
            }
            Value::Struct(_, shown) => f.write_str(shown),
            Value::Method(_) => f.write_str("<func>"),
        }
    }
}

/// Go's `%v` of a float64 (`%g` with the shortest representation).
fn go_float(x: f64) -> String {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e21 {
        format!("{x}")
    } else if x.is_nan() {
        "NaN".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        let s = format!("{x:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        if (-4..21).contains(&e) {
            format!("{x}")
        } else {
            format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Text(String),
    /// `{{` (and whether it trims the text before it)
    Open,
    Close,
    Field(String),
    Var(String),
    Ident(String),
    Str(String, String),
    Number(String),
    Bool(bool),
    Nil,
    Dot,
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
    Space,
    Keyword(&'static str),
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    toks: Vec<(Tok, usize)>,
}

const KEYWORDS: &[&str] = &[
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
];

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\r' || c == '\n'
}

impl<'a> Lexer<'a> {
    fn err(&self, msg: impl fmt::Display) -> String {
        format!("{}: {msg}", self.line)
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn push(&mut self, t: Tok) {
        self.toks.push((t, self.line));
    }

    fn run(mut self) -> Result<Vec<(Tok, usize)>, String> {
        loop {
            let rest = self.rest();
            let Some(open) = rest.find("{{") else {
                if !rest.is_empty() {
                    self.push(Tok::Text(rest.to_string()));
                }
                return Ok(self.toks);
            };
            let mut text = rest[..open].to_string();
            let after = &rest[open + 2..];
            let trim_left = after.starts_with("- ")
                || after.starts_with("-\t")
                || after.starts_with("-\n")
                || after.starts_with("-\r");
            if trim_left {
                text = text.trim_end_matches(is_space).to_string();
            }
            self.line += rest[..open].matches('\n').count();
            if !text.is_empty() {
                self.push(Tok::Text(text));
            }
            self.pos += open + 2 + if trim_left { 2 } else { 0 };
            // A comment: `{{/* ... */}}`.
            if self.rest().starts_with("/*") {
                let Some(end) = self.rest().find("*/") else {
                    return Err(self.err("unclosed comment"));
                };
                let body = &self.rest()[..end + 2];
                self.line += body.matches('\n').count();
                self.pos += end + 2;
                let r = self.rest();
                let (close_len, trim_right) = if r.starts_with(" -}}") {
                    (4, true)
                } else if r.starts_with("}}") {
                    (2, false)
                } else {
                    return Err(self.err("comment ends before closing delimiter"));
                };
                self.pos += close_len;
                if trim_right {
                    self.skip_space_after();
                }
                continue;
            }
            self.push(Tok::Open);
            self.action()?;
        }
    }

    fn skip_space_after(&mut self) {
        let r = self.rest();
        let trimmed = r.trim_start_matches(is_space);
        self.line += r[..r.len() - trimmed.len()].matches('\n').count();
        self.pos += r.len() - trimmed.len();
    }

    fn action(&mut self) -> Result<(), String> {
        let mut depth = 0usize;
        loop {
            let r = self.rest();
            if r.is_empty() {
                return Err(self.err("unclosed action"));
            }
            if depth == 0 && (r.starts_with(" -}}") || r.starts_with("\t-}}")) {
                self.pos += 4;
                self.push(Tok::Close);
                self.skip_space_after();
                return Ok(());
            }
            if r.starts_with("}}") {
                if depth > 0 {
                    return Err(self.err("unclosed left paren"));
                }
                self.pos += 2;
                self.push(Tok::Close);
                return Ok(());
            }
            let c = r.chars().next().unwrap_or(' ');
            match c {
                c if is_space(c) => {
                    let n = r.len() - r.trim_start_matches(is_space).len();
                    if r[..n].contains('\n') {
                        self.line += r[..n].matches('\n').count();
                    }
                    self.pos += n;
                    if !matches!(self.toks.last(), Some((Tok::Space, _))) {
                        self.push(Tok::Space);
                    }
                }
                '(' => {
                    depth += 1;
                    self.pos += 1;
                    self.push(Tok::LParen);
                }
                ')' => {
                    if depth == 0 {
                        return Err(self.err("unexpected right paren"));
                    }
                    depth -= 1;
                    self.pos += 1;
                    self.push(Tok::RParen);
                }
                '|' => {
                    self.pos += 1;
                    self.push(Tok::Pipe);
                }
                ',' => {
                    self.pos += 1;
                    self.push(Tok::Comma);
                }
                ':' => {
                    if !r.starts_with(":=") {
                        return Err(self.err("expected :="));
                    }
                    self.pos += 2;
                    self.push(Tok::Declare);
                }
                '=' => {
                    self.pos += 1;
                    self.push(Tok::Assign);
                }
                '"' => {
                    let (quoted, val) = lex_quoted(r).map_err(|e| self.err(e))?;
                    self.pos += quoted.len();
                    self.push(Tok::Str(quoted, val));
                }
                '`' => {
                    let Some(end) = r[1..].find('`') else {
                        return Err(self.err("unterminated raw quoted string"));
                    };
                    let quoted = r[..end + 2].to_string();
                    self.line += quoted.matches('\n').count();
                    self.pos += end + 2;
                    let val = quoted[1..quoted.len() - 1].to_string();
                    self.push(Tok::Str(quoted, val));
                }
                '\'' => {
                    return Err(self
                        .err("character constants are not supported by Sextant's template subset"))
                }
                '$' => {
                    let n = 1 + ident_len(&r[1..]);
                    let v = r[..n].to_string();
                    self.pos += n;
                    self.push(Tok::Var(v));
                }
                '.' => {
                    let n = ident_len(&r[1..]);
                    if n == 0 {
                        if r[1..].starts_with(|c: char| c.is_ascii_digit()) {
                            let n = number_len(r);
                            self.pos += n;
                            self.push(Tok::Number(r[..n].to_string()));
                        } else {
                            self.pos += 1;
                            self.push(Tok::Dot);
                        }
                    } else {
                        self.pos += 1 + n;
                        self.push(Tok::Field(r[1..1 + n].to_string()));
                    }
                }
                c if c.is_ascii_digit() || c == '-' || c == '+' => {
                    let n = number_len(r);
                    if n == 0 {
                        return Err(self.err(format!("bad character {c:?}")));
                    }
                    self.pos += n;
                    self.push(Tok::Number(r[..n].to_string()));
                }
                c if c == '_' || c.is_alphabetic() => {
                    let n = ident_len(r);
                    let w = &r[..n];
                    self.pos += n;
                    let t = match w {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        "nil" => Tok::Nil,
                        _ => match KEYWORDS.iter().find(|k| **k == w) {
                            Some(k) => Tok::Keyword(k),
                            None => Tok::Ident(w.to_string()),
                        },
                    };
                    self.push(t);
                }
                c => return Err(self.err(format!("unexpected {c:?} in command"))),
            }
        }
    }
}

fn ident_len(s: &str) -> usize {
    s.char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(s.len(), |(i, _)| i)
}

fn number_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
        // An exponent sign.
        if (b[i] == b'e' || b[i] == b'E' || b[i] == b'p' || b[i] == b'P')
            && i + 1 < b.len()
            && (b[i + 1] == b'+' || b[i + 1] == b'-')
            && !s[start..].starts_with("0x")
        {
            i += 2;
            continue;
        }
        i += 1;
    }
    if i == start {
        0
    } else {
        i
    }
}

/// A Go interpreted string literal at the start of `s`: (as written, value).
fn lex_quoted(s: &str) -> Result<(String, String), String> {
    let mut val = String::new();
    let mut it = s.char_indices().skip(1);
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Ok((s[..=i].to_string(), val)),
            '\n' => return Err("unterminated quoted string".to_string()),
            '\\' => {
                let Some((_, e)) = it.next() else {
                    return Err("unterminated quoted string".to_string());
                };
                match e {
                    'n' => val.push('\n'),
                    't' => val.push('\t'),
                    'r' => val.push('\r'),
                    '\\' => val.push('\\'),
                    '"' => val.push('"'),
                    '\'' => val.push('\''),
                    'a' => val.push('\x07'),
                    'b' => val.push('\x08'),
                    'f' => val.push('\x0c'),
                    'v' => val.push('\x0b'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut h = String::new();
                        for _ in 0..n {
                            h.push(it.next().map(|(_, c)| c).unwrap_or(' '));
                        }
                        let v = u32::from_str_radix(&h, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or("invalid syntax in quoted string")?;
                        val.push(v);
                    }
                    _ => return Err(format!("invalid escape \\{e} in quoted string")),
                }
            }
            c => val.push(c),
        }
    }
    Err("unterminated quoted string".to_string())
}

/// Parses a Go number literal into an int, uint or float value.
fn parse_number(text: &str) -> Option<Value> {
    let t = text.replace('_', "");
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let int = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(o) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        u64::from_str_radix(o, 8).ok()
    } else if let Some(b) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        u64::from_str_radix(b, 2).ok()
    } else if body.len() > 1 && body.starts_with('0') && body.bytes().all(|b| b.is_ascii_digit()) {
        u64::from_str_radix(&body[1..], 8).ok()
    } else {
        body.parse::<u64>().ok()
    };
    match int {
        Some(u) if neg => i64::try_from(u).ok().map(|i| Value::Int(-i)),
        Some(u) => Some(i64::try_from(u).map_or(Value::Uint(u), Value::Int)),
        None => t.parse::<f64>().ok().map(Value::Float),
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    name: String,
    /// Variables in scope (for "undefined variable" errors, as Go checks at parse time).
    vars: Vec<String>,
}

enum Until {
    Eof,
    End,
    Else,
}

impl Parser {
    fn line(&self) -> usize {
        self.toks
            .get(self.i.min(self.toks.len().saturating_sub(1)))
            .map_or(1, |t| t.1)
    }

    fn err(&self, msg: impl fmt::Display) -> String {
        format!("template: {}:{}: {msg}", self.name, self.line())
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.0)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.0.clone());
        self.i += 1;
        t
    }

    fn skip_space(&mut self) {
        while self.peek() == Some(&Tok::Space) {
            self.i += 1;
        }
    }

    /// Parses nodes until end of input, `{{end}}` or `{{else}}`.
    fn list(&mut self) -> Result<(Vec<Node>, Until), String> {
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return Ok((out, Until::Eof)),
                Some(Tok::Text(t)) => out.push(Node::Text(t)),
                Some(Tok::Open) => {
                    self.skip_space();
                    match self.peek().cloned() {
                        Some(Tok::Keyword(k)) => {
                            self.i += 1;
                            match k {
                                "end" => {
                                    self.close()?;
                                    return Ok((out, Until::End));
                                }
                                "else" => return Ok((out, Until::Else)),
                                "if" => out.push(Node::If(self.branch("if")?)),
                                "range" => out.push(Node::Range(self.branch("range")?)),
                                "with" => out.push(Node::With(self.branch("with")?)),
                                other => {
                                    return Err(self.err(format!(
                                    "{{{{{other}}}}} is not supported by Sextant's template subset"
                                )))
                                }
                            }
                        }
                        _ => {
                            let p = self.pipeline("command", true)?;
                            out.push(Node::Action(p));
                        }
                    }
                }
                Some(t) => return Err(self.err(format!("unexpected {t:?}"))),
            }
        }
    }

    fn close(&mut self) -> Result<(), String> {
        self.skip_space();
        match self.next() {
            Some(Tok::Close) => Ok(()),
            t => Err(self.err(format!("unexpected {t:?} in end"))),
        }
    }

    fn branch(&mut self, kind: &str) -> Result<Branch, String> {
        let scope = self.vars.len();
        let pipe = self.pipeline(kind, false)?;
        let (list, end) = self.list()?;
        let else_list = match end {
            Until::Eof => return Err(self.err(format!("unexpected EOF in {kind}"))),
            Until::End => None,
            Until::Else => {
                self.skip_space();
                // `{{else if ...}}` / `{{else with ...}}`: a nested branch that shares the end.
                match self.peek().cloned() {
                    Some(Tok::Keyword(k)) if (k == "if" || k == "with") && k == kind => {
                        self.i += 1;
                        let inner = self.branch(k)?;
                        let node = if k == "if" {
                            Node::If(inner)
                        } else {
                            Node::With(inner)
                        };
                        Some(vec![node])
                    }
                    _ => {
                        self.close()?;
                        let (l, end) = self.list()?;
                        if !matches!(end, Until::End) {
                            return Err(self.err(format!("expected end; found else in {kind}")));
                        }
                        Some(l)
                    }
                }
            }
        };
        self.vars.truncate(scope);
        Ok(Branch {
            pipe,
            list,
            else_list,
        })
    }

    /// A pipeline up to `}}` (or `)` inside parentheses when `!top`... see `operand`).
    fn pipeline(&mut self, context: &str, action: bool) -> Result<Pipe, String> {
        self.pipeline_until(context, action, false)
    }

    fn pipeline_until(
        &mut self,
        context: &str,
        _action: bool,
        paren: bool,
    ) -> Result<Pipe, String> {
        let mut decl = Vec::new();
        let mut is_assign = false;
        self.skip_space();
        // Declarations: `$x :=`, `$i, $e :=`, `$x =`.
        let save = self.i;
        let mut names = Vec::new();
        loop {
            if let Some(Tok::Var(v)) = self.peek().cloned() {
                self.i += 1;
                self.skip_space();
                match self.peek() {
                    Some(Tok::Declare) | Some(Tok::Assign) => {
                        is_assign = self.peek() == Some(&Tok::Assign);
                        self.i += 1;
                        names.push(v);
                        decl = names.clone();
                        break;
                    }
                    Some(Tok::Comma) if context == "range" && names.is_empty() => {
                        self.i += 1;
                        self.skip_space();
                        names.push(v);
                        continue;
                    }
                    _ => {}
                }
            }
            self.i = save;
            break;
        }
        let mut cmds = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                Some(Tok::Close) if !paren => {
                    self.i += 1;
                    break;
                }
                Some(Tok::RParen) if paren => {
                    self.i += 1;
                    break;
                }
                None => return Err(self.err(format!("unclosed action in {context}"))),
                _ => {}
            }
            let cmd = self.command(paren)?;
            cmds.push(cmd);
            self.skip_space();
            match self.peek() {
                Some(Tok::Pipe) => {
                    self.i += 1;
                }
                Some(Tok::Close) if !paren => {}
                Some(Tok::RParen) if paren => {}
                t => return Err(self.err(format!("unexpected {t:?} in operand"))),
            }
        }
        if cmds.is_empty() {
            return Err(self.err(format!("missing value for {context}")));
        }
        for d in &decl {
            if is_assign {
                if !self.vars.contains(d) {
                    return Err(self.err(format!("undefined variable {d:?}")));
                }
            } else {
                self.vars.push(d.clone());
            }
        }
        Ok(Pipe {
            decl,
            is_assign,
            cmds,
        })
    }

    fn command(&mut self, paren: bool) -> Result<Cmd, String> {
        let mut args = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                Some(Tok::Close) | Some(Tok::Pipe) => break,
                Some(Tok::RParen) if paren => break,
                None => break,
                _ => {}
            }
            args.push(self.operand()?);
            // Operands are separated by spaces.
            match self.peek() {
                Some(Tok::Space) | Some(Tok::Close) | Some(Tok::Pipe) => {}
                Some(Tok::RParen) if paren => {}
                t => return Err(self.err(format!("unexpected {t:?} in operand"))),
            }
        }
        if args.is_empty() {
            return Err(self.err("empty command"));
        }
        Ok(Cmd { args })
    }

    fn operand(&mut self) -> Result<Arg, String> {
        let t = self.next().ok_or_else(|| self.err("unexpected EOF"))?;
        let mut arg = match t {
            Tok::Field(f) => {
                let mut path = vec![f];
                while let Some(Tok::Field(g)) = self.peek().cloned() {
                    self.i += 1;
                    path.push(g);
                }
                return Ok(Arg::Field(path));
            }
            Tok::Var(v) => {
                if !self.vars.contains(&v) && v != "$" {
                    return Err(self.err(format!("undefined variable {v:?}")));
                }
                let mut path = vec![v];
                while let Some(Tok::Field(g)) = self.peek().cloned() {
                    self.i += 1;
                    path.push(g);
                }
                return Ok(Arg::Var(path));
            }
            Tok::Dot => Arg::Dot,
            Tok::Nil => Arg::Nil,
            Tok::Bool(b) => Arg::Bool(b),
            Tok::Number(n) => {
                let v = parse_number(&n)
                    .ok_or_else(|| self.err(format!("bad number syntax: {n:?}")))?;
                Arg::Number(n, v)
            }
            Tok::Str(q, v) => Arg::Str(q, v),
            Tok::Ident(f) => {
                if !FUNCS.contains(&f.as_str()) {
                    return Err(self.err(format!("function {f:?} not defined")));
                }
                Arg::Func(f)
            }
            Tok::LParen => {
                let p = self.pipeline_until("parenthesized pipeline", false, true)?;
                Arg::Pipe(Box::new(p))
            }
            Tok::Keyword(k) => return Err(self.err(format!("unexpected <{k}> in command"))),
            t => return Err(self.err(format!("unexpected {t:?} in operand"))),
        };
        let mut chain = Vec::new();
        while let Some(Tok::Field(g)) = self.peek().cloned() {
            self.i += 1;
            chain.push(g);
        }
        if !chain.is_empty() {
            arg = Arg::Chain(Box::new(arg), chain);
        }
        Ok(arg)
    }
}

impl Template {
    /// Parses `text` as the template called `name` (Go's `New(name).Parse(text)` with this
    /// subset's functions). Errors read like Go's: `template: NAME:LINE: message`.
    pub(crate) fn parse(name: &str, text: &str) -> Result<Template, String> {
        let toks = Lexer {
            src: text,
            pos: 0,
            line: 1,
            toks: Vec::new(),
        }
        .run()
        .map_err(|e| format!("template: {name}:{e}"))?;
        let mut p = Parser {
            toks,
            i: 0,
            name: name.to_string(),
            vars: vec!["$".to_string()],
        };
        let (root, end) = p.list()?;
        match end {
            Until::Eof => Ok(Template {
                name: name.to_string(),
                root,
            }),
            Until::End => Err(p.err("unexpected {{end}}")),
            Until::Else => Err(p.err("unexpected {{else}}")),
        }
    }

    /// Runs the template on `data`.
    pub(crate) fn execute(&self, data: &dyn Data) -> Result<String, String> {
        let mut st = State {
            data,
            vars: vec![("$".to_string(), data.root().clone())],
            name: &self.name,
            steps: 0,
        };
        let mut out = String::new();
        st.walk(&mut out, data.root(), &self.root)?;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Printing the tree (Go's `Node.String`)

fn write_list(f: &mut fmt::Formatter<'_>, l: &[Node]) -> fmt::Result {
    for n in l {
        write!(f, "{n}")?;
    }
    Ok(())
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, &self.root)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, b) = match self {
            Node::Text(t) => return f.write_str(t),
            Node::Action(p) => return write!(f, "{{{{{p}}}}}"),
            Node::If(b) => ("if", b),
            Node::Range(b) => ("range", b),
            Node::With(b) => ("with", b),
        };
        write!(f, "{{{{{name} {}}}}}", b.pipe)?;
        write_list(f, &b.list)?;
        if let Some(e) = &b.else_list {
            f.write_str("{{else}}")?;
            write_list(f, e)?;
        }
        f.write_str("{{end}}")
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            f.write_str(&self.decl.join(", "))?;
            f.write_str(if self.is_assign { " = " } else { " := " })?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            for (j, a) in c.args.iter().enumerate() {
                if j > 0 {
                    f.write_str(" ")?;
                }
                match a {
                    Arg::Pipe(p) => write!(f, "({p})")?,
                    a => write!(f, "{a}")?,
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Field(p) => {
                for id in p {
                    write!(f, ".{id}")?;
                }
                Ok(())
            }
            Arg::Var(p) => f.write_str(&p.join(".")),
            Arg::Dot => f.write_str("."),
            Arg::Nil => f.write_str("nil"),
            Arg::Bool(b) => write!(f, "{b}"),
            Arg::Number(t, _) => f.write_str(t),
            Arg::Str(q, _) => f.write_str(q),
            Arg::Func(n) => f.write_str(n),
            Arg::Pipe(p) => write!(f, "{p}"),
            Arg::Chain(a, fields) => {
                match &**a {
                    Arg::Pipe(p) => write!(f, "({p})")?,
                    a => write!(f, "{a}")?,
                }
                for id in fields {
                    write!(f, ".{id}")?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Execution

struct State<'a> {
    data: &'a dyn Data,
    vars: Vec<(String, Value)>,
    name: &'a str,
    /// Range iterations and nodes run, bounded so a template cannot run away.
    steps: usize,
}

const MAX_STEPS: usize = 100_000;

impl State<'_> {
    fn err(&self, at: &dyn fmt::Display, msg: impl fmt::Display) -> String {
        format!(
            "template: {}: executing {:?} at <{at}>: {msg}",
            self.name, self.name
        )
    }

    fn walk(&mut self, out: &mut String, dot: &Value, list: &[Node]) -> Result<(), String> {
        for n in list {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(format!("template: {}: too many steps", self.name));
            }
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipe(dot, p)?;
                    if p.decl.is_empty() {
                        self.print(out, &v, p)?;
                    }
                }
                Node::If(b) | Node::With(b) => {
                    let scope = self.vars.len();
                    let v = self.pipe(dot, &b.pipe)?;
                    let is_with = matches!(n, Node::With(_));
                    if v.truth() {
                        let d = if is_with { v } else { dot.clone() };
                        self.walk(out, &d, &b.list)?;
                    } else if let Some(e) = &b.else_list {
                        self.walk(out, dot, e)?;
                    }
                    self.vars.truncate(scope);
                }
                Node::Range(b) => {
                    let scope = self.vars.len();
                    let v = self.range_value(dot, &b.pipe)?;
                    let items: Vec<(Value, Value)> = match v {
                        Value::List(l) => l
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Value::Int(i as i64), v))
                            .collect(),
                        Value::Map(m) => m.into_iter().map(|(k, v)| (Value::Str(k), v)).collect(),
                        Value::Int(n) => (0..n.max(0))
                            .map(|i| (Value::Int(i), Value::Int(i)))
                            .collect(),
                        Value::Missing | Value::Nil => Vec::new(),
                        other => {
                            return Err(
                                self.err(&b.pipe, format!("range can't iterate over {other}"))
                            )
                        }
                    };
                    if items.is_empty() {
                        if let Some(e) = &b.else_list {
                            self.walk(out, dot, e)?;
                        }
                    }
                    for (k, v) in items {
                        let inner = self.vars.len();
                        match b.pipe.decl.len() {
                            0 => {}
                            1 => self.vars.push((b.pipe.decl[0].clone(), v.clone())),
                            _ => {
                                self.vars.push((b.pipe.decl[0].clone(), k));
                                self.vars.push((b.pipe.decl[1].clone(), v.clone()));
                            }
                        }
                        self.walk(out, &v, &b.list)?;
                        self.vars.truncate(inner);
                    }
                    self.vars.truncate(scope);
                }
            }
        }
        Ok(())
    }

    /// The value a `range` runs over (its declarations bind per item, not to the whole).
    fn range_value(&mut self, dot: &Value, p: &Pipe) -> Result<Value, String> {
        let bare = Pipe {
            decl: Vec::new(),
            is_assign: false,
            cmds: p.cmds.clone(),
        };
        self.pipe(dot, &bare)
    }

    fn print(&self, out: &mut String, v: &Value, at: &Pipe) -> Result<(), String> {
        if let Value::Method(_) = v {
            return Err(self.err(at, "can't print a method value"));
        }
        let _ = write!(out, "{v}");
        Ok(())
    }

    fn pipe(&mut self, dot: &Value, p: &Pipe) -> Result<Value, String> {
        let mut val: Option<Value> = None;
        for c in &p.cmds {
            val = Some(self.command(dot, c, val)?);
        }
        let v = val.unwrap_or(Value::Missing);
        for name in &p.decl {
            if p.is_assign {
                if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    slot.1 = v.clone();
                }
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn var(&self, name: &str) -> Value {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Missing)
    }

    fn command(&mut self, dot: &Value, c: &Cmd, final_: Option<Value>) -> Result<Value, String> {
        let first = &c.args[0];
        let rest = &c.args[1..];
        match first {
            Arg::Func(name) => {
                // `and` and `or` evaluate their arguments lazily, like Go.
                if name == "and" || name == "or" {
                    let mut last = Value::Missing;
                    let n = rest.len() + usize::from(final_.is_some());
                    if n == 0 {
                        return Err(self.err(
                            first,
                            format!("wrong number of args for {name}: want at least 1 got 0"),
                        ));
                    }
                    for a in rest {
                        last = self.arg(dot, a)?;
                        if last.truth() == (name == "or") {
                            return Ok(last);
                        }
                    }
                    if let Some(f) = final_ {
                        last = f;
                    }
                    return Ok(last);
                }
                let mut args = Vec::with_capacity(rest.len() + 1);
                for a in rest {
                    args.push(self.arg(dot, a)?);
                }
                if let Some(f) = final_ {
                    args.push(f);
                }
                call(name, &args).map_err(|e| self.err(first, format!("error calling {name}: {e}")))
            }
            Arg::Field(path) => self.field_chain(dot, dot, path, first, rest, final_),
            Arg::Var(path) => {
                let root = self.var(&path[0]);
                if path.len() == 1 {
                    self.no_args(first, rest, &final_)?;
                    return Ok(root);
                }
                self.field_chain(dot, &root, &path[1..], first, rest, final_)
            }
            Arg::Chain(inner, path) => {
                let base = self.arg(dot, inner)?;
                self.field_chain(dot, &base, path, first, rest, final_)
            }
            other => {
                self.no_args(first, rest, &final_)?;
                self.arg(dot, other)
            }
        }
    }

    fn no_args(&self, at: &Arg, rest: &[Arg], final_: &Option<Value>) -> Result<(), String> {
        if !rest.is_empty() || final_.is_some() {
            return Err(self.err(at, format!("can't give argument to non-function {at}")));
        }
        Ok(())
    }

    /// Follows `path` from `base`; a method at the end takes the command's other arguments.
    fn field_chain(
        &mut self,
        dot: &Value,
        base: &Value,
        path: &[String],
        at: &Arg,
        rest: &[Arg],
        final_: Option<Value>,
    ) -> Result<Value, String> {
        let mut cur = base.clone();
        for (i, name) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            cur = match &cur {
                Value::Struct(fields, _) => match fields.iter().find(|(n, _)| n == name) {
                    Some((_, Value::Method(m))) => {
                        if !last {
                            return Err(self.err(at, format!("{name} is a method, not a field")));
                        }
                        let mut args = Vec::new();
                        for a in rest {
                            args.push(self.arg(dot, a)?);
                        }
                        if let Some(f) = final_ {
                            args.push(f);
                        }
                        return self
                            .data
                            .call(m, &args)
                            .map_err(|e| self.err(at, format!("error calling {name}: {e}")));
                    }
                    Some((_, v)) => v.clone(),
                    None => {
                        return Err(self.err(
                            at,
                            format!("can't evaluate field {name} in type {}", cur.kind()),
                        ))
                    }
                },
                Value::Map(m) => match m.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
                    Ok(i) => m[i].1.clone(),
                    Err(_) => Value::Missing,
                },
                Value::Missing | Value::Nil => {
                    return Err(self.err(at, format!("nil pointer evaluating {name}")))
                }
                other => {
                    return Err(self.err(
                        at,
                        format!("can't evaluate field {name} in type {}", other.kind()),
                    ))
                }
            };
        }
        self.no_args(at, rest, &final_)?;
        Ok(cur)
    }

    fn arg(&mut self, dot: &Value, a: &Arg) -> Result<Value, String> {
        match a {
            Arg::Dot => Ok(dot.clone()),
            Arg::Nil => Ok(Value::Nil),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Number(_, v) => Ok(v.clone()),
            Arg::Str(_, s) => Ok(Value::Str(s.clone())),
            Arg::Pipe(p) => self.pipe(dot, p),
            Arg::Func(name) => {
                call(name, &[]).map_err(|e| self.err(a, format!("error calling {name}: {e}")))
            }
            Arg::Field(_) | Arg::Var(_) | Arg::Chain(..) => {
                let cmd = Cmd {
                    args: vec![a.clone()],
                };
                self.command(dot, &cmd, None)
            }
        }
    }
}

fn want(name: &str, args: &[Value], n: usize) -> Result<(), String> {
    if args.len() != n {
        return Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn as_int(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(*i as i128),
        Value::Uint(u) => Some(*u as i128),
        _ => None,
    }
}

/// Go's basic comparison of two values: `Some(ordering)` when comparable.
fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    use std::cmp::Ordering;
    if let (Some(x), Some(y)) = (as_int(a), as_int(b)) {
        return Ok(x.cmp(&y));
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).ok_or_else(|| "NaN".to_string()),
        (Value::Bool(x), Value::Bool(y)) if x == y => Ok(Ordering::Equal),
        (Value::Bool(_), Value::Bool(_)) => Ok(Ordering::Less),
        (Value::Missing | Value::Nil, _) | (_, Value::Missing | Value::Nil) => {
            Err("invalid type for comparison".to_string())
        }
        _ => Err("incompatible types for comparison".to_string()),
    }
}

fn call(name: &str, args: &[Value]) -> Result<Value, String> {
    use std::cmp::Ordering::*;
    match name {
        "parseInt" => {
            want(name, args, 3)?;
            let Value::Str(s) = &args[0] else {
                return Err(format!(
                    "wrong type for value; expected string; got {}",
                    args[0].kind()
                ));
            };
            let base = as_int(&args[1]).ok_or("wrong type for value; expected int")?;
            let bits = as_int(&args[2]).ok_or("wrong type for value; expected int")?;
            parse_uint(s, base, bits).map(Value::Uint)
        }
        "index" => {
            let Some((item, idx)) = args.split_first() else {
                return Err("wrong number of args for index: want at least 1 got 0".to_string());
            };
            let mut cur = item.clone();
            for i in idx {
                cur = match (&cur, i) {
                    (Value::List(l), i) => {
                        let n = as_int(i).ok_or("cannot index slice/array with non-integer")?;
                        usize::try_from(n)
                            .ok()
                            .and_then(|n| l.get(n).cloned())
                            .ok_or_else(|| format!("index out of range: {n}"))?
                    }
                    (Value::Str(s), i) => {
                        let n = as_int(i).ok_or("cannot index string with non-integer")?;
                        usize::try_from(n)
                            .ok()
                            .and_then(|n| s.as_bytes().get(n).copied())
                            .map(|b| Value::Uint(b as u64))
                            .ok_or_else(|| format!("index out of range: {n}"))?
                    }
                    (Value::Map(m), Value::Str(k)) => m
                        .iter()
                        .find(|(mk, _)| mk == k)
                        .map(|(_, v)| v.clone())
                        // A missing key gives the element type's zero value: "".
                        .unwrap_or(Value::Str(String::new())),
                    (Value::Map(_), other) => {
                        return Err(format!("value has type {}; should be string", other.kind()))
                    }
                    (Value::Missing | Value::Nil, _) => {
                        return Err("index of untyped nil".to_string())
                    }
                    (other, _) => return Err(format!("can't index item of type {}", other.kind())),
                };
            }
            Ok(cur)
        }
        "len" => {
            want(name, args, 1)?;
            match &args[0] {
                Value::Str(s) => Ok(Value::Int(s.len() as i64)),
                Value::List(l) => Ok(Value::Int(l.len() as i64)),
                Value::Map(m) => Ok(Value::Int(m.len() as i64)),
                other => Err(format!("len of type {}", other.kind())),
            }
        }
        "print" => Ok(Value::Str(sprint(args, false))),
        "println" => Ok(Value::Str(sprint(args, true))),
        "printf" => {
            let Some((Value::Str(f), rest)) = args.split_first() else {
                return Err("wrong type for value; expected string".to_string());
            };
            Ok(Value::Str(sprintf(f, rest)))
        }
        "not" => {
            want(name, args, 1)?;
            Ok(Value::Bool(!args[0].truth()))
        }
        "eq" => {
            let Some((a, rest)) = args.split_first() else {
                return Err("missing argument for comparison".to_string());
            };
            if rest.is_empty() {
                return Err("missing argument for comparison".to_string());
            }
            for b in rest {
                if compare(a, b)? == Equal {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want(name, args, 2)?;
            let o = compare(&args[0], &args[1])?;
            if name != "ne" && matches!(args[0], Value::Bool(_)) {
                return Err("invalid type for comparison".to_string());
            }
            Ok(Value::Bool(match name {
                "ne" => o != Equal,
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            }))
        }
        _ => Err(format!("function {name:?} not defined")),
    }
}

/// Go's `strconv.ParseUint(s, base, bitSize)`.
fn parse_uint(s: &str, base: i128, bits: i128) -> Result<u64, String> {
    let fail = |why: &str| format!("strconv.ParseUint: parsing {s:?}: {why}");
    if s.is_empty() {
        return Err(fail("invalid syntax"));
    }
    let bits = if bits == 0 { 64 } else { bits };
    if !(1..=64).contains(&bits) {
        return Err(format!(
            "strconv.ParseUint: parsing {s:?}: invalid bit size {bits}"
        ));
    }
    let (base, digits) = match base {
        0 => {
            let l = s.to_ascii_lowercase();
            if let Some(h) = l.strip_prefix("0x") {
                (16, h.to_string())
            } else if let Some(b) = l.strip_prefix("0b") {
                (2, b.to_string())
            } else if let Some(o) = l.strip_prefix("0o") {
                (8, o.to_string())
            } else if l.len() > 1 && l.starts_with('0') {
                (8, l[1..].to_string())
            } else {
                (10, l)
            }
        }
        2..=36 => (base as u32, s.to_string()),
        _ => {
            return Err(format!(
                "strconv.ParseUint: parsing {s:?}: invalid base {base}"
            ))
        }
    };
    let digits = digits.replace('_', "");
    if digits.is_empty() || digits.starts_with('+') || digits.starts_with('-') {
        return Err(fail("invalid syntax"));
    }
    let v = u64::from_str_radix(&digits, base).map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => fail("value out of range"),
        _ => fail("invalid syntax"),
    })?;
    if bits < 64 && v >= 1u64 << bits {
        return Err(fail("value out of range"));
    }
    Ok(v)
}

/// Go's `fmt.Sprint` / `fmt.Sprintln`.
fn sprint(args: &[Value], ln: bool) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = matches!(a, Value::Str(_));
        if i > 0 && (ln || (!is_str && !matches!(args[i - 1], Value::Str(_)))) {
            out.push(' ');
        }
        let _ = write!(out, "{a}");
    }
    if ln {
        out.push('\n');
    }
    out
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %d %x %X %o %b %q %c %t %f %e %g %%`
/// with flags `-+ 0#`, width and precision.
fn sprintf(f: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = f.chars().peekable();
    let mut ai = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space, mut sharp) =
            (false, false, false, false, false);
        while let Some(&c) = it.peek() {
            match c {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => sharp = true,
                _ => break,
            }
            it.next();
        }
        let mut width = String::new();
        while let Some(&c) = it.peek().filter(|c| c.is_ascii_digit()) {
            width.push(c);
            it.next();
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&c) = it.peek().filter(|c| c.is_ascii_digit()) {
                p.push(c);
                it.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = args.get(ai) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        ai += 1;
        let mut s = match (verb, a) {
            ('v' | 's', Value::Str(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            },
            ('v', v) => v.to_string(),
            ('d', v) if as_int(v).is_some() => {
                let n = as_int(v).unwrap_or(0);
                if plus && n >= 0 {
                    format!("+{n}")
                } else if space && n >= 0 {
                    format!(" {n}")
                } else {
                    n.to_string()
                }
            }
            ('x', v) if as_int(v).is_some() => {
                let n = as_int(v).unwrap_or(0);
                format!(
                    "{}{}{:x}",
                    if n < 0 { "-" } else { "" },
                    if sharp { "0x" } else { "" },
                    n.abs()
                )
            }
            ('X', v) if as_int(v).is_some() => {
                let n = as_int(v).unwrap_or(0);
                format!(
                    "{}{}{:X}",
                    if n < 0 { "-" } else { "" },
                    if sharp { "0X" } else { "" },
                    n.abs()
                )
            }
            ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('X', Value::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
            ('o', v) if as_int(v).is_some() => format!("{:o}", as_int(v).unwrap_or(0)),
            ('b', v) if as_int(v).is_some() => format!("{:b}", as_int(v).unwrap_or(0)),
            ('c', v) if as_int(v).is_some() => u32::try_from(as_int(v).unwrap_or(0))
                .ok()
                .and_then(char::from_u32)
                .map_or("\u{fffd}".to_string(), |c| c.to_string()),
            ('q', Value::Str(s)) => format!("{s:?}"),
            ('t', Value::Bool(b)) => b.to_string(),
            ('f' | 'F', v) => match v {
                Value::Float(x) => format!("{:.*}", prec.unwrap_or(6), x),
                v if as_int(v).is_some() => format!("%!{verb}(int={v})"),
                v => format!("%!{verb}({}={v})", v.kind()),
            },
            ('e' | 'g', Value::Float(x)) => go_float(*x),
            (verb, v) => format!("%!{verb}({}={v})", v.kind()),
        };
        if let Ok(w) = width.parse::<usize>() {
            let len = s.chars().count();
            if len < w {
                let pad = w - len;
                if minus {
                    s.push_str(&" ".repeat(pad));
                } else if zero && verb != 's' && verb != 'v' {
                    let (sign, digits) = match s.strip_prefix('-') {
                        Some(d) => ("-", d.to_string()),
                        None => ("", s.clone()),
                    };
                    s = format!("{sign}{}{digits}", "0".repeat(pad));
                } else if zero {
                    s = format!("{}{s}", "0".repeat(pad));
                } else {
                    s = format!("{}{s}", " ".repeat(pad));
                }
            }
        }
        out.push_str(&s);
    }
    if ai < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[ai..]
            .iter()
            .map(|a| format!("{}={a}", a.kind()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct D(Value);
    impl Data for D {
        fn root(&self) -> &Value {
            &self.0
        }
        fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
            match (name, args) {
                ("Meta", [Value::Str(l)]) if l == "k/ns" => Ok(Value::Str("default".into())),
                ("Meta", [Value::Str(_)]) => Ok(Value::Str(String::new())),
                _ => Err("wrong number of args for Meta: want 1".into()),
            }
        }
    }

    fn data() -> D {
        let s = |x: &str| Value::Str(x.to_string());
        D(Value::Struct(
            vec![
                ("Name", s("ip-10-1-2-3.example.")),
                ("Zone", s("example.")),
                ("Type", s("A")),
                ("Class", s("IN")),
                (
                    "Match",
                    Value::List(vec![s("ip-10-1-2-3.example."), s("1"), s("ff")]),
                ),
                (
                    "Group",
                    Value::map(vec![
                        ("0".into(), s("ip-10-1-2-3.example.")),
                        ("b".into(), s("1")),
                        ("h".into(), s("ff")),
                    ]),
                ),
                (
                    "Question",
                    Value::Struct(
                        vec![
                            ("Name", s("ip-10-1-2-3.example.")),
                            ("Qtype", Value::Uint(1)),
                            ("Qclass", Value::Uint(1)),
                        ],
                        ";ip-10-1-2-3.example.\tIN\t A".into(),
                    ),
                ),
                ("Meta", Value::Method("Meta")),
            ],
            "{...}".into(),
        ))
    }

    fn run(t: &str) -> Result<String, String> {
        Template::parse("answer", t)?.execute(&data())
    }

    #[test]
    fn fields_groups_index_and_functions() {
        assert_eq!(
            run("{{ .Name }} 60 IN {{ .Type }} 10.{{ .Group.b }}").unwrap(),
            "ip-10-1-2-3.example. 60 IN A 10.1"
        );
        assert_eq!(run("{{ index .Match 2 }}|{{ index .Group \"b\" }}|{{ index .Group \"zz\" }}|{{ .Group.zz }}").unwrap(), "ff|1||<no value>");
        assert_eq!(run("{{ parseInt .Group.h 16 8 }}").unwrap(), "255");
        assert_eq!(
            run("{{ .Group.h | printf \"%s-%03d\" \"x\" }}").unwrap_or_default(),
            "x-%!d(string=ff)"
        );
        assert_eq!(run("{{ printf \"%d.%02x\" 7 10 }}").unwrap(), "7.0a");
        assert_eq!(
            run("{{ .Meta \"k/ns\" }}:{{ .Meta \"other\" }}").unwrap(),
            "default:"
        );
        assert_eq!(
            run("{{ .Question.Name }} {{ .Question.Qtype }} {{ len .Match }}").unwrap(),
            "ip-10-1-2-3.example. 1 3"
        );
        assert_eq!(
            run("{{ .Group }}").unwrap(),
            "map[0:ip-10-1-2-3.example. b:1 h:ff]"
        );
        assert_eq!(run("{{ .Match }}").unwrap(), "[ip-10-1-2-3.example. 1 ff]");
        let e = run("{{ parseInt .Group.h 10 8 }}").unwrap_err();
        assert!(
            e.contains("strconv.ParseUint: parsing \"ff\": invalid syntax"),
            "{e}"
        );
        assert!(run("{{ parseInt \"300\" 10 8 }}")
            .unwrap_err()
            .contains("value out of range"));
        assert!(run("{{ .Nope }}")
            .unwrap_err()
            .contains("can't evaluate field Nope"));
        assert!(run("{{ index .Match 9 }}")
            .unwrap_err()
            .contains("index out of range: 9"));
    }

    #[test]
    fn control_flow_and_variables() {
        assert_eq!(
            run("{{ if eq .Type \"A\" }}a{{ else if eq .Type \"AAAA\" }}b{{ else }}c{{ end }}")
                .unwrap(),
            "a"
        );
        assert_eq!(
            run("{{ if ne .Type \"A\" }}a{{ else }}c{{ end }}").unwrap(),
            "c"
        );
        assert_eq!(
            run("{{ range $i, $m := .Match }}{{ $i }}={{ $m }};{{ end }}").unwrap(),
            "0=ip-10-1-2-3.example.;1=1;2=ff;"
        );
        assert_eq!(
            run("{{ range .Group }}{{ . }},{{ end }}").unwrap(),
            "ip-10-1-2-3.example.,1,ff,"
        );
        assert_eq!(
            run("{{ $n := .Name }}{{ with .Group.b }}{{ . }}@{{ $n }}{{ end }}").unwrap(),
            "1@ip-10-1-2-3.example."
        );
        assert_eq!(
            run("{{ if and .Group.b (gt (len .Match) 2) }}y{{ end }}").unwrap(),
            "y"
        );
        assert_eq!(
            run("{{ if or .Group.zz (not .Name) }}y{{ else }}n{{ end }}").unwrap(),
            "n"
        );
        assert_eq!(
            run("{{ if lt (parseInt .Group.b 10 8) 5 }}small{{ end }}").unwrap(),
            "small"
        );
        assert_eq!(run("a  {{- .Type -}}  b {{/* note */}}c").unwrap(), "aAb c");
        assert_eq!(
            run("{{ range $.Match }}{{ $.Type }}{{ end }}").unwrap(),
            "AAA"
        );
        assert_eq!(
            run("{{ print 1 2 \"x\" 3 }}|{{ println \"a\" 1 }}").unwrap(),
            "1 2x3|a 1\n"
        );
    }

    #[test]
    fn unsupported_parts_fail_at_parse() {
        for (t, want) in [
            (
                "{{ .Name | upper }}",
                "template: answer:1: function \"upper\" not defined",
            ),
            ("{{ define \"x\" }}{{ end }}", "not supported by Sextant"),
            ("{{ template \"x\" }}", "not supported by Sextant"),
            ("{{ if .Name }}", "unexpected EOF in if"),
            ("{{ end }}", "unexpected {{end}}"),
            ("{{ .Name ", "unclosed action"),
            ("{{ $x }}", "undefined variable \"$x\""),
            ("{{ 'a' }}", "character constants are not supported"),
            (
                "x\n{{ html .Name }}",
                "template: answer:2: function \"html\" not defined",
            ),
        ] {
            let e = Template::parse("answer", t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn tree_prints_like_go() {
        for (t, want) in [
            (
                "{{ .Name }} 60 IN A {{ .Group.a }}",
                "{{.Name}} 60 IN A {{.Group.a}}",
            ),
            ("{{ parseInt .Group.b 16 8 }}", "{{parseInt .Group.b 16 8}}"),
            ("{{ index .Match 1 }} x", "{{index .Match 1}} x"),
            (
                "{{- if eq .Type \"A\" -}} a {{- else -}} b {{- end }}",
                "{{if eq .Type \"A\"}}a{{else}}b{{end}}",
            ),
            (
                "{{ $x := .Name }}{{ $x | printf \"%s\" }}",
                "{{$x := .Name}}{{$x | printf \"%s\"}}",
            ),
            (
                "{{ (index .Match 1) }}{{ /* c */ }}",
                "{{(index .Match 1)}}",
            ),
        ] {
            let tree = Template::parse("answer", t);
            match tree {
                Ok(tr) => assert_eq!(tr.to_string(), want, "{t}"),
                Err(e) => assert!(t.contains("/*"), "{t}: {e}"),
            }
        }
    }
}
