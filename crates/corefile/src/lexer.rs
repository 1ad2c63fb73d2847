//! Lexer: turns one source text into tokens with positions and a "starts a new line" flag.
//! Owns quoting, comments, BOM and `\r` handling. No file I/O, no env substitution, no structure.

use std::sync::Arc;

use crate::{Error, Pos, Token};

/// A token plus what the parser needs to know about its surroundings.
#[derive(Clone, Debug)]
pub(crate) struct RawTok {
    pub tok: Token,
    /// True when a newline (outside quotes) separates this token from the previous one, or it is the
    /// first token of its source.
    pub newline: bool,
    /// Index of the source (file or main text) the token came from.
    pub src: usize,
}

/// Lex `text`. Tokens are whitespace separated; a `"` at the start of a token quotes until the next
/// unescaped `"` (only `\"` is an escape; newlines allowed); `#` outside quotes comments to end of line;
/// a leading BOM is skipped; `\r` outside quotes is ignored.
pub(crate) fn lex(file: &Arc<str>, text: &str, src: usize) -> Result<Vec<RawTok>, Error> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    if chars.peek() == Some(&'\u{feff}') {
        chars.next();
    }
    let (mut line, mut col) = (1u32, 0u32);
    let mut newline = true;
    let mut comment = false;
    // Current unquoted word, with its start position.
    let mut word: Option<(String, u32, u32)> = None;

    let flush =
        |word: &mut Option<(String, u32, u32)>, out: &mut Vec<RawTok>, newline: &mut bool| {
            if let Some((text, l, c)) = word.take() {
                out.push(RawTok {
                    tok: Token {
                        text,
                        pos: Pos {
                            file: file.clone(),
                            line: l,
                            col: c,
                        },
                        quoted: false,
                    },
                    newline: *newline,
                    src,
                });
                *newline = false;
            }
        };

    while let Some(ch) = chars.next() {
        if ch == '\r' {
            continue;
        }
        if ch == '\n' {
            flush(&mut word, &mut out, &mut newline);
            line = line.saturating_add(1);
            col = 0;
            comment = false;
            newline = true;
            continue;
        }
        col = col.saturating_add(1);
        if comment {
            continue;
        }
        if ch.is_whitespace() {
            flush(&mut word, &mut out, &mut newline);
            continue;
        }
        if ch == '#' {
            flush(&mut word, &mut out, &mut newline);
            comment = true;
            continue;
        }
        if let Some((w, _, _)) = word.as_mut() {
            w.push(ch);
            continue;
        }
        if ch != '"' {
            word = Some((ch.to_string(), line, col));
            continue;
        }
        // Quoted token: runs to the next unescaped quote.
        let (start_line, start_col) = (line, col);
        let mut val = String::new();
        let mut escaped = false;
        let mut closed = false;
        for ch in chars.by_ref() {
            if ch == '\n' {
                line = line.saturating_add(1);
                col = 0;
            } else {
                col = col.saturating_add(1);
            }
            if !escaped {
                if ch == '\\' {
                    escaped = true;
                    continue;
                }
                if ch == '"' {
                    closed = true;
                    break;
                }
            }
            if escaped && ch != '"' {
                val.push('\\');
            }
            val.push(ch);
            escaped = false;
        }
        let pos = Pos {
            file: file.clone(),
            line: start_line,
            col: start_col,
        };
        if !closed {
            return Err(Error {
                pos,
                directive: None,
                msg: "unterminated quoted string: expected a closing '\"'".to_string(),
            });
        }
        out.push(RawTok {
            tok: Token {
                text: val,
                pos,
                quoted: true,
            },
            newline,
            src,
        });
        newline = false;
    }
    flush(&mut word, &mut out, &mut newline);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<(String, u32, u32, bool, bool)> {
        let f: Arc<str> = Arc::from("t");
        lex(&f, s, 0)
            .unwrap()
            .into_iter()
            .map(|t| {
                (
                    t.tok.text,
                    t.tok.pos.line,
                    t.tok.pos.col,
                    t.tok.quoted,
                    t.newline,
                )
            })
            .collect()
    }

    fn texts(s: &str) -> Vec<String> {
        toks(s).into_iter().map(|t| t.0).collect()
    }

    #[test]
    fn words_positions_and_newlines() {
        let t = toks("a bb\n  ccc\td\n\n e");
        assert_eq!(
            t,
            vec![
                ("a".into(), 1, 1, false, true),
                ("bb".into(), 1, 3, false, false),
                ("ccc".into(), 2, 3, false, true),
                ("d".into(), 2, 7, false, false),
                ("e".into(), 4, 2, false, true),
            ]
        );
    }

    #[test]
    fn comments_anywhere() {
        assert_eq!(texts("a#b c\nd # e\n#x\nf"), vec!["a", "d", "f"]);
        assert_eq!(texts("\"a#b\" c"), vec!["a#b", "c"]);
        let t = toks("a # x\nb");
        assert!(t[1].4, "token after comment line is on a new line");
    }

    #[test]
    fn quotes() {
        assert_eq!(texts(r#""a b" c"#), vec!["a b", "c"]);
        assert_eq!(texts(r#""a\"b""#), vec!["a\"b"]);
        assert_eq!(texts(r#""a\nb\\""#), vec![r"a\nb\\"]);
        assert_eq!(texts(r#""" x"#), vec!["", "x"]);
        // a quote in the middle of a word is literal
        assert_eq!(texts(r#"a"b c""#), vec!["a\"b", "c\""]);
        // the token ends at the closing quote
        assert_eq!(texts(r#""a"b"#), vec!["a", "b"]);
        // quoted tokens may span lines; the next token's line accounts for it
        let t = toks("\"x\ny\" z\nw");
        assert_eq!(t[0], ("x\ny".into(), 1, 1, true, true));
        assert_eq!(t[1], ("z".into(), 2, 4, false, false));
        assert_eq!(t[2], ("w".into(), 3, 1, false, true));
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let f: Arc<str> = Arc::from("Corefile");
        let e = lex(&f, "a\n  b \"cd\nef", 0).unwrap_err();
        assert_eq!(e.pos.to_string(), "Corefile:2:5");
        assert!(e.msg.contains("unterminated"), "{e}");
    }

    #[test]
    fn bom_and_cr() {
        let t = toks("\u{feff}a\r\nb c\r\n");
        assert_eq!(
            t,
            vec![
                ("a".into(), 1, 1, false, true),
                ("b".into(), 2, 1, false, true),
                ("c".into(), 2, 3, false, false),
            ]
        );
        assert_eq!(texts("a\rb"), vec!["ab"]);
        // a BOM later in the file is an ordinary character
        assert_eq!(texts("a \u{feff}"), vec!["a", "\u{feff}"]);
    }

    #[test]
    fn columns_count_chars() {
        let t = toks("é ü x");
        assert_eq!(t[2].2, 5);
    }

    #[test]
    fn empty_inputs() {
        assert!(texts("").is_empty());
        assert!(texts("\u{feff}").is_empty());
        assert!(texts("  \n# c\n\r\n").is_empty());
    }
}
