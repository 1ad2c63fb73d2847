//! Parser: groups tokens into server blocks and nested directives; handles snippets, `import` (snippets,
//! files, globs) and env substitution. Reads imported files; no other I/O, no knowledge of plugins.
//!
//! Tokens come from a stack of frames (the main text at the bottom, each active import above it), so an
//! import is "pasted" in place without copying the token stream. A frame stays on the stack until its last
//! token has been consumed *and* the parser asks for a token after it, so a frame whose last line is an
//! `import` still counts as active while that import is expanded: this is how import cycles are found.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use crate::env::substitute;
use crate::glob;
use crate::lexer::{lex, RawTok};
use crate::{Corefile, Directive, Error, ServerBlock, Token};

/// Cap on snippet imports expanded in one parse (as CoreDNS).
pub(crate) const MAX_SNIPPET_EXPANSIONS: usize = 10_000;
/// Cap on file/glob imports expanded in one parse (as CoreDNS).
pub(crate) const MAX_FILE_EXPANSIONS: usize = 100_000;
/// Cap on tokens consumed in one parse after expansion (Sextant's own guard against import blow-ups).
pub(crate) const MAX_TOKENS: usize = 1_000_000;
/// Cap on nested `{ }` blocks inside a server block (parsing recurses per level; real Corefiles use 2-3).
pub(crate) const MAX_NESTING: usize = 100;

const IMPORT: &str = "import";

struct Source {
    dir: PathBuf,
    canon: Option<PathBuf>,
}

enum FrameKind {
    Root,
    Snippet(String),
    File,
}

struct Frame {
    toks: Rc<[RawTok]>,
    idx: usize,
    kind: FrameKind,
}

struct Parser<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    sources: Vec<Source>,
    frames: Vec<Frame>,
    snippets: HashMap<String, Rc<[RawTok]>>,
    file_cache: HashMap<PathBuf, Rc<[RawTok]>>,
    files: Vec<PathBuf>,
    seen_files: HashSet<PathBuf>,
    warnings: Vec<Error>,
    snippet_expansions: usize,
    file_expansions: usize,
    tokens_taken: usize,
    blocks_seen: usize,
    depth: usize,
}

/// How the key list of a server block ended.
enum KeysEnd {
    /// On an opening brace (consumed).
    Brace(RawTok),
    /// At a newline (the next token is not consumed).
    Newline,
    /// At the end of input.
    Eof,
}

pub(crate) fn parse(
    name: &str,
    text: &str,
    base_dir: &Path,
    main_path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Corefile, Error> {
    let file: Arc<str> = Arc::from(name);
    let toks = lex(&file, text, 0)?;
    let canon = main_path.and_then(|p| std::fs::canonicalize(p).ok());
    let mut p = Parser {
        env,
        sources: vec![Source {
            dir: base_dir.to_path_buf(),
            canon: canon.clone(),
        }],
        frames: vec![Frame {
            toks: Rc::from(toks),
            idx: 0,
            kind: FrameKind::Root,
        }],
        snippets: HashMap::new(),
        file_cache: HashMap::new(),
        files: main_path.map(|p| vec![p.to_path_buf()]).unwrap_or_default(),
        seen_files: canon.into_iter().collect(),
        warnings: Vec::new(),
        snippet_expansions: 0,
        file_expansions: 0,
        tokens_taken: 0,
        blocks_seen: 0,
        depth: 0,
    };
    let blocks = p.parse_all()?;
    Ok(Corefile {
        blocks,
        files: p.files,
        warnings: p.warnings,
    })
}

impl Parser<'_> {
    // ---- token stream -------------------------------------------------------------------------------

    fn peek(&self) -> Option<&RawTok> {
        self.frames.iter().rev().find_map(|f| f.toks.get(f.idx))
    }

    fn next(&mut self) -> Result<Option<RawTok>, Error> {
        while let Some(f) = self.frames.last_mut() {
            if let Some(t) = f.toks.get(f.idx) {
                f.idx += 1;
                self.tokens_taken += 1;
                if self.tokens_taken > MAX_TOKENS {
                    return Err(t.tok.err(
                        "",
                        format!("Corefile too large: more than {MAX_TOKENS} tokens after expanding imports"),
                    ));
                }
                return Ok(Some(t.clone()));
            }
            self.frames.pop();
        }
        Ok(None)
    }

    fn env(&self, t: &Token) -> Token {
        Token {
            text: substitute(&t.text, self.env),
            pos: t.pos.clone(),
            quoted: t.quoted,
        }
    }

    // ---- structure ----------------------------------------------------------------------------------

    fn parse_all(&mut self) -> Result<Vec<ServerBlock>, Error> {
        let mut blocks = Vec::new();
        while let Some(t) = self.next()? {
            if t.tok.is_bare(IMPORT) {
                self.do_import(&t)?;
                continue;
            }
            if let Some(b) = self.block(t)? {
                self.blocks_seen += 1;
                blocks.push(b);
            }
        }
        Ok(blocks)
    }

    /// Parse one top-level block starting at its first key. `None` for a snippet definition.
    fn block(&mut self, first: RawTok) -> Result<Option<ServerBlock>, Error> {
        let first_pos = first.tok.clone();
        let (keys, end) = self.keys(first)?;
        if keys.is_empty() {
            return Err(first_pos.err("", "expected a server block key (zone) before '{'"));
        }
        if let [only] = keys.as_slice() {
            let k = &only.text;
            if k.len() >= 2 && k.starts_with('(') && k.ends_with(')') {
                let name = k[1..k.len() - 1].to_string();
                self.snippet(only, name, end)?;
                return Ok(None);
            }
        }
        let at_eof = matches!(end, KeysEnd::Eof);
        let open = match end {
            KeysEnd::Brace(open) => Some(open),
            KeysEnd::Eof => None,
            KeysEnd::Newline => match self.peek() {
                Some(t) if t.tok.is_bare("{") => self.next()?,
                _ => None,
            },
        };
        let directives = match &open {
            Some(open) => self.lines(Some(open), None)?,
            None if at_eof => Vec::new(),
            None => {
                if self.blocks_seen > 0 {
                    return Err(keys[0].err(
                        "",
                        "expected '{' after the server block keys (braces may be omitted only when the \
                         Corefile has a single server block)",
                    ));
                }
                self.lines(None, None)?
            }
        };
        Ok(Some(ServerBlock { keys, directives }))
    }

    /// Collect server block keys: on the first line, separated by spaces or commas; a trailing comma
    /// continues onto the next line.
    fn keys(&mut self, first: RawTok) -> Result<(Vec<Token>, KeysEnd), Error> {
        let mut keys = Vec::new();
        let mut expecting = false;
        let mut cur = first;
        loop {
            if cur.tok.is_bare("{") {
                if expecting {
                    return Err(cur.tok.err(
                        "",
                        "expected another server block key after ',' but found '{' (check for an extra comma)",
                    ));
                }
                return Ok((keys, KeysEnd::Brace(cur)));
            }
            if cur.tok.is_bare("}") {
                return Err(cur.tok.err("", "unexpected '}': no matching '{'"));
            }
            let t = self.env(&cur.tok);
            expecting = t.text.ends_with(',');
            keys.extend(t.text.split(',').filter(|s| !s.is_empty()).map(|s| Token {
                text: s.to_string(),
                pos: t.pos.clone(),
                quoted: t.quoted,
            }));
            match self.peek() {
                None if expecting => {
                    return Err(cur.tok.err(
                        "",
                        "unexpected end of file: expected another server block key after ','",
                    ))
                }
                None => return Ok((keys, KeysEnd::Eof)),
                Some(p) if !expecting && p.newline => return Ok((keys, KeysEnd::Newline)),
                Some(_) => {}
            }
            match self.next()? {
                Some(t) => cur = t,
                None => return Ok((keys, KeysEnd::Eof)),
            }
        }
    }

    /// Record a snippet definition `(name) { tokens }`.
    fn snippet(&mut self, key: &Token, name: String, end: KeysEnd) -> Result<(), Error> {
        let open = match end {
            KeysEnd::Brace(open) => open,
            KeysEnd::Newline if self.peek().is_some_and(|t| t.tok.is_bare("{")) => {
                match self.next()? {
                    Some(t) => t,
                    None => return Err(key.err("", "expected '{' after snippet name")),
                }
            }
            _ => return Err(key.err("", format!("expected '{{' after snippet name '{name}'"))),
        };
        if self.snippets.contains_key(&name) {
            return Err(key.err(
                "",
                format!("redeclaration of previously declared snippet '{name}'"),
            ));
        }
        let mut depth = 1usize;
        let mut body: Vec<RawTok> = Vec::new();
        loop {
            let Some(t) = self.next()? else {
                return Err(open.tok.err(
                    "",
                    format!("unclosed '{{' of snippet '{name}': expected '}}'"),
                ));
            };
            if t.tok.is_bare("{") {
                depth += 1;
            } else if t.tok.is_bare("}") {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            body.push(t);
        }
        if let Some(first) = body.first_mut() {
            first.newline = true;
        }
        for (i, t) in body.iter().enumerate() {
            if t.tok.is_bare(IMPORT) && t.newline {
                if let Some(arg) = body.get(i + 1) {
                    if !arg.newline && substitute(&arg.tok.text, self.env) == name {
                        return Err(t
                            .tok
                            .err(IMPORT, format!("snippet '{name}' imports itself")));
                    }
                }
            }
        }
        self.snippets.insert(name, Rc::from(body));
        Ok(())
    }

    /// Parse directive lines until the `}` matching `open` (or the end of input when `open` is None).
    fn lines(
        &mut self,
        open: Option<&RawTok>,
        parent: Option<&str>,
    ) -> Result<Vec<Directive>, Error> {
        let mut out = Vec::new();
        loop {
            let Some(t) = self.next()? else {
                return match open {
                    Some(o) => Err(o.tok.err(
                        parent.unwrap_or(""),
                        "unclosed '{': expected '}' before the end of the file",
                    )),
                    None => Ok(out),
                };
            };
            if t.tok.is_bare("}") {
                if open.is_some() {
                    return Ok(out);
                }
                return Err(t
                    .tok
                    .err(parent.unwrap_or(""), "unexpected '}': no matching '{'"));
            }
            if t.tok.is_bare("{") {
                return Err(t.tok.err(
                    parent.unwrap_or(""),
                    "unexpected '{': expected a directive name (a block must open on its directive's line)",
                ));
            }
            if t.tok.is_bare(IMPORT) {
                self.do_import(&t)?;
                continue;
            }
            out.push(self.directive(&t)?);
        }
    }

    /// Parse one directive line whose name token has been consumed.
    fn directive(&mut self, name: &RawTok) -> Result<Directive, Error> {
        let name = self.env(&name.tok);
        let mut args = Vec::new();
        let mut block = None;
        loop {
            match self.peek() {
                None => break,
                Some(p) if p.newline || p.tok.is_bare("}") => break,
                Some(_) => {}
            }
            let Some(t) = self.next()? else { break };
            if t.tok.is_bare("{") {
                if self.depth >= MAX_NESTING {
                    return Err(t.tok.err(
                        &name.text,
                        format!("blocks nested too deeply (more than {MAX_NESTING} levels)"),
                    ));
                }
                self.depth += 1;
                let sub = self.lines(Some(&t), Some(&name.text));
                self.depth -= 1;
                block = Some(sub?);
                if let Some(q) = self.peek() {
                    if !q.newline && !q.tok.is_bare("}") {
                        return Err(q.tok.err(
                            &name.text,
                            format!(
                                "unexpected '{}' after '}}': expected a new line",
                                q.tok.text
                            ),
                        ));
                    }
                }
                break;
            }
            args.push(self.env(&t.tok));
        }
        Ok(Directive { name, args, block })
    }

    // ---- import -------------------------------------------------------------------------------------

    fn do_import(&mut self, imp: &RawTok) -> Result<(), Error> {
        let arg = match self.peek() {
            Some(p) if !p.newline && !p.tok.is_bare("{") && !p.tok.is_bare("}") => self.next()?,
            _ => None,
        };
        let Some(arg) = arg else {
            return Err(imp.tok.err(
                IMPORT,
                "wrong argument count: expected exactly one argument (a snippet name or a file pattern)",
            ));
        };
        let pattern = substitute(&arg.tok.text, self.env);
        if pattern.is_empty() {
            return Err(arg
                .tok
                .err(IMPORT, "expected a non-empty snippet name or file pattern"));
        }
        if let Some(p) = self.peek() {
            if !p.newline && !p.tok.is_bare("}") {
                return Err(p.tok.err(
                    IMPORT,
                    "wrong argument count: import takes only one argument (a snippet name or a file pattern)",
                ));
            }
        }
        if let Some(body) = self.snippets.get(&pattern).cloned() {
            if self.snippet_expansions >= MAX_SNIPPET_EXPANSIONS {
                return Err(arg.tok.err(
                    IMPORT,
                    format!("maximum snippet import count ({MAX_SNIPPET_EXPANSIONS}) exceeded"),
                ));
            }
            let active = self
                .frames
                .iter()
                .any(|f| matches!(&f.kind, FrameKind::Snippet(n) if *n == pattern));
            if active {
                return Err(arg.tok.err(
                    IMPORT,
                    format!("import cycle: snippet '{pattern}' imports itself"),
                ));
            }
            self.snippet_expansions += 1;
            if !body.is_empty() {
                self.frames.push(Frame {
                    toks: body,
                    idx: 0,
                    kind: FrameKind::Snippet(pattern),
                });
            }
            return Ok(());
        }
        self.import_files(&arg, &pattern)
    }

    fn import_files(&mut self, arg: &RawTok, pattern: &str) -> Result<(), Error> {
        let err = |msg: String| arg.tok.err(IMPORT, msg);
        if self.file_expansions >= MAX_FILE_EXPANSIONS {
            return Err(err(format!(
                "maximum file import count ({MAX_FILE_EXPANSIONS}) exceeded"
            )));
        }
        self.file_expansions += 1;
        if pattern.matches('*').count() > 1
            || pattern.matches('?').count() > 1
            || (pattern.contains('[') && pattern.contains(']'))
        {
            return Err(err(format!(
                "glob pattern may contain at most one '*' and one '?' and no '[...]': {pattern}"
            )));
        }
        let dir = self
            .sources
            .get(arg.src)
            .map(|s| s.dir.clone())
            .unwrap_or_default();
        let joined = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            dir.join(pattern)
        };
        let full = std::path::absolute(&joined).unwrap_or(joined);
        let is_glob = glob::has_meta(pattern);
        let matches = if is_glob {
            glob::glob(&full)
        } else if std::fs::symlink_metadata(&full).is_ok() {
            vec![full.clone()]
        } else {
            Vec::new()
        };
        if matches.is_empty() {
            if is_glob {
                self.warnings.push(err(format!(
                    "no files matching import glob pattern: {pattern}"
                )));
                return Ok(());
            }
            return Err(err(format!(
                "no snippet named '{pattern}' and no file to import at {}",
                full.display()
            )));
        }
        let mut all: Vec<RawTok> = Vec::new();
        for m in matches {
            let meta = std::fs::metadata(&m)
                .map_err(|e| err(format!("could not import {}: {e}", m.display())))?;
            if meta.is_dir() {
                return Err(err(format!(
                    "could not import {}: is a directory",
                    m.display()
                )));
            }
            let canon = std::fs::canonicalize(&m)
                .map_err(|e| err(format!("could not import {}: {e}", m.display())))?;
            if self.file_active(&canon) {
                return Err(err(format!(
                    "import cycle: {} imports itself (directly or through other files)",
                    m.display()
                )));
            }
            let toks = match self.file_cache.get(&canon) {
                Some(t) => t.clone(),
                None => {
                    let text = std::fs::read_to_string(&m)
                        .map_err(|e| err(format!("could not import {}: {e}", m.display())))?;
                    let src = self.sources.len();
                    self.sources.push(Source {
                        dir: m.parent().map(Path::to_path_buf).unwrap_or_default(),
                        canon: Some(canon.clone()),
                    });
                    let name: Arc<str> = Arc::from(m.display().to_string());
                    let toks: Rc<[RawTok]> = Rc::from(lex(&name, &text, src)?);
                    self.file_cache.insert(canon.clone(), toks.clone());
                    toks
                }
            };
            if self.seen_files.insert(canon) {
                self.files.push(m.clone());
            }
            let start = all.len();
            all.extend(toks.iter().cloned());
            if let Some(first) = all.get_mut(start) {
                first.newline = true;
            }
        }
        if !all.is_empty() {
            self.frames.push(Frame {
                toks: Rc::from(all),
                idx: 0,
                kind: FrameKind::File,
            });
        }
        Ok(())
    }

    /// Is `canon` the file currently being read by some frame on the stack?
    fn file_active(&self, canon: &Path) -> bool {
        self.frames.iter().any(|f| {
            if matches!(f.kind, FrameKind::Snippet(_)) {
                return false;
            }
            let i = f.idx.saturating_sub(1);
            f.toks
                .get(i)
                .and_then(|t| self.sources.get(t.src))
                .and_then(|s| s.canon.as_deref())
                == Some(canon)
        })
    }
}
