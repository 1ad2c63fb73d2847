//! The expression language of `view` (CoreDNS uses expr-lang/expr): lexer, parser, a type
//! check that rejects at start what expr rejects at compile time (unknown names, argument
//! counts, mismatched operand types, bad constant regexes), and an evaluator over a request
//! ([`Env`]). Common shapes (`incidr(client_ip(), '10.0.0.0/8')`, `type() == 'A'`,
//! `type() in [...]`, `name() == '...'`) are compiled to direct checks that allocate nothing.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use sextant_wire::{Class, IpNet, Name, RType};

/// What an expression can ask about the request it is evaluated for (CoreDNS's
/// `expression.DefaultEnv`).
pub(crate) trait Env {
    /// The question name as sent (`name()` lower-cases it).
    fn qname(&self) -> Option<&Name>;
    fn qtype(&self) -> RType;
    fn qclass(&self) -> Class;
    /// `udp` or `tcp`.
    fn proto(&self) -> &'static str;
    /// Size of the request in bytes.
    fn size(&self) -> i64;
    fn client_ip(&self) -> IpAddr;
    fn client_port(&self) -> u16;
    fn server_ip(&self) -> IpAddr;
    fn server_port(&self) -> u16;
    fn id(&self) -> i64;
    fn opcode(&self) -> i64;
    fn do_bit(&self) -> bool;
    /// The buffer size CoreDNS reports: UDP max(EDNS size, 512), TCP 65535.
    fn bufsize(&self) -> i64;
    /// The value of metadata `label`, if set.
    fn metadata(&self, label: &str) -> Option<String>;
}

/// A compile error: message and 1-based (line, column) inside the expression, like expr's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompileError {
    pub(crate) msg: String,
    /// Byte offset in the source.
    pub(crate) offset: usize,
    pub(crate) line: usize,
    pub(crate) col: usize,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.msg, self.line, self.col)
    }
}

/// A runtime value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Array(_) => "[]interface {}",
        }
    }
}

/// Static types for the compile-time check (`Any`: not known until run time).
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Any,
    Nil,
    Bool,
    Int,
    Float,
    Str,
    Array(Box<Ty>),
}

impl Ty {
    fn name(&self) -> String {
        match self {
            Ty::Any => "interface {}".into(),
            Ty::Nil => "nil".into(),
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Float => "float64".into(),
            Ty::Str => "string".into(),
            Ty::Array(t) => format!("[]{}", t.name()),
        }
    }
    fn is_number(&self) -> bool {
        matches!(self, Ty::Int | Ty::Float)
    }
    fn maybe_number(&self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Any)
    }
    fn maybe(&self, t: &Ty) -> bool {
        *self == Ty::Any || self == t
    }
    fn maybe_array(&self) -> bool {
        matches!(self, Ty::Array(_) | Ty::Any)
    }
}

/// Whether expr lets `l == r` compile.
fn comparable(l: &Ty, r: &Ty) -> bool {
    match (l, r) {
        (Ty::Any, _) | (_, Ty::Any) | (Ty::Nil, _) | (_, Ty::Nil) => true,
        (a, b) if a.is_number() && b.is_number() => true,
        (Ty::Array(_), Ty::Array(_)) => true,
        (a, b) => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    /// Operators and punctuation, including word operators (`and`, `in`, `matches`...).
    Op(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    offset: usize,
}

const WORD_OPS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
    "let",
    "if",
    "else",
];

const PUNCT: &[&str] = &[
    "**", "==", "!=", "<=", ">=", "&&", "||", "??", "?.", "..", "::", "!", "<", ">", "+", "-", "*",
    "/", "%", "^", "(", ")", "[", "]", "{", "}", ",", "?", ":", "|", ".", "#", ";", "=",
];

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, offset: usize, msg: impl Into<String>) -> CompileError {
        error_at(self.src, offset, msg)
    }

    fn tokens(mut self) -> Result<Vec<Token>, CompileError> {
        let mut out = Vec::new();
        loop {
            let t = self.next()?;
            let eof = t.tok == Tok::Eof;
            out.push(t);
            if eof {
                return Ok(out);
            }
        }
    }

    fn next(&mut self) -> Result<Token, CompileError> {
        let b = self.src.as_bytes();
        // Whitespace and comments.
        loop {
            while self.pos < b.len() && (b[self.pos] as char).is_ascii_whitespace() {
                self.pos += 1;
            }
            if self.src[self.pos..].starts_with("//") {
                while self.pos < b.len() && b[self.pos] != b'\n' {
                    self.pos += 1;
                }
                continue;
            }
            if self.src[self.pos..].starts_with("/*") {
                match self.src[self.pos + 2..].find("*/") {
                    Some(end) => self.pos += end + 4,
                    None => return Err(self.err(self.pos, "unclosed comment")),
                }
                continue;
            }
            break;
        }
        let start = self.pos;
        let Some(&c) = b.get(self.pos) else {
            return Ok(Token {
                tok: Tok::Eof,
                offset: start,
            });
        };
        let tok = if c.is_ascii_digit()
            || (c == b'.' && b.get(self.pos + 1).is_some_and(u8::is_ascii_digit))
        {
            self.number()?
        } else if c == b'\'' || c == b'"' {
            Tok::Str(self.quoted(c)?)
        } else if c == b'`' {
            match self.src[self.pos + 1..].find('`') {
                Some(end) => {
                    let s = self.src[self.pos + 1..self.pos + 1 + end].to_string();
                    self.pos += end + 2;
                    Tok::Str(s)
                }
                None => return Err(self.err(start, "literal not terminated")),
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            let mut end = self.pos + 1;
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
            let word = &self.src[self.pos..end];
            self.pos = end;
            match WORD_OPS.iter().find(|w| **w == word) {
                Some(w) => Tok::Op(w),
                None => Tok::Ident(word.to_string()),
            }
        } else {
            match PUNCT.iter().find(|p| self.src[self.pos..].starts_with(**p)) {
                Some(p) => {
                    self.pos += p.len();
                    Tok::Op(p)
                }
                None => {
                    let ch = self.src[self.pos..].chars().next().unwrap_or('?');
                    return Err(self.err(
                        start,
                        format!("unrecognized character: U+{:04X} '{ch}'", ch as u32),
                    ));
                }
            }
        };
        Ok(Token { tok, offset: start })
    }

    fn number(&mut self) -> Result<Tok, CompileError> {
        let b = self.src.as_bytes();
        let start = self.pos;
        let mut end = self.pos;
        let radix_prefix = b.get(end) == Some(&b'0')
            && matches!(
                b.get(end + 1),
                Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
            );
        if radix_prefix {
            end += 2;
            while end < b.len() && (b[end].is_ascii_hexdigit() || b[end] == b'_') {
                end += 1;
            }
        } else {
            while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'_') {
                end += 1;
            }
            // A fraction, unless it is the range operator `..`.
            if b.get(end) == Some(&b'.') && b.get(end + 1) != Some(&b'.') {
                end += 1;
                while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'_') {
                    end += 1;
                }
            }
            if matches!(b.get(end), Some(b'e' | b'E')) {
                let mut e = end + 1;
                if matches!(b.get(e), Some(b'+' | b'-')) {
                    e += 1;
                }
                if b.get(e).is_some_and(u8::is_ascii_digit) {
                    end = e;
                    while end < b.len() && b[end].is_ascii_digit() {
                        end += 1;
                    }
                }
            }
        }
        self.pos = end;
        let text: String = self.src[start..end].chars().filter(|c| *c != '_').collect();
        let lower = text.to_ascii_lowercase();
        let parsed = if let Some(h) = lower.strip_prefix("0x") {
            i64::from_str_radix(h, 16)
                .map(Tok::Int)
                .map_err(|e| format!("invalid hex literal: {e}"))
        } else if let Some(o) = lower.strip_prefix("0o") {
            i64::from_str_radix(o, 8)
                .map(Tok::Int)
                .map_err(|e| format!("invalid octal literal: {e}"))
        } else if let Some(bin) = lower.strip_prefix("0b") {
            i64::from_str_radix(bin, 2)
                .map(Tok::Int)
                .map_err(|e| format!("invalid binary literal: {e}"))
        } else if lower.contains('.') || lower.contains('e') {
            lower
                .parse::<f64>()
                .map(Tok::Float)
                .map_err(|e| format!("invalid float literal: {e}"))
        } else {
            lower
                .parse::<i64>()
                .map(Tok::Int)
                .map_err(|e| format!("invalid integer literal: {e}"))
        };
        parsed.map_err(|m| self.err(start, m))
    }

    fn quoted(&mut self, q: u8) -> Result<String, CompileError> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.src[self.pos + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c as u32 == q as u32 {
                self.pos = self.pos + 1 + i + 1;
                return Ok(out);
            }
            if c == '\n' {
                break;
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some((_, e)) = chars.next() else { break };
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\u{7}'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'v' => out.push('\u{b}'),
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = (0..n)
                        .filter_map(|_| chars.next().map(|(_, c)| c))
                        .collect();
                    let v = u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == n)
                        .and_then(char::from_u32);
                    match v {
                        Some(ch) => out.push(ch),
                        None => return Err(self.err(start, "invalid char escape")),
                    }
                }
                '0'..='7' => {
                    let mut v = e as u32 - '0' as u32;
                    for _ in 0..2 {
                        match chars.next() {
                            Some((_, d)) if d.is_digit(8) => v = v * 8 + (d as u32 - '0' as u32),
                            _ => return Err(self.err(start, "invalid char escape")),
                        }
                    }
                    match char::from_u32(v) {
                        Some(ch) if v <= 255 => out.push(ch),
                        _ => return Err(self.err(start, "invalid char escape")),
                    }
                }
                _ => return Err(self.err(start, "invalid char escape")),
            }
        }
        Err(self.err(start, "literal not terminated"))
    }
}

/// An error at byte `offset` of `src`, with expr's 1-based line and column.
fn error_at(src: &str, offset: usize, msg: impl Into<String>) -> CompileError {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    CompileError {
        msg: msg.into(),
        offset,
        line,
        col,
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax tree

#[derive(Clone, Debug)]
enum Ast {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<(Ast, usize)>),
    Ident(String),
    Call(String, Vec<(Ast, usize)>),
    Unary(&'static str, Box<(Ast, usize)>),
    Binary(&'static str, Box<(Ast, usize)>, Box<(Ast, usize)>),
    Ternary(Box<(Ast, usize)>, Box<(Ast, usize)>, Box<(Ast, usize)>),
    Index(Box<(Ast, usize)>, Box<(Ast, usize)>),
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
}

fn precedence(op: &str) -> Option<(u16, bool)> {
    // (precedence, right-associative), as expr's parser/operator tables.
    Some(match op {
        "|" => (0, false),
        "or" | "||" => (10, false),
        "and" | "&&" => (15, false),
        "==" | "!=" | "<" | ">" | ">=" | "<=" | "in" | "matches" | "contains" | "startsWith"
        | "endsWith" => (20, false),
        ".." => (25, false),
        "+" | "-" => (30, false),
        "*" | "/" | "%" => (60, false),
        "**" | "^" => (100, true),
        "??" => (500, false),
        _ => return None,
    })
}

fn is_comparison(op: &str) -> bool {
    matches!(op, "<" | ">" | "<=" | ">=")
}

impl Parser<'_> {
    fn cur(&self) -> &Token {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }
    fn bump(&mut self) {
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
    }
    fn err(&self, offset: usize, msg: impl Into<String>) -> CompileError {
        error_at(self.src, offset, msg)
    }
    fn unexpected(&self) -> CompileError {
        let t = self.cur();
        let desc = match &t.tok {
            Tok::Eof => return self.err(t.offset, "unexpected end of expression"),
            Tok::Ident(s) => format!("Identifier(\"{s}\")"),
            Tok::Int(_) | Tok::Float(_) => format!("Number(\"{}\")", self.text(t)),
            Tok::Str(s) => format!("String(\"{s}\")"),
            Tok::Op(o) => {
                if matches!(*o, "(" | ")" | "[" | "]" | "{" | "}") {
                    format!("Bracket(\"{o}\")")
                } else {
                    format!("Operator(\"{o}\")")
                }
            }
        };
        self.err(t.offset, format!("unexpected token {desc}"))
    }
    fn text(&self, t: &Token) -> &str {
        let end = self
            .toks
            .iter()
            .find(|n| n.offset > t.offset)
            .map(|n| n.offset)
            .unwrap_or(self.src.len());
        self.src[t.offset..end].trim_end()
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(&self.cur().tok, Tok::Op(o) if *o == op)
    }
    fn expect(&mut self, op: &str) -> Result<(), CompileError> {
        if self.is_op(op) {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn program(&mut self) -> Result<(Ast, usize), CompileError> {
        let e = self.expression(0)?;
        if self.is_op(";") {
            self.bump();
            if self.cur().tok != Tok::Eof {
                return Err(self.err(
                    self.cur().offset,
                    "sequences of expressions are not supported by this build",
                ));
            }
        }
        if self.cur().tok != Tok::Eof {
            return Err(self.unexpected());
        }
        Ok(e)
    }

    fn expression(&mut self, min_prec: u16) -> Result<(Ast, usize), CompileError> {
        if min_prec == 0 && self.is_op("let") {
            return Err(self.err(
                self.cur().offset,
                "variables (let) are not supported by this build",
            ));
        }
        if min_prec == 0 && self.is_op("if") {
            return self.if_else();
        }
        let mut left = self.primary()?;
        let mut prev: Option<&'static str> = None;
        while let Tok::Op(mut op) = self.cur().tok {
            let op_offset = self.cur().offset;
            let mut negate = false;
            if op == "not" {
                let save = self.i;
                self.bump();
                match self.cur().tok {
                    Tok::Op(o @ ("in" | "matches" | "contains" | "startsWith" | "endsWith")) => {
                        if precedence(o).is_some_and(|(p, _)| p >= min_prec) {
                            op = o;
                            negate = true;
                        } else {
                            self.i = save;
                            break;
                        }
                    }
                    _ => return Err(self.unexpected()),
                }
            }
            let Some((prec, right_assoc)) = precedence(op) else {
                break;
            };
            if prec < min_prec {
                if negate {
                    self.i -= 1;
                }
                break;
            }
            self.bump();
            if op == "|" {
                let name_off = self.cur().offset;
                let Tok::Ident(name) = self.cur().tok.clone() else {
                    return Err(self.unexpected());
                };
                self.bump();
                let mut args = vec![left];
                self.expect("(")?;
                self.arguments(&mut args)?;
                left = (Ast::Call(name, args), name_off);
                prev = Some(op);
                continue;
            }
            if prev == Some("??") && op != "??" {
                return Err(self.err(
                    op_offset,
                    format!("Operator ({op}) and coalesce expressions (??) cannot be mixed. Wrap either by parentheses."),
                ));
            }
            if is_comparison(op) {
                // a < b < c is a < b && b < c.
                let mut root: Option<(Ast, usize)> = None;
                let mut lhs = left;
                let mut cmp_op = op;
                let mut cmp_off = op_offset;
                loop {
                    let rhs = self.expression(prec + 1)?;
                    let node = (
                        Ast::Binary(cmp_op, Box::new(lhs), Box::new(rhs.clone())),
                        cmp_off,
                    );
                    root = Some(match root {
                        None => node,
                        Some(r) => (Ast::Binary("&&", Box::new(r), Box::new(node)), cmp_off),
                    });
                    lhs = rhs;
                    match self.cur().tok {
                        Tok::Op(o) if is_comparison(o) => {
                            cmp_op = o;
                            cmp_off = self.cur().offset;
                            self.bump();
                        }
                        _ => break,
                    }
                }
                left = root.unwrap_or((Ast::Nil, op_offset));
                prev = Some(op);
                continue;
            }
            let right = if right_assoc {
                self.expression(prec)?
            } else {
                self.expression(prec + 1)?
            };
            left = (Ast::Binary(op, Box::new(left), Box::new(right)), op_offset);
            if negate {
                left = (Ast::Unary("not", Box::new(left)), op_offset);
            }
            prev = Some(op);
        }
        if min_prec == 0 {
            while self.is_op("?") {
                let q_off = self.cur().offset;
                self.bump();
                let (yes, no) = if self.is_op(":") {
                    self.bump();
                    (left.clone(), self.expression(0)?)
                } else {
                    let y = self.expression(0)?;
                    self.expect(":")?;
                    (y, self.expression(0)?)
                };
                left = (
                    Ast::Ternary(Box::new(left), Box::new(yes), Box::new(no)),
                    q_off,
                );
            }
        }
        Ok(left)
    }

    fn if_else(&mut self) -> Result<(Ast, usize), CompileError> {
        let off = self.cur().offset;
        self.bump();
        let cond = self.expression(0)?;
        self.expect("{")?;
        let yes = self.expression(0)?;
        self.expect("}")?;
        self.expect("else")?;
        let no = if self.is_op("if") {
            self.if_else()?
        } else {
            self.expect("{")?;
            let n = self.expression(0)?;
            self.expect("}")?;
            n
        };
        Ok((
            Ast::Ternary(Box::new(cond), Box::new(yes), Box::new(no)),
            off,
        ))
    }

    fn primary(&mut self) -> Result<(Ast, usize), CompileError> {
        let t = self.cur().clone();
        if let Tok::Op(op @ ("not" | "!" | "-" | "+")) = t.tok {
            self.bump();
            let prec = if matches!(op, "not" | "!") { 50 } else { 90 };
            let e = self.expression(prec)?;
            return self.postfix((Ast::Unary(op, Box::new(e)), t.offset));
        }
        if let Tok::Op("(") = t.tok {
            self.bump();
            let e = self.expression(0)?;
            if self.is_op(";") {
                return Err(self.err(
                    self.cur().offset,
                    "sequences of expressions are not supported by this build",
                ));
            }
            self.expect(")")?;
            return self.postfix(e);
        }
        let node = match t.tok {
            Tok::Ident(ref name) => {
                self.bump();
                match name.as_str() {
                    "true" => (Ast::Bool(true), t.offset),
                    "false" => (Ast::Bool(false), t.offset),
                    "nil" => (Ast::Nil, t.offset),
                    _ if self.is_op("(") => {
                        self.bump();
                        let mut args = Vec::new();
                        self.arguments(&mut args)?;
                        (Ast::Call(name.clone(), args), t.offset)
                    }
                    _ => (Ast::Ident(name.clone()), t.offset),
                }
            }
            Tok::Int(n) => {
                self.bump();
                (Ast::Int(n), t.offset)
            }
            Tok::Float(f) => {
                self.bump();
                (Ast::Float(f), t.offset)
            }
            Tok::Str(ref s) => {
                self.bump();
                (Ast::Str(s.clone()), t.offset)
            }
            Tok::Op("[") => {
                self.bump();
                let mut items = Vec::new();
                while !self.is_op("]") {
                    if !items.is_empty() {
                        self.expect(",")?;
                        if self.is_op("]") {
                            break; // trailing comma
                        }
                    }
                    items.push(self.expression(0)?);
                }
                self.expect("]")?;
                (Ast::Array(items), t.offset)
            }
            Tok::Op("{") => {
                return Err(self.err(t.offset, "maps are not supported by this build"));
            }
            Tok::Op("#") | Tok::Op(".") => {
                return Err(self.err(t.offset, "predicates are not supported by this build"));
            }
            _ => return Err(self.unexpected()),
        };
        self.postfix(node)
    }

    fn arguments(&mut self, args: &mut Vec<(Ast, usize)>) -> Result<(), CompileError> {
        let first = args.len();
        while !self.is_op(")") {
            if args.len() > first {
                self.expect(",")?;
                if self.is_op(")") {
                    break;
                }
            }
            args.push(self.expression(0)?);
        }
        self.expect(")")
    }

    fn postfix(&mut self, mut node: (Ast, usize)) -> Result<(Ast, usize), CompileError> {
        loop {
            if self.is_op("[") {
                let off = self.cur().offset;
                self.bump();
                if self.is_op(":") {
                    return Err(self.err(off, "slices are not supported by this build"));
                }
                let idx = self.expression(0)?;
                if self.is_op(":") {
                    return Err(self.err(off, "slices are not supported by this build"));
                }
                self.expect("]")?;
                node = (Ast::Index(Box::new(node), Box::new(idx)), off);
            } else if self.is_op(".") || self.is_op("?.") {
                return Err(self.err(
                    self.cur().offset,
                    "member access is not supported by this build",
                ));
            } else {
                return Ok(node);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checked program

/// The request facts an expression can call for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fact {
    Type,
    Name,
    Class,
    Proto,
    Size,
    ClientIp,
    Port,
    Id,
    Opcode,
    Do,
    Bufsize,
    ServerIp,
    ServerPort,
}

impl Fact {
    fn of(name: &str) -> Option<Fact> {
        Some(match name {
            "type" => Fact::Type,
            "name" => Fact::Name,
            "class" => Fact::Class,
            "proto" => Fact::Proto,
            "size" => Fact::Size,
            "client_ip" => Fact::ClientIp,
            "port" => Fact::Port,
            "id" => Fact::Id,
            "opcode" => Fact::Opcode,
            "do" => Fact::Do,
            "bufsize" => Fact::Bufsize,
            "server_ip" => Fact::ServerIp,
            "server_port" => Fact::ServerPort,
            _ => return None,
        })
    }
    fn ty(self) -> Ty {
        match self {
            Fact::Size | Fact::Id | Fact::Opcode | Fact::Bufsize => Ty::Int,
            Fact::Do => Ty::Bool,
            _ => Ty::Str,
        }
    }
}

/// Built-in functions of expr that this build has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Builtin {
    Len,
    Lower,
    Upper,
    Trim,
    TrimPrefix,
    TrimSuffix,
    HasPrefix,
    HasSuffix,
    IndexOf,
    LastIndexOf,
    Split,
    Join,
    Repeat,
    Int,
    Float,
    String,
    Abs,
    Max,
    Min,
}

impl Builtin {
    fn of(name: &str) -> Option<Builtin> {
        Some(match name {
            "len" => Builtin::Len,
            "lower" => Builtin::Lower,
            "upper" => Builtin::Upper,
            "trim" => Builtin::Trim,
            "trimPrefix" => Builtin::TrimPrefix,
            "trimSuffix" => Builtin::TrimSuffix,
            "hasPrefix" => Builtin::HasPrefix,
            "hasSuffix" => Builtin::HasSuffix,
            "indexOf" => Builtin::IndexOf,
            "lastIndexOf" => Builtin::LastIndexOf,
            "split" => Builtin::Split,
            "join" => Builtin::Join,
            "repeat" => Builtin::Repeat,
            "int" => Builtin::Int,
            "float" => Builtin::Float,
            "string" => Builtin::String,
            "abs" => Builtin::Abs,
            "max" => Builtin::Max,
            "min" => Builtin::Min,
            _ => return None,
        })
    }
    /// (minimum, maximum) argument count and result type.
    fn sig(self) -> (usize, usize, Ty) {
        match self {
            Builtin::Len => (1, 1, Ty::Int),
            Builtin::Lower | Builtin::Upper => (1, 1, Ty::Str),
            Builtin::Trim => (1, 2, Ty::Str),
            Builtin::TrimPrefix | Builtin::TrimSuffix => (2, 2, Ty::Str),
            Builtin::HasPrefix | Builtin::HasSuffix => (2, 2, Ty::Bool),
            Builtin::IndexOf | Builtin::LastIndexOf => (2, 2, Ty::Int),
            Builtin::Split => (2, 3, Ty::Array(Box::new(Ty::Str))),
            Builtin::Join => (1, 2, Ty::Str),
            Builtin::Repeat => (2, 2, Ty::Str),
            Builtin::Int => (1, 1, Ty::Int),
            Builtin::Float => (1, 1, Ty::Float),
            Builtin::String => (1, 1, Ty::Str),
            Builtin::Abs => (1, 1, Ty::Any),
            Builtin::Max | Builtin::Min => (1, usize::MAX, Ty::Any),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    Matches,
    Contains,
    StartsWith,
    EndsWith,
    Range,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Coalesce,
}

/// A checked, evaluable expression.
#[derive(Clone, Debug)]
enum Node {
    Const(Value),
    Array(Vec<Node>),
    Fact(Fact),
    Metadata(Box<Node>),
    InCidr(Box<Node>, Box<Node>),
    Builtin(Builtin, Vec<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    Plus(Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    /// `x matches 'constant'`: the regex compiled once.
    MatchesConst(Box<Node>, Box<regex::Regex>),
    Ternary(Box<Node>, Box<Node>, Box<Node>),
    Index(Box<Node>, Box<Node>),
    // Direct checks for common shapes (no strings built).
    ClientInNet(Net),
    ServerInNet(Net),
    TypeIs(RType),
    TypeIn(Vec<RType>),
    NameIs(Name),
}

/// A parsed CIDR (Go's `net.ParseCIDR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Net(IpNet);

impl Net {
    pub(crate) fn parse(s: &str) -> Option<Net> {
        IpNet::parse(s).ok().map(Net)
    }

    /// Go's `IPNet.Contains`: an IPv4 net also contains IPv4-mapped IPv6 addresses.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.0.addr(), ip) {
            (IpAddr::V4(_), IpAddr::V6(a)) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        self.0.contains(&ip)
    }
}

/// A compiled expression.
#[derive(Clone, Debug)]
pub(crate) struct Program {
    root: Node,
}

/// Compiles `src` as CoreDNS's `view` does (`expr.Compile` with its environment and the
/// `type` builtin disabled, so `type()` is the request's type).
pub(crate) fn compile(src: &str) -> Result<Program, CompileError> {
    let toks = Lexer { src, pos: 0 }.tokens()?;
    let mut p = Parser { src, toks, i: 0 };
    let ast = p.program()?;
    let c = Checker { src };
    let (node, _) = c.check(&ast)?;
    Ok(Program {
        root: optimize(node),
    })
}

struct Checker<'a> {
    src: &'a str,
}

impl Checker<'_> {
    fn err(&self, offset: usize, msg: impl Into<String>) -> CompileError {
        error_at(self.src, offset, msg)
    }

    fn check(&self, (ast, off): &(Ast, usize)) -> Result<(Node, Ty), CompileError> {
        let off = *off;
        Ok(match ast {
            Ast::Nil => (Node::Const(Value::Nil), Ty::Nil),
            Ast::Bool(b) => (Node::Const(Value::Bool(*b)), Ty::Bool),
            Ast::Int(i) => (Node::Const(Value::Int(*i)), Ty::Int),
            Ast::Float(f) => (Node::Const(Value::Float(*f)), Ty::Float),
            Ast::Str(s) => (Node::Const(Value::Str(s.clone())), Ty::Str),
            Ast::Array(items) => {
                let mut nodes = Vec::new();
                let mut elem: Option<Ty> = None;
                for it in items {
                    let (n, t) = self.check(it)?;
                    elem = Some(match elem {
                        None => t,
                        Some(e) if e == t => e,
                        Some(_) => Ty::Any,
                    });
                    nodes.push(n);
                }
                (
                    Node::Array(nodes),
                    Ty::Array(Box::new(elem.unwrap_or(Ty::Any))),
                )
            }
            Ast::Ident(name) => {
                if name == "$env" {
                    return Err(self.err(off, "$env is not supported by this build"));
                }
                if Fact::of(name).is_some() || matches!(name.as_str(), "incidr" | "metadata") {
                    // A function used as a value: expr allows it, but it is never true.
                    return Err(self.err(off, format!("{name} is a function; call it as {name}()")));
                }
                return Err(self.err(off, format!("unknown name {name}")));
            }
            Ast::Call(name, args) => self.call(name, args, off)?,
            Ast::Unary(op, e) => {
                let (n, t) = self.check(e)?;
                match *op {
                    "not" | "!" => {
                        if !t.maybe(&Ty::Bool) {
                            return Err(self.err(
                                off,
                                format!("invalid operation: {op} (mismatched type {})", t.name()),
                            ));
                        }
                        (Node::Not(Box::new(n)), Ty::Bool)
                    }
                    _ => {
                        if !t.maybe_number() {
                            return Err(self.err(
                                off,
                                format!("invalid operation: {op} (mismatched type {})", t.name()),
                            ));
                        }
                        let node = if *op == "-" {
                            Node::Neg(Box::new(n))
                        } else {
                            Node::Plus(Box::new(n))
                        };
                        (node, t)
                    }
                }
            }
            Ast::Binary(op, l, r) => self.binary(op, l, r, off)?,
            Ast::Ternary(c, y, n) => {
                let (cn, ct) = self.check(c)?;
                if !ct.maybe(&Ty::Bool) {
                    return Err(self.err(
                        off,
                        format!("non-bool expression (type {}) used as condition", ct.name()),
                    ));
                }
                let (yn, yt) = self.check(y)?;
                let (nn, nt) = self.check(n)?;
                let t = if yt == nt { yt } else { Ty::Any };
                (Node::Ternary(Box::new(cn), Box::new(yn), Box::new(nn)), t)
            }
            Ast::Index(base, idx) => {
                let (bn, bt) = self.check(base)?;
                let (inn, it) = self.check(idx)?;
                let elem = match &bt {
                    Ty::Array(e) => {
                        if !it.maybe(&Ty::Int) {
                            return Err(self.err(
                                off,
                                format!(
                                    "array elements can only be selected using an integer (got {})",
                                    it.name()
                                ),
                            ));
                        }
                        (**e).clone()
                    }
                    Ty::Str => {
                        if !it.maybe(&Ty::Int) {
                            return Err(self.err(
                                off,
                                "string elements can only be selected using an integer",
                            ));
                        }
                        Ty::Str
                    }
                    Ty::Any => Ty::Any,
                    other => {
                        return Err(self.err(
                            off,
                            format!("type {} does not support indexing", other.name()),
                        ))
                    }
                };
                (Node::Index(Box::new(bn), Box::new(inn)), elem)
            }
        })
    }

    fn call(
        &self,
        name: &str,
        args: &[(Ast, usize)],
        off: usize,
    ) -> Result<(Node, Ty), CompileError> {
        let count = |want: usize| -> Result<(), CompileError> {
            match args.len().cmp(&want) {
                Ordering::Less => {
                    Err(self.err(off, format!("not enough arguments to call {name}")))
                }
                Ordering::Greater => {
                    Err(self.err(off, format!("too many arguments to call {name}")))
                }
                Ordering::Equal => Ok(()),
            }
        };
        let string_arg = |a: &(Ast, usize)| -> Result<Node, CompileError> {
            let (n, t) = self.check(a)?;
            if !t.maybe(&Ty::Str) {
                return Err(self.err(
                    a.1,
                    format!(
                        "cannot use {} as argument (type string) to call {name} ",
                        t.name()
                    ),
                ));
            }
            Ok(n)
        };
        if let Some(f) = Fact::of(name) {
            count(0)?;
            return Ok((Node::Fact(f), f.ty()));
        }
        match name {
            "incidr" => {
                count(2)?;
                let ip = string_arg(&args[0])?;
                let net = string_arg(&args[1])?;
                return Ok((Node::InCidr(Box::new(ip), Box::new(net)), Ty::Bool));
            }
            "metadata" => {
                count(1)?;
                let l = string_arg(&args[0])?;
                return Ok((Node::Metadata(Box::new(l)), Ty::Str));
            }
            _ => {}
        }
        let Some(b) = Builtin::of(name) else {
            if matches!(
                name,
                "all"
                    | "any"
                    | "none"
                    | "one"
                    | "filter"
                    | "map"
                    | "find"
                    | "findIndex"
                    | "findLast"
                    | "findLastIndex"
                    | "count"
                    | "sum"
                    | "groupBy"
                    | "sortBy"
                    | "reduce"
            ) {
                return Err(self.err(
                    off,
                    format!("the predicate builtin {name} is not supported by this build"),
                ));
            }
            if name == "type" {
                // Disabled as a builtin by CoreDNS; the env function takes no argument.
                return Err(self.err(off, "too many arguments to call type"));
            }
            return Err(self.err(off, format!("unknown name {name}")));
        };
        let (min, max, ty) = b.sig();
        if args.len() < min {
            return Err(self.err(off, format!("not enough arguments to call {name}")));
        }
        if args.len() > max {
            return Err(self.err(off, format!("too many arguments to call {name}")));
        }
        let mut nodes = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let (n, t) = self.check(a)?;
            let ok = match b {
                Builtin::Len => matches!(t, Ty::Str | Ty::Array(_) | Ty::Any),
                Builtin::Join if i == 0 => t.maybe_array(),
                Builtin::Repeat if i == 1 => t.maybe(&Ty::Int),
                Builtin::Split if i == 2 => t.maybe(&Ty::Int),
                Builtin::Int | Builtin::Float => {
                    matches!(t, Ty::Int | Ty::Float | Ty::Str | Ty::Any)
                }
                Builtin::String => true,
                Builtin::Abs => t.maybe_number(),
                Builtin::Max | Builtin::Min => t.maybe_number() || t.maybe_array(),
                _ => t.maybe(&Ty::Str),
            };
            if !ok {
                return Err(self.err(
                    a.1,
                    format!("invalid argument for {name} (type {})", t.name()),
                ));
            }
            nodes.push(n);
        }
        Ok((Node::Builtin(b, nodes), ty))
    }

    fn binary(
        &self,
        op: &str,
        l: &(Ast, usize),
        r: &(Ast, usize),
        off: usize,
    ) -> Result<(Node, Ty), CompileError> {
        let (ln, lt) = self.check(l)?;
        let (rn, rt) = self.check(r)?;
        let mismatch = || {
            self.err(
                off,
                format!(
                    "invalid operation: {op} (mismatched types {} and {})",
                    lt.name(),
                    rt.name()
                ),
            )
        };
        let bin = |o: BinOp, t: Ty| {
            Ok((
                Node::Binary(o, Box::new(ln.clone()), Box::new(rn.clone())),
                t,
            ))
        };
        match op {
            "or" | "||" | "and" | "&&" => {
                if !lt.maybe(&Ty::Bool) || !rt.maybe(&Ty::Bool) {
                    return Err(mismatch());
                }
                bin(
                    if op == "or" || op == "||" {
                        BinOp::Or
                    } else {
                        BinOp::And
                    },
                    Ty::Bool,
                )
            }
            "==" | "!=" => {
                if !comparable(&lt, &rt) {
                    return Err(mismatch());
                }
                bin(if op == "==" { BinOp::Eq } else { BinOp::Ne }, Ty::Bool)
            }
            "<" | ">" | "<=" | ">=" => {
                let ok = (lt.maybe_number() && rt.maybe_number())
                    || (lt.maybe(&Ty::Str) && rt.maybe(&Ty::Str));
                if !ok {
                    return Err(mismatch());
                }
                let o = match op {
                    "<" => BinOp::Lt,
                    ">" => BinOp::Gt,
                    "<=" => BinOp::Le,
                    _ => BinOp::Ge,
                };
                bin(o, Ty::Bool)
            }
            "in" => {
                match &rt {
                    Ty::Array(e) => {
                        if !comparable(&lt, e) {
                            return Err(mismatch());
                        }
                    }
                    Ty::Any => {}
                    _ => return Err(mismatch()),
                }
                bin(BinOp::In, Ty::Bool)
            }
            "matches" => {
                if !lt.maybe(&Ty::Str) || !rt.maybe(&Ty::Str) {
                    return Err(mismatch());
                }
                if let Node::Const(Value::Str(pat)) = &rn {
                    let re = regex::Regex::new(pat).map_err(|e| {
                        self.err(off, format!("error parsing regexp: {}", regex_msg(&e)))
                    })?;
                    return Ok((Node::MatchesConst(Box::new(ln), Box::new(re)), Ty::Bool));
                }
                bin(BinOp::Matches, Ty::Bool)
            }
            "contains" | "startsWith" | "endsWith" => {
                if !lt.maybe(&Ty::Str) || !rt.maybe(&Ty::Str) {
                    return Err(mismatch());
                }
                let o = match op {
                    "contains" => BinOp::Contains,
                    "startsWith" => BinOp::StartsWith,
                    _ => BinOp::EndsWith,
                };
                bin(o, Ty::Bool)
            }
            ".." => {
                if !lt.maybe(&Ty::Int) || !rt.maybe(&Ty::Int) {
                    return Err(mismatch());
                }
                bin(BinOp::Range, Ty::Array(Box::new(Ty::Int)))
            }
            "+" => {
                if lt.maybe_number() && rt.maybe_number() {
                    let t = if lt == Ty::Int && rt == Ty::Int {
                        Ty::Int
                    } else if lt.is_number() && rt.is_number() {
                        Ty::Float
                    } else {
                        Ty::Any
                    };
                    return bin(BinOp::Add, t);
                }
                if lt.maybe(&Ty::Str) && rt.maybe(&Ty::Str) {
                    return bin(BinOp::Add, Ty::Str);
                }
                if lt.maybe_array() && rt.maybe_array() {
                    return bin(BinOp::Add, Ty::Any);
                }
                Err(mismatch())
            }
            "-" | "*" => {
                if !lt.maybe_number() || !rt.maybe_number() {
                    return Err(mismatch());
                }
                let t = if lt == Ty::Int && rt == Ty::Int {
                    Ty::Int
                } else if lt.is_number() && rt.is_number() {
                    Ty::Float
                } else {
                    Ty::Any
                };
                bin(if op == "-" { BinOp::Sub } else { BinOp::Mul }, t)
            }
            "/" | "**" | "^" => {
                if !lt.maybe_number() || !rt.maybe_number() {
                    return Err(mismatch());
                }
                bin(if op == "/" { BinOp::Div } else { BinOp::Pow }, Ty::Float)
            }
            "%" => {
                if !lt.maybe(&Ty::Int) || !rt.maybe(&Ty::Int) {
                    return Err(mismatch());
                }
                bin(BinOp::Mod, Ty::Int)
            }
            "??" => {
                let t = if lt == rt { lt.clone() } else { Ty::Any };
                bin(BinOp::Coalesce, t)
            }
            _ => Err(self.err(off, format!("unknown operator {op}"))),
        }
    }
}

/// Go's regexp error texts start with the problem; Rust's regex error is multi-line.
fn regex_msg(e: &regex::Error) -> String {
    e.to_string()
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Record type mnemonics as miekg/dns prints them (IANA registry; `TYPEnnn` otherwise).
#[rustfmt::skip]
const TYPE_NAMES: &[(u16, &str)] = &[
    (0, "None"), (1, "A"), (2, "NS"), (3, "MD"), (4, "MF"), (5, "CNAME"), (6, "SOA"), (7, "MB"),
    (8, "MG"), (9, "MR"), (10, "NULL"), (12, "PTR"), (13, "HINFO"), (14, "MINFO"), (15, "MX"),
    (16, "TXT"), (17, "RP"), (18, "AFSDB"), (19, "X25"), (20, "ISDN"), (21, "RT"),
    (23, "NSAP-PTR"), (24, "SIG"), (25, "KEY"), (26, "PX"), (27, "GPOS"), (28, "AAAA"),
    (29, "LOC"), (30, "NXT"), (31, "EID"), (32, "NIMLOC"), (33, "SRV"), (34, "ATMA"),
    (35, "NAPTR"), (36, "KX"), (37, "CERT"), (39, "DNAME"), (41, "OPT"), (42, "APL"), (43, "DS"),
    (44, "SSHFP"), (45, "IPSECKEY"), (46, "RRSIG"), (47, "NSEC"), (48, "DNSKEY"), (49, "DHCID"),
    (50, "NSEC3"), (51, "NSEC3PARAM"), (52, "TLSA"), (53, "SMIMEA"), (55, "HIP"), (56, "NINFO"),
    (57, "RKEY"), (58, "TALINK"), (59, "CDS"), (60, "CDNSKEY"), (61, "OPENPGPKEY"), (62, "CSYNC"),
    (63, "ZONEMD"), (64, "SVCB"), (65, "HTTPS"), (99, "SPF"), (100, "UINFO"), (101, "UID"),
    (102, "GID"), (103, "UNSPEC"), (104, "NID"), (105, "L32"), (106, "L64"), (107, "LP"),
    (108, "EUI48"), (109, "EUI64"), (128, "NXNAME"), (249, "TKEY"), (250, "TSIG"),
    (251, "IXFR"), (252, "AXFR"), (253, "MAILB"), (254, "MAILA"), (255, "ANY"), (256, "URI"),
    (257, "CAA"), (258, "AVC"), (260, "AMTRELAY"), (261, "RESINFO"), (32768, "TA"),
    (32769, "DLV"), (65535, "Reserved"),
];

/// What CoreDNS's `type()` returns for `t`.
fn type_string(t: RType) -> String {
    match TYPE_NAMES.iter().find(|(v, _)| *v == t.0) {
        Some((_, n)) => (*n).to_string(),
        None => format!("TYPE{}", t.0),
    }
}

/// What CoreDNS's `class()` returns for `c`.
fn class_string(c: Class) -> String {
    match c.0 {
        1 => "IN".into(),
        2 => "CS".into(),
        3 => "CH".into(),
        4 => "HS".into(),
        254 => "NONE".into(),
        255 => "ANY".into(),
        n => format!("CLASS{n}"),
    }
}

/// The record type whose `type()` string is exactly `s`, if there is one.
fn rtype_of(s: &str) -> Option<RType> {
    if let Some((v, _)) = TYPE_NAMES.iter().find(|(_, n)| *n == s) {
        return Some(RType(*v));
    }
    let v: u16 = s.strip_prefix("TYPE")?.parse().ok()?;
    // Only the spelling type() prints: "TYPE1" is never printed (it is "A"), nor "TYPE01".
    (type_string(RType(v)) == s).then_some(RType(v))
}

/// Rewrites common shapes into direct checks.
fn optimize(n: Node) -> Node {
    match n {
        Node::InCidr(ip, net) => match (*ip, *net) {
            (Node::Fact(Fact::ClientIp), Node::Const(Value::Str(c))) => match Net::parse(&c) {
                Some(net) => Node::ClientInNet(net),
                None => Node::InCidr(
                    Box::new(Node::Fact(Fact::ClientIp)),
                    Box::new(Node::Const(Value::Str(c))),
                ),
            },
            (Node::Fact(Fact::ServerIp), Node::Const(Value::Str(c))) => match Net::parse(&c) {
                Some(net) => Node::ServerInNet(net),
                None => Node::InCidr(
                    Box::new(Node::Fact(Fact::ServerIp)),
                    Box::new(Node::Const(Value::Str(c))),
                ),
            },
            (a, b) => Node::InCidr(Box::new(optimize(a)), Box::new(optimize(b))),
        },
        Node::Binary(BinOp::Eq, l, r) => match (*l, *r) {
            (Node::Fact(Fact::Type), Node::Const(Value::Str(s)))
            | (Node::Const(Value::Str(s)), Node::Fact(Fact::Type)) => match rtype_of(&s) {
                Some(t) => Node::TypeIs(t),
                None => Node::Const(Value::Bool(false)),
            },
            (Node::Fact(Fact::Name), Node::Const(Value::Str(s)))
            | (Node::Const(Value::Str(s)), Node::Fact(Fact::Name)) => match name_const(&s) {
                Some(name) => Node::NameIs(name),
                None => Node::Binary(
                    BinOp::Eq,
                    Box::new(Node::Fact(Fact::Name)),
                    Box::new(Node::Const(Value::Str(s))),
                ),
            },
            (a, b) => Node::Binary(BinOp::Eq, Box::new(optimize(a)), Box::new(optimize(b))),
        },
        Node::Binary(BinOp::In, l, r) => match (*l, *r) {
            (Node::Fact(Fact::Type), Node::Array(items))
                if items
                    .iter()
                    .all(|i| matches!(i, Node::Const(Value::Str(_)))) =>
            {
                let types = items
                    .iter()
                    .filter_map(|i| match i {
                        Node::Const(Value::Str(s)) => rtype_of(s),
                        _ => None,
                    })
                    .collect();
                Node::TypeIn(types)
            }
            (a, b) => Node::Binary(BinOp::In, Box::new(optimize(a)), Box::new(optimize(b))),
        },
        Node::Binary(op, l, r) => Node::Binary(op, Box::new(optimize(*l)), Box::new(optimize(*r))),
        Node::Not(e) => Node::Not(Box::new(optimize(*e))),
        Node::Ternary(c, y, n) => Node::Ternary(
            Box::new(optimize(*c)),
            Box::new(optimize(*y)),
            Box::new(optimize(*n)),
        ),
        Node::MatchesConst(e, re) => Node::MatchesConst(Box::new(optimize(*e)), re),
        other => other,
    }
}

/// A name constant that `name()` (lower-case presentation form) can equal, as a name.
fn name_const(s: &str) -> Option<Name> {
    let n = Name::parse(s).ok()?;
    (n.to_lowercase_string() == s).then_some(n)
}

// ---------------------------------------------------------------------------------------------
// Evaluation

type EvalResult = Result<Value, String>;

impl Program {
    /// True if the expression evaluates to `true` for `env`; false for any other value or a
    /// run-time error (CoreDNS's `View.Filter`).
    pub(crate) fn matches(&self, env: &dyn Env) -> bool {
        match &self.root {
            // The direct checks, without the value machinery.
            Node::ClientInNet(net) => net.contains(env.client_ip()),
            Node::TypeIs(t) => env.qtype() == *t,
            Node::TypeIn(ts) => ts.contains(&env.qtype()),
            n => matches!(eval(n, env), Ok(Value::Bool(true))),
        }
    }

    /// The expression's value (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn eval(&self, env: &dyn Env) -> EvalResult {
        eval(&self.root, env)
    }
}

fn fact(f: Fact, env: &dyn Env) -> Value {
    match f {
        Fact::Type => Value::Str(type_string(env.qtype())),
        Fact::Name => Value::Str(
            env.qname()
                .map(|n| n.to_lowercase_string())
                .unwrap_or_else(|| ".".into()),
        ),
        Fact::Class => Value::Str(class_string(env.qclass())),
        Fact::Proto => Value::Str(env.proto().into()),
        Fact::Size => Value::Int(env.size()),
        Fact::ClientIp => Value::Str(env.client_ip().to_string()),
        Fact::Port => Value::Str(env.client_port().to_string()),
        Fact::Id => Value::Int(env.id()),
        Fact::Opcode => Value::Int(env.opcode()),
        Fact::Do => Value::Bool(env.do_bit()),
        Fact::Bufsize => Value::Int(env.bufsize()),
        Fact::ServerIp => Value::Str(env.server_ip().to_string()),
        Fact::ServerPort => Value::Str(env.server_port().to_string()),
    }
}

fn as_str(v: &Value) -> Result<&str, String> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(format!("expected string, got {}", other.type_name())),
    }
}

fn eval(n: &Node, env: &dyn Env) -> EvalResult {
    Ok(match n {
        Node::Const(v) => v.clone(),
        Node::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| eval(i, env))
                .collect::<Result<_, _>>()?,
        ),
        Node::Fact(f) => fact(*f, env),
        Node::Metadata(l) => {
            let l = eval(l, env)?;
            Value::Str(env.metadata(as_str(&l)?).unwrap_or_default())
        }
        Node::InCidr(ip, net) => {
            let ip = eval(ip, env)?;
            let net = eval(net, env)?;
            let ip: IpAddr = as_str(&ip)?
                .parse()
                .map_err(|_| "first argument is not an IP address".to_string())?;
            let net =
                Net::parse(as_str(&net)?).ok_or_else(|| "invalid CIDR address".to_string())?;
            Value::Bool(net.contains(ip))
        }
        Node::ClientInNet(net) => Value::Bool(net.contains(env.client_ip())),
        Node::ServerInNet(net) => Value::Bool(net.contains(env.server_ip())),
        Node::TypeIs(t) => Value::Bool(env.qtype() == *t),
        Node::TypeIn(ts) => Value::Bool(ts.contains(&env.qtype())),
        Node::NameIs(name) => Value::Bool(env.qname().is_some_and(|q| q == name)),
        Node::Not(e) => match eval(e, env)? {
            Value::Bool(b) => Value::Bool(!b),
            other => return Err(format!("invalid operation: ! {}", other.type_name())),
        },
        Node::Neg(e) => match eval(e, env)? {
            Value::Int(i) => Value::Int(i.wrapping_neg()),
            Value::Float(f) => Value::Float(-f),
            other => return Err(format!("invalid operation: - {}", other.type_name())),
        },
        Node::Plus(e) => match eval(e, env)? {
            v @ (Value::Int(_) | Value::Float(_)) => v,
            other => return Err(format!("invalid operation: + {}", other.type_name())),
        },
        Node::MatchesConst(e, re) => {
            let v = eval(e, env)?;
            Value::Bool(re.is_match(as_str(&v)?))
        }
        Node::Ternary(c, y, no) => match eval(c, env)? {
            Value::Bool(true) => eval(y, env)?,
            Value::Bool(false) => eval(no, env)?,
            other => return Err(format!("non-bool {} used as condition", other.type_name())),
        },
        Node::Index(base, idx) => {
            let b = eval(base, env)?;
            let i = match eval(idx, env)? {
                Value::Int(i) => i,
                other => return Err(format!("cannot index with {}", other.type_name())),
            };
            match b {
                Value::Array(items) => {
                    let len = items.len() as i64;
                    let at = if i < 0 { len + i } else { i };
                    if at < 0 || at >= len {
                        return Err(format!("index out of range: {i} (array length is {len})"));
                    }
                    items[at as usize].clone()
                }
                Value::Str(s) => {
                    let chars: Vec<char> = s.chars().collect();
                    let len = chars.len() as i64;
                    let at = if i < 0 { len + i } else { i };
                    if at < 0 || at >= len {
                        return Err(format!("index out of range: {i} (array length is {len})"));
                    }
                    Value::Str(chars[at as usize].to_string())
                }
                other => return Err(format!("cannot index {}", other.type_name())),
            }
        }
        Node::Binary(op, l, r) => return binary(*op, l, r, env),
        Node::Builtin(b, args) => {
            let vals: Vec<Value> = args
                .iter()
                .map(|a| eval(a, env))
                .collect::<Result<_, _>>()?;
            return builtin(*b, vals);
        }
    })
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => (*x as f64) == *y,
        _ => a == b,
    }
}

fn binary(op: BinOp, l: &Node, r: &Node, env: &dyn Env) -> EvalResult {
    // Short-circuit operators first.
    match op {
        BinOp::Or | BinOp::And => {
            let lv = match eval(l, env)? {
                Value::Bool(b) => b,
                other => return Err(format!("invalid operation: bool and {}", other.type_name())),
            };
            if (op == BinOp::Or && lv) || (op == BinOp::And && !lv) {
                return Ok(Value::Bool(lv));
            }
            return match eval(r, env)? {
                Value::Bool(b) => Ok(Value::Bool(b)),
                other => Err(format!("invalid operation: bool and {}", other.type_name())),
            };
        }
        BinOp::Coalesce => {
            let lv = eval(l, env)?;
            return if lv == Value::Nil {
                eval(r, env)
            } else {
                Ok(lv)
            };
        }
        _ => {}
    }
    let lv = eval(l, env)?;
    let rv = eval(r, env)?;
    let mismatch = || {
        format!(
            "invalid operation: {} {op:?} {}",
            lv.type_name(),
            rv.type_name()
        )
    };
    Ok(match op {
        BinOp::Eq => Value::Bool(equal(&lv, &rv)),
        BinOp::Ne => Value::Bool(!equal(&lv, &rv)),
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let ord = match (&lv, &rv) {
                (Value::Str(a), Value::Str(b)) => a.cmp(b),
                (Value::Int(a), Value::Int(b)) => a.cmp(b),
                _ => match (num(&lv), num(&rv)) {
                    (Some(a), Some(b)) => a.partial_cmp(&b).ok_or_else(mismatch)?,
                    _ => return Err(mismatch()),
                },
            };
            Value::Bool(match op {
                BinOp::Lt => ord == Ordering::Less,
                BinOp::Gt => ord == Ordering::Greater,
                BinOp::Le => ord != Ordering::Greater,
                _ => ord != Ordering::Less,
            })
        }
        BinOp::In => match &rv {
            Value::Array(items) => Value::Bool(items.iter().any(|i| equal(i, &lv))),
            Value::Nil => Value::Bool(false),
            _ => return Err(mismatch()),
        },
        BinOp::Matches => {
            let re = regex::Regex::new(as_str(&rv)?).map_err(|e| e.to_string())?;
            Value::Bool(re.is_match(as_str(&lv)?))
        }
        BinOp::Contains => Value::Bool(as_str(&lv)?.contains(as_str(&rv)?)),
        BinOp::StartsWith => Value::Bool(as_str(&lv)?.starts_with(as_str(&rv)?)),
        BinOp::EndsWith => Value::Bool(as_str(&lv)?.ends_with(as_str(&rv)?)),
        BinOp::Range => match (&lv, &rv) {
            (Value::Int(a), Value::Int(b)) => {
                if b - a > 1_000_000 {
                    return Err("range too large".into());
                }
                Value::Array((*a..=*b).map(Value::Int).collect())
            }
            _ => return Err(mismatch()),
        },
        BinOp::Add => match (&lv, &rv) {
            (Value::Int(a), Value::Int(b)) => Value::Int(a.wrapping_add(*b)),
            (Value::Str(a), Value::Str(b)) => Value::Str(format!("{a}{b}")),
            (Value::Array(a), Value::Array(b)) => {
                Value::Array(a.iter().chain(b).cloned().collect())
            }
            _ => match (num(&lv), num(&rv)) {
                (Some(a), Some(b)) => Value::Float(a + b),
                _ => return Err(mismatch()),
            },
        },
        BinOp::Sub | BinOp::Mul => match (&lv, &rv) {
            (Value::Int(a), Value::Int(b)) => Value::Int(if op == BinOp::Sub {
                a.wrapping_sub(*b)
            } else {
                a.wrapping_mul(*b)
            }),
            _ => match (num(&lv), num(&rv)) {
                (Some(a), Some(b)) => Value::Float(if op == BinOp::Sub { a - b } else { a * b }),
                _ => return Err(mismatch()),
            },
        },
        BinOp::Div => match (num(&lv), num(&rv)) {
            (Some(a), Some(b)) => Value::Float(a / b),
            _ => return Err(mismatch()),
        },
        BinOp::Pow => match (num(&lv), num(&rv)) {
            (Some(a), Some(b)) => Value::Float(a.powf(b)),
            _ => return Err(mismatch()),
        },
        BinOp::Mod => match (&lv, &rv) {
            (Value::Int(_), Value::Int(0)) => return Err("integer divide by zero".into()),
            (Value::Int(a), Value::Int(b)) => Value::Int(a.wrapping_rem(*b)),
            _ => return Err(mismatch()),
        },
        BinOp::Or | BinOp::And | BinOp::Coalesce => unreachable!("handled above"),
    })
}

fn builtin(b: Builtin, args: Vec<Value>) -> EvalResult {
    let s = |i: usize| -> Result<&str, String> { as_str(&args[i]) };
    Ok(match b {
        Builtin::Len => match &args[0] {
            Value::Str(x) => Value::Int(x.chars().count() as i64),
            Value::Array(a) => Value::Int(a.len() as i64),
            other => {
                return Err(format!(
                    "invalid argument for len (type {})",
                    other.type_name()
                ))
            }
        },
        Builtin::Lower => Value::Str(s(0)?.to_lowercase()),
        Builtin::Upper => Value::Str(s(0)?.to_uppercase()),
        Builtin::Trim => match args.get(1) {
            Some(_) => {
                let cut: Vec<char> = s(1)?.chars().collect();
                Value::Str(s(0)?.trim_matches(|c| cut.contains(&c)).to_string())
            }
            None => Value::Str(s(0)?.trim().to_string()),
        },
        Builtin::TrimPrefix => Value::Str(s(0)?.strip_prefix(s(1)?).unwrap_or(s(0)?).to_string()),
        Builtin::TrimSuffix => Value::Str(s(0)?.strip_suffix(s(1)?).unwrap_or(s(0)?).to_string()),
        Builtin::HasPrefix => Value::Bool(s(0)?.starts_with(s(1)?)),
        Builtin::HasSuffix => Value::Bool(s(0)?.ends_with(s(1)?)),
        Builtin::IndexOf => Value::Int(
            s(0)?
                .find(s(1)?)
                .map(|i| s(0).map(|x| x[..i].chars().count() as i64))
                .transpose()?
                .unwrap_or(-1),
        ),
        Builtin::LastIndexOf => Value::Int(
            s(0)?
                .rfind(s(1)?)
                .map(|i| s(0).map(|x| x[..i].chars().count() as i64))
                .transpose()?
                .unwrap_or(-1),
        ),
        Builtin::Split => {
            let (x, sep) = (s(0)?, s(1)?);
            let parts: Vec<Value> = match args.get(2) {
                Some(Value::Int(n)) if *n > 0 => x
                    .splitn(*n as usize, sep)
                    .map(|p| Value::Str(p.into()))
                    .collect(),
                Some(Value::Int(0)) => Vec::new(),
                _ => x.split(sep).map(|p| Value::Str(p.into())).collect(),
            };
            Value::Array(parts)
        }
        Builtin::Join => {
            let sep = if args.len() > 1 {
                s(1)?.to_string()
            } else {
                String::new()
            };
            match &args[0] {
                Value::Array(items) => Value::Str(
                    items
                        .iter()
                        .map(|i| as_str(i).map(str::to_string))
                        .collect::<Result<Vec<_>, _>>()?
                        .join(&sep),
                ),
                other => {
                    return Err(format!(
                        "invalid argument for join (type {})",
                        other.type_name()
                    ))
                }
            }
        }
        Builtin::Repeat => match &args[1] {
            Value::Int(n) if (0..=10_000).contains(n) => Value::Str(s(0)?.repeat(*n as usize)),
            _ => return Err("invalid repeat count".into()),
        },
        Builtin::Int => match &args[0] {
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Int(*f as i64),
            Value::Str(x) => Value::Int(x.trim().parse().map_err(|e| format!("{e}"))?),
            other => return Err(format!("invalid operation: int({})", other.type_name())),
        },
        Builtin::Float => match &args[0] {
            Value::Int(i) => Value::Float(*i as f64),
            Value::Float(f) => Value::Float(*f),
            Value::Str(x) => Value::Float(x.trim().parse().map_err(|e| format!("{e}"))?),
            other => return Err(format!("invalid operation: float({})", other.type_name())),
        },
        Builtin::String => Value::Str(match &args[0] {
            Value::Nil => "<nil>".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(x) => x.clone(),
            Value::Array(_) => return Err("string() of an array is not supported".into()),
        }),
        Builtin::Abs => match &args[0] {
            Value::Int(i) => Value::Int(i.wrapping_abs()),
            Value::Float(f) => Value::Float(f.abs()),
            other => {
                return Err(format!(
                    "invalid argument for abs (type {})",
                    other.type_name()
                ))
            }
        },
        Builtin::Max | Builtin::Min => {
            let flat: Vec<Value> = if args.len() == 1 {
                match &args[0] {
                    Value::Array(a) => a.clone(),
                    v => vec![v.clone()],
                }
            } else {
                args
            };
            let mut best: Option<Value> = None;
            for v in flat {
                if num(&v).is_none() {
                    return Err(format!("invalid argument (type {})", v.type_name()));
                }
                best = Some(match best {
                    None => v,
                    Some(cur) => {
                        let (a, bv) = (num(&cur).unwrap_or(0.0), num(&v).unwrap_or(0.0));
                        let take = if b == Builtin::Max { bv > a } else { bv < a };
                        if take {
                            v
                        } else {
                            cur
                        }
                    }
                });
            }
            best.ok_or_else(|| "not enough arguments".to_string())?
        }
    })
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    struct T {
        name: Name,
        qtype: RType,
        client: IpAddr,
        server: IpAddr,
        meta: Vec<(&'static str, &'static str)>,
    }

    impl Default for T {
        fn default() -> T {
            T {
                name: Name::parse("Example.COM.").unwrap(),
                qtype: RType::A,
                client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
                server: IpAddr::V4(Ipv4Addr::LOCALHOST),
                meta: vec![("kubernetes/client-namespace", "default")],
            }
        }
    }

    impl Env for T {
        fn qname(&self) -> Option<&Name> {
            Some(&self.name)
        }
        fn qtype(&self) -> RType {
            self.qtype
        }
        fn qclass(&self) -> Class {
            Class::IN
        }
        fn proto(&self) -> &'static str {
            "udp"
        }
        fn size(&self) -> i64 {
            40
        }
        fn client_ip(&self) -> IpAddr {
            self.client
        }
        fn client_port(&self) -> u16 {
            40000
        }
        fn server_ip(&self) -> IpAddr {
            self.server
        }
        fn server_port(&self) -> u16 {
            53
        }
        fn id(&self) -> i64 {
            4660
        }
        fn opcode(&self) -> i64 {
            0
        }
        fn do_bit(&self) -> bool {
            true
        }
        fn bufsize(&self) -> i64 {
            1232
        }
        fn metadata(&self, label: &str) -> Option<String> {
            self.meta
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, v)| v.to_string())
        }
    }

    fn yes(src: &str) -> bool {
        compile(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .matches(&T::default())
    }

    fn err(src: &str) -> String {
        compile(src)
            .err()
            .unwrap_or_else(|| panic!("{src} compiled"))
            .to_string()
    }

    #[test]
    fn readme_expressions() {
        assert!(yes("incidr(client_ip(), '10.0.0.0/24')"));
        assert!(!yes("incidr(client_ip(), '192.168.0.0/16')"));
        assert!(yes("type() in ['A', 'AAAA']"));
        assert!(!yes("type() in ['MX']"));
        assert!(yes(r"name() matches '^example\\.com\\.$'"));
        assert!(yes(
            "(type() == 'A' && name() == 'example.com.') || client_ip() == '1.2.3.4'"
        ));
        assert!(yes("name() == 'example.com.'"));
        assert!(!yes("name() == 'Example.COM.'"), "name() is lower-cased");
        assert!(yes("metadata('kubernetes/client-namespace') == 'default'"));
        assert!(yes("metadata('nope/x') == ''"));
    }

    #[test]
    fn every_function() {
        assert!(yes(
            "bufsize() == 1232 && do() && id() == 4660 && opcode() == 0"
        ));
        assert!(yes("class() == 'IN' && proto() == 'udp' && size() == 40"));
        assert!(yes(
            "port() == '40000' && server_ip() == '127.0.0.1' && server_port() == '53'"
        ));
        assert!(yes("client_ip() == '10.0.0.7'"));
        assert!(yes("incidr(server_ip(), '127.0.0.0/8')"));
        assert!(yes("incidr('10.0.0.7', '10.0.0.0/8')"));
    }

    #[test]
    fn operators() {
        assert!(yes("!(type() == 'MX')"));
        assert!(yes("not (type() == 'MX')"));
        assert!(yes("type() not in ['MX']"));
        assert!(yes(
            "name() startsWith 'exa' and name() endsWith 'com.' and name() contains 'mple'"
        ));
        assert!(yes("name() not matches '^x'"));
        assert!(yes("1 < 2 < 3"));
        assert!(!yes("1 < 3 < 2"));
        assert!(yes("1 + 2 * 3 == 7"));
        assert!(yes("7 / 2 == 3.5"));
        assert!(yes("7 % 2 == 1"));
        assert!(yes("2 ** 3 == 8"));
        assert!(yes("2 in 1..3"));
        assert!(yes("'a' + 'b' == 'ab'"));
        assert!(yes("type() == 'A' ? true : false"));
        assert!(yes("[1, 2, 3][-1] == 3"));
        assert!(yes("nil ?? true"));
        assert!(yes("len(name()) == 12"));
        assert!(yes("name() | upper() == 'EXAMPLE.COM.'"));
        assert!(yes("split(name(), '.')[0] == 'example'"));
        assert!(yes("0x10 == 16 && 0b11 == 3 && 0o10 == 8 && 1_000 == 1000"));
        assert!(yes("if type() == 'A' { true } else { false }"));
        assert!(yes("`raw\\n` == 'raw\\\\n'"));
    }

    #[test]
    fn runtime_errors_are_false() {
        assert!(!yes("incidr('invalid', '1.2.3.0/24')"));
        assert!(!yes("incidr(client_ip(), 'invalid')"));
        assert!(!yes("1"));
        assert!(!yes("'true'"));
        assert!(!yes("[1][5] == 1"));
    }

    #[test]
    fn compile_errors_match_expr() {
        assert_eq!(
            err("name() == 1"),
            "invalid operation: == (mismatched types string and int) (1:8)"
        );
        assert_eq!(err("foo()"), "unknown name foo (1:1)");
        assert_eq!(
            err("incidr(client_ip())"),
            "not enough arguments to call incidr (1:1)"
        );
        assert_eq!(err("name() matches x"), "unknown name x (1:16)");
        assert_eq!(
            err("client_ip() == 1.5"),
            "invalid operation: == (mismatched types string and float64) (1:13)"
        );
        assert_eq!(
            err("bufsize() > 'a'"),
            "invalid operation: > (mismatched types int and string) (1:11)"
        );
        assert_eq!(
            err("do() == 1"),
            "invalid operation: == (mismatched types bool and int) (1:6)"
        );
        assert!(err("name() matches '['").starts_with("error parsing regexp"));
        assert!(err("invalid expression").starts_with("unexpected token"));
        assert!(err("type() ==").starts_with("unexpected end of expression"));
        assert!(err("'open").starts_with("literal not terminated"));
        assert!(err("name(1)").starts_with("too many arguments to call name"));
    }

    #[test]
    fn fast_paths_agree_with_general_evaluation() {
        for (src, general) in [
            (
                "incidr(client_ip(), '10.0.0.0/8')",
                "incidr(client_ip() + '', '10.0.0.0/8')",
            ),
            ("type() == 'AAAA'", "type() + '' == 'AAAA'"),
            ("type() in ['A', 'TXT']", "type() + '' in ['A', 'TXT']"),
            ("name() == 'example.com.'", "name() + '' == 'example.com.'"),
        ] {
            for env in [
                T::default(),
                T {
                    qtype: RType::AAAA,
                    client: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    name: Name::parse("other.org.").unwrap(),
                    ..T::default()
                },
            ] {
                let a = compile(src).unwrap();
                let b = compile(general).unwrap();
                assert_eq!(a.matches(&env), b.matches(&env), "{src} vs {general}");
                assert_eq!(a.eval(&env), b.eval(&env), "{src} vs {general}");
            }
        }
    }

    #[test]
    fn cidrs_as_go() {
        let n = Net::parse("10.0.0.1/8").unwrap();
        assert!(n.contains("10.255.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let v6 = Net::parse("2001:0DB8::/32").unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Net::parse("10.0.0.0/33").is_none());
        assert!(Net::parse("10.0.0.0").is_none());
        assert!(Net::parse("10.0.0.0/+8").is_none());
    }
}
