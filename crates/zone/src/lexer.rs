//! Master-file lexing (RFC 1035 §5.1): comments, quoted strings, escapes and parentheses turn
//! the text into logical lines of tokens, each token with its line and column.

use crate::ZoneError;

/// One token of a logical line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    /// The text; escapes (`\.`, `\DDD`) are kept as written, quotes are removed.
    pub(crate) text: String,
    /// True if the token was a quoted string.
    pub(crate) quoted: bool,
    pub(crate) line: usize,
    pub(crate) col: usize,
}

/// One logical line (parentheses join physical lines).
#[derive(Clone, Debug, Default)]
pub(crate) struct Line {
    /// Physical line the logical line starts on.
    pub(crate) line: usize,
    /// True if the line starts with a blank (no owner: the previous owner applies).
    pub(crate) blank_start: bool,
    pub(crate) tokens: Vec<Token>,
}

/// Splits `text` into logical lines; `file` names the text in errors.
pub(crate) fn lines(text: &str, file: &str) -> Result<Vec<Line>, ZoneError> {
    let err = |line: usize, col: usize, msg: &str| ZoneError {
        file: file.to_string(),
        line,
        col,
        msg: msg.to_string(),
    };
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut cur = Line {
        line: 1,
        ..Line::default()
    };
    let mut line = 1usize;
    let mut line_start = 0usize;
    let mut depth = 0usize;
    let mut paren_at = (0, 0);
    let mut i = 0usize;
    let mut at_line_start = true;
    while i < b.len() {
        let c = b[i];
        let col = i - line_start + 1;
        match c {
            b'\n' => {
                if depth == 0 {
                    if !cur.tokens.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                    cur.blank_start = false;
                    at_line_start = true;
                    cur.line = line + 1;
                }
                line += 1;
                line_start = i + 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => {
                if at_line_start && depth == 0 && cur.tokens.is_empty() && c != b'\r' {
                    cur.blank_start = true;
                }
                at_line_start = false;
                i += 1;
            }
            b';' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                at_line_start = false;
                if depth == 0 {
                    paren_at = (line, col);
                }
                depth += 1;
                i += 1;
            }
            b')' => {
                at_line_start = false;
                if depth == 0 {
                    return Err(err(line, col, "extra closing brace"));
                }
                depth -= 1;
                i += 1;
            }
            b'"' => {
                at_line_start = false;
                let mut s = String::new();
                i += 1;
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b'\\' if i + 1 < b.len() => {
                            s.push('\\');
                            push_byte(&mut s, b[i + 1]);
                            i += 2;
                        }
                        b'\n' => break,
                        x => {
                            push_byte(&mut s, x);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    return Err(err(line, col, "unbalanced quotes"));
                }
                if cur.tokens.is_empty() {
                    cur.line = line;
                }
                cur.tokens.push(Token {
                    text: s,
                    quoted: true,
                    line,
                    col,
                });
            }
            _ => {
                at_line_start = false;
                let mut s = String::new();
                while i < b.len() {
                    match b[i] {
                        b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"' => break,
                        b'\\' if i + 1 < b.len() && b[i + 1] != b'\n' => {
                            s.push('\\');
                            push_byte(&mut s, b[i + 1]);
                            i += 2;
                        }
                        x => {
                            push_byte(&mut s, x);
                            i += 1;
                        }
                    }
                }
                if cur.tokens.is_empty() {
                    cur.line = line;
                }
                cur.tokens.push(Token {
                    text: s,
                    quoted: false,
                    line,
                    col,
                });
            }
        }
    }
    if depth > 0 {
        return Err(err(paren_at.0, paren_at.1, "unbalanced brace"));
    }
    if !cur.tokens.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Keeps non-UTF-8 bytes representable: bytes above 0x7f become `\DDD` escapes.
fn push_byte(s: &mut String, b: u8) {
    if b.is_ascii() {
        s.push(b as char);
    } else {
        s.push_str(&format!("\\{b:03}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_quotes_parens() {
        let t = "$ORIGIN a.\n@ IN SOA ns h ( 1 ; serial\n 2 3 4 5 )\n  TXT \"a b;c\" x\\ y ; c\n";
        let ls = lines(t, "f").unwrap();
        assert_eq!(ls.len(), 3);
        assert_eq!(ls[1].tokens.len(), 10);
        assert_eq!(ls[1].line, 2);
        assert!(ls[2].blank_start);
        assert_eq!(ls[2].tokens[1].text, "a b;c");
        assert!(ls[2].tokens[1].quoted);
        assert_eq!(ls[2].tokens[2].text, "x\\ y");
        assert_eq!((ls[2].tokens[0].line, ls[2].tokens[0].col), (4, 3));
        let e = lines("a ( b\n", "f").unwrap_err();
        assert_eq!(e.to_string(), "f:1:3: unbalanced brace");
        let e = lines("a \"b\n", "f").unwrap_err();
        assert_eq!(e.to_string(), "f:1:3: unbalanced quotes");
    }
}
