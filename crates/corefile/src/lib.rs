//! sextant-corefile: the Corefile lexer and parser (CoreDNS/Caddy v1 grammar), server-block key and zone
//! normalisation. Pure library: reads files only for `import`; no sockets, no async, no global state.
//!
//! Entry points: [`parse_file`], [`parse_str`], [`parse_str_with_env`] produce a [`Corefile`] (server blocks
//! of nested [`Directive`]s, snippets removed, imports expanded, `{$VAR}`/`{%VAR%}` substituted);
//! [`parse_key`] and [`normalize_zone`] turn keys and zone arguments into normalised zones.

#![forbid(unsafe_code)]

mod address;
mod env;
mod glob;
mod lexer;
mod parser;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use address::{normalize_zone, parse_key, Scheme, ZoneAddr};

/// A position in a Corefile (1-based line and column; column counts chars).
///
/// Errors that are not tied to a place in a file (e.g. the main file cannot be read) use line 0, column 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// A position that names only a file (line 0, column 0).
    pub fn file_only(file: &str) -> Pos {
        Pos {
            file: Arc::from(file),
            line: 0,
            col: 0,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// One lexical token. `quoted` is true when it was written in double quotes (then `{`, `}` and `import`
/// are plain words, not syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub pos: Pos,
    pub quoted: bool,
}

impl Token {
    /// An error at this token, inside directive `directive` (pass "" for none).
    pub fn err(&self, directive: &str, msg: impl Into<String>) -> Error {
        Error {
            pos: self.pos.clone(),
            directive: if directive.is_empty() {
                None
            } else {
                Some(directive.to_string())
            },
            msg: msg.into(),
        }
    }

    /// The token text as a `&str`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when this is an unquoted token with exactly this text (syntax such as `{`, `}`, `import`).
    pub fn is_bare(&self, text: &str) -> bool {
        !self.quoted && self.text == text
    }
}

/// One directive line inside a server block: `name args... [{ sub-lines }]`.
/// Sub-lines are themselves Directives (first token = their name), nested to any depth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub name: Token,
    pub args: Vec<Token>,
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// An error at the directive name.
    pub fn err(&self, msg: impl Into<String>) -> Error {
        self.name.err(&self.name.text, msg)
    }

    /// An error at `tok`, naming this directive.
    pub fn err_at(&self, tok: &Token, msg: impl Into<String>) -> Error {
        tok.err(&self.name.text, msg)
    }

    /// Caddy's `ArgErr`, which CoreDNS plugins return for a missing or extra argument:
    /// `Wrong argument count or unexpected line ending after 'TOKEN'`, at `after`.
    pub fn arg_err(&self, after: &Token) -> Error {
        self.err_at(
            after,
            format!(
                "Wrong argument count or unexpected line ending after '{}'",
                after.text
            ),
        )
    }

    /// Check `min <= args.len() <= max` (`usize::MAX` = no upper bound). Too many arguments are reported at
    /// the first extra one, too few at the directive name.
    pub fn arg_count(&self, min: usize, max: usize) -> Result<(), Error> {
        let n = self.args.len();
        if n >= min && n <= max {
            return Ok(());
        }
        let expected = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        let msg = format!("wrong argument count: expected {expected}, got {n}");
        match self.args.get(max) {
            Some(extra) if n > max => Err(self.err_at(extra, msg)),
            _ => Err(self.err(msg)),
        }
    }

    /// The one argument of a directive that takes exactly one.
    pub fn single_arg(&self) -> Result<&Token, Error> {
        self.arg_count(1, 1)?;
        Ok(&self.args[0])
    }

    /// The lines of this directive's `{ }` block, or an empty slice when it has none.
    pub fn sub(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// The argument texts.
    pub fn arg_strs(&self) -> Vec<&str> {
        self.args.iter().map(|t| t.text.as_str()).collect()
    }
}

/// A server block: `KEY... { directives }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerBlock {
    pub keys: Vec<Token>,
    pub directives: Vec<Directive>,
}

impl ServerBlock {
    /// All keys parsed with [`parse_key`], in order (CIDR keys expanded in place).
    pub fn zone_addrs(&self, default_port: u16) -> Result<Vec<ZoneAddr>, Error> {
        let mut out = Vec::new();
        for k in &self.keys {
            out.extend(parse_key(k, default_port)?);
        }
        Ok(out)
    }
}

/// A parsed Corefile.
#[derive(Clone, Debug)]
pub struct Corefile {
    /// Server blocks in file order; snippets removed, imports expanded, env substituted.
    pub blocks: Vec<ServerBlock>,
    /// Every file read (the main one first when parsed with [`parse_file`], then each imported file once,
    /// in first-import order), for reload hashing.
    pub files: Vec<PathBuf>,
    /// Non-fatal problems, e.g. an `import` glob that matched no file (CoreDNS logs these as warnings).
    pub warnings: Vec<Error>,
}

/// Every error names file:line:column, the directive (when there is one) and what was expected.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{pos}: {}{msg}", directive.as_ref().map(|d| format!("{d}: ")).unwrap_or_default())]
pub struct Error {
    pub pos: Pos,
    pub directive: Option<String>,
    pub msg: String,
}

/// Read and parse the Corefile at `path`; imports are relative to its directory; env from the process.
pub fn parse_file(path: &Path) -> Result<Corefile, Error> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        pos: Pos::file_only(&name),
        directive: None,
        msg: format!("cannot read Corefile: {e}"),
    })?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let env = |k: &str| std::env::var(k).ok();
    parser::parse(&name, &text, &base, Some(path), &env)
}

/// Parse Corefile text. `name` is what errors show as the file; imports are relative to `base_dir`.
/// Env from the process.
pub fn parse_str(name: &str, text: &str, base_dir: &Path) -> Result<Corefile, Error> {
    let env = |k: &str| std::env::var(k).ok();
    parser::parse(name, text, base_dir, None, &env)
}

/// Same as [`parse_str`], but with an explicit environment lookup.
pub fn parse_str_with_env(
    name: &str,
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Corefile, Error> {
    parser::parse(name, text, base_dir, None, env)
}
