//! Text encodings used in record data: base64 (RFC 4648 §4), base32hex (§7, NSEC3) and hex,
//! plus names relative to an origin. No I/O.

use sextant_wire::Name;

/// Decodes base64 (padding optional, whitespace not allowed).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    }
    let s = s.trim_end_matches('=');
    let b = s.as_bytes();
    if b.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() * 3 / 4);
    for chunk in b.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// Encodes base64 with padding.
pub fn base64_encode(d: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(d.len().div_ceil(3) * 4);
    for chunk in d.chunks(3) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= (c as u32) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base32hex without padding (NSEC3 hashed owner names), case-insensitive.
pub(crate) fn base32hex_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u64;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c.to_ascii_uppercase() {
            x @ b'0'..=b'9' => x - b'0',
            x @ b'A'..=b'V' => x - b'A' + 10,
            _ => return None,
        };
        acc = (acc << 5) | v as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Encodes base32hex lower-case without padding.
pub fn base32hex_encode(d: &[u8]) -> String {
    const A: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut out = String::new();
    let mut acc = 0u64;
    let mut bits = 0;
    for &b in d {
        acc = (acc << 8) | b as u64;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes hex (even length, case-insensitive).
pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let v = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks(2)
        .map(|p| Some(v(p[0])? << 4 | v(p[1])?))
        .collect()
}

/// Encodes hex upper-case (as miekg/dns prints DS digests).
pub fn hex_encode(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02X}")).collect()
}

/// A name from a zone file: `@` is the origin; a name without a trailing (unescaped) dot is
/// relative to the origin.
pub(crate) fn absolute_name(text: &str, origin: &Name) -> Option<Name> {
    if text == "@" {
        return Some(origin.clone());
    }
    if text.is_empty() {
        return None;
    }
    let trailing_escapes = text
        .trim_end_matches('.')
        .bytes()
        .rev()
        .take_while(|&c| c == b'\\')
        .count();
    let absolute = text.ends_with('.') && trailing_escapes % 2 == 0;
    if text == "." {
        return Some(Name::root());
    }
    let n = Name::parse(text).ok()?;
    if absolute {
        return Some(n);
    }
    if n.is_root() {
        return None;
    }
    let mut wire = n.wire()[..n.wire_len() - 1].to_vec();
    wire.extend_from_slice(origin.wire());
    Name::from_wire(&wire).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip() {
        for d in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(d)).unwrap(), d);
            assert_eq!(base32hex_decode(&base32hex_encode(d)).unwrap(), d);
            assert_eq!(hex_decode(&hex_encode(d)).unwrap(), d);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base32hex_encode(b"foobar"), "cpnmuoj1e8");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a*==").is_none());
        assert!(hex_decode("abc").is_none());
    }

    #[test]
    fn names_relative_and_absolute() {
        let o = Name::parse("example.org.").unwrap();
        let n = |s: &str| absolute_name(s, &o).map(|n| n.to_string());
        assert_eq!(n("@").unwrap(), "example.org.");
        assert_eq!(n("www").unwrap(), "www.example.org.");
        assert_eq!(n("www.other.").unwrap(), "www.other.");
        assert_eq!(n("a\\.").unwrap(), "a\\..example.org.");
        assert_eq!(n(".").unwrap(), ".");
        assert!(n("a..b").is_none());
    }
}
