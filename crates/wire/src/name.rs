//! Domain names: wire-format storage, case-insensitive comparison, presentation format. No I/O.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::WireError;

/// Longest name in wire form, root label included (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Longest label.
pub const MAX_LABEL_LEN: usize = 63;

/// A fully qualified domain name held in uncompressed wire form (length-prefixed labels ending
/// with the root label). Case is preserved; equality and hashing ignore ASCII case.
#[derive(Clone)]
pub struct Name {
    wire: Vec<u8>,
}

/// [`Name::is_subdomain_of`] for a name kept as its uncompressed wire bytes (`name`, ending in
/// the root label, as [`Name::wire`] gives them): true if it equals `zone` or is below it
/// (case-insensitive, label aligned). False for bytes that are not such a name.
pub fn wire_is_subdomain(name: &[u8], zone: &Name) -> bool {
    let (a, b) = (name.len(), zone.wire.len());
    if b > a {
        return false;
    }
    let off = a - b;
    // `off` must be a label boundary: a few steps, cheaper than comparing bytes.
    let mut pos = 0;
    while pos < off {
        pos += 1 + name[pos] as usize;
    }
    if pos != off {
        return false;
    }
    // Names almost always arrive in the zone's case: one memcmp, and the byte-wise
    // case-folding comparison only when that fails.
    let tail = &name[off..];
    tail == &zone.wire[..] || tail.eq_ignore_ascii_case(&zone.wire)
}

/// The escape starting with the backslash at `b[i]` in presentation format: `\DDD` (a decimal
/// byte, at most 255) or `\X` (X itself). Returns the byte and how many input bytes the escape
/// took, or None for a bad escape (over 255, or nothing after the backslash). Shared by
/// [`Name::parse`] and the zone crate's character-string and RDATA parsers.
pub fn unescape_at(b: &[u8], i: usize) -> Option<(u8, usize)> {
    match b.get(i + 1..i + 4) {
        Some(d) if d.iter().all(u8::is_ascii_digit) => {
            let v = (d[0] - b'0') as u32 * 100 + (d[1] - b'0') as u32 * 10 + (d[2] - b'0') as u32;
            Some((u8::try_from(v).ok()?, 4))
        }
        _ => Some((*b.get(i + 1)?, 2)),
    }
}

impl Name {
    /// The root name `.`.
    pub fn root() -> Name {
        Name { wire: vec![0] }
    }

    /// Builds a name from wire bytes that are already known to be valid (uncompressed, ending
    /// with the root label, within limits). Checks them anyway and fails on anything else.
    pub fn from_wire(wire: &[u8]) -> Result<Name, WireError> {
        let mut pos = 0;
        loop {
            let len = *wire.get(pos).ok_or(WireError::NameTruncated)? as usize;
            if len == 0 {
                break;
            }
            if len > MAX_LABEL_LEN {
                return Err(WireError::LabelTooLong);
            }
            pos += 1 + len;
        }
        if pos + 1 != wire.len() {
            return Err(WireError::TrailingData);
        }
        if wire.len() > MAX_NAME_LEN {
            return Err(WireError::NameTooLong);
        }
        Ok(Name {
            wire: wire.to_vec(),
        })
    }

    /// A name from wire bytes already checked by the caller (labels, root label, length).
    pub(crate) fn from_checked_wire(wire: Vec<u8>) -> Name {
        debug_assert!(Name::from_wire(&wire).is_ok());
        Name { wire }
    }

    /// Builds a name from labels (without the root label).
    pub fn from_labels<'a, I>(labels: I) -> Result<Name, WireError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut wire = Vec::with_capacity(32);
        for l in labels {
            if l.is_empty() {
                return Err(WireError::EmptyLabel);
            }
            if l.len() > MAX_LABEL_LEN {
                return Err(WireError::LabelTooLong);
            }
            wire.push(l.len() as u8);
            wire.extend_from_slice(l);
            if wire.len() + 1 > MAX_NAME_LEN {
                return Err(WireError::NameTooLong);
            }
        }
        wire.push(0);
        Ok(Name { wire })
    }

    /// Parses presentation format (`www.example.com.`, `www.example.com`, `\.` and `\DDD`
    /// escapes). A name without a trailing dot is taken as fully qualified. `.` and `` are
    /// the root.
    pub fn parse(s: &str) -> Result<Name, WireError> {
        let bytes = s.as_bytes();
        if bytes.is_empty() || bytes == b"." {
            return Ok(Name::root());
        }
        let mut labels: Vec<Vec<u8>> = Vec::new();
        let mut cur = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b'.' => {
                    if cur.is_empty() {
                        return Err(WireError::EmptyLabel);
                    }
                    labels.push(std::mem::take(&mut cur));
                    i += 1;
                }
                b'\\' => {
                    let (v, n) = unescape_at(bytes, i).ok_or(WireError::BadEscape)?;
                    cur.push(v);
                    i += n;
                }
                _ => {
                    cur.push(c);
                    i += 1;
                }
            }
        }
        if !cur.is_empty() {
            labels.push(cur);
        }
        Name::from_labels(labels.iter().map(|l| l.as_slice()))
    }

    /// The uncompressed wire form.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Length of the uncompressed wire form.
    pub fn wire_len(&self) -> usize {
        self.wire.len()
    }

    pub fn is_root(&self) -> bool {
        self.wire.len() == 1
    }

    /// Labels from left to right, without the root label.
    pub fn labels(&self) -> Labels<'_> {
        Labels {
            wire: &self.wire,
            pos: 0,
        }
    }

    /// Number of labels, root excluded (`example.com.` has 2).
    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// True if `self` equals `zone` or is below it (case-insensitive, label aligned).
    pub fn is_subdomain_of(&self, zone: &Name) -> bool {
        wire_is_subdomain(&self.wire, zone)
    }

    /// The labels of `self` in front of `zone`, if `self` is at or below `zone`.
    pub fn prefix_labels(&self, zone: &Name) -> Option<Vec<&[u8]>> {
        if !self.is_subdomain_of(zone) {
            return None;
        }
        let keep = self.label_count() - zone.label_count();
        Some(self.labels().take(keep).collect())
    }

    /// The name with its first label removed; the root stays the root.
    pub fn parent(&self) -> Name {
        if self.is_root() {
            return Name::root();
        }
        let skip = 1 + self.wire[0] as usize;
        Name {
            wire: self.wire[skip..].to_vec(),
        }
    }

    /// `label.self`.
    pub fn prepend(&self, label: &[u8]) -> Result<Name, WireError> {
        if label.is_empty() {
            return Err(WireError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(WireError::LabelTooLong);
        }
        if self.wire.len() + 1 + label.len() > MAX_NAME_LEN {
            return Err(WireError::NameTooLong);
        }
        let mut wire = Vec::with_capacity(self.wire.len() + 1 + label.len());
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
        wire.extend_from_slice(&self.wire);
        Ok(Name { wire })
    }

    /// `prefix-labels.suffix`: the labels of `self` above `old` moved under `new`.
    pub fn replace_suffix(&self, old: &Name, new: &Name) -> Option<Name> {
        let prefix = self.prefix_labels(old)?;
        let mut wire = Vec::with_capacity(self.wire.len() + new.wire.len());
        for l in prefix {
            wire.push(l.len() as u8);
            wire.extend_from_slice(l);
        }
        wire.extend_from_slice(&new.wire);
        if wire.len() > MAX_NAME_LEN {
            return None;
        }
        Some(Name { wire })
    }

    /// A copy with ASCII letters lower-cased.
    pub fn to_lowercase(&self) -> Name {
        Name {
            wire: self.wire.to_ascii_lowercase(),
        }
    }

    /// Lower-cases in place.
    pub fn make_lowercase(&mut self) {
        self.wire.make_ascii_lowercase();
    }

    /// Presentation form lower-cased (CoreDNS logs names this way).
    pub fn to_lowercase_string(&self) -> String {
        let mut out = String::with_capacity(self.wire.len());
        self.write_lowercase(&mut out);
        out
    }

    /// Appends the lower-cased presentation form (as [`Name::to_lowercase_string`]) to `out`,
    /// without allocating when `out` has room.
    pub fn write_lowercase(&self, out: &mut String) {
        if self.is_root() {
            out.push('.');
            return;
        }
        // A name of plain labels is lower-cased here in one pass over its wire form and
        // appended in one go: each label takes as many bytes as on the wire (its length byte
        // becomes the dot), so a name fits. Anything else takes the escaping path.
        let mut buf = [0u8; 255];
        let mut n = 0;
        let mut plain = true;
        'labels: for l in self.labels() {
            for &b in l {
                if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    plain = false;
                    break 'labels;
                }
                buf[n] = b.to_ascii_lowercase();
                n += 1;
            }
            buf[n] = b'.';
            n += 1;
        }
        if plain {
            // Only ASCII letters, digits, '-', '_' and '.' are in `buf`.
            out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
            return;
        }
        for l in self.labels() {
            let _ = write_label(out, &l.to_ascii_lowercase());
            out.push('.');
        }
    }

    /// Compares with exact case.
    pub fn eq_case_sensitive(&self, other: &Name) -> bool {
        self.wire == other.wire
    }

    /// Canonical ordering (RFC 4034 §6.1): by labels from the right, case-insensitive.
    pub fn canonical_cmp(&self, other: &Name) -> std::cmp::Ordering {
        let a: Vec<&[u8]> = self.labels().collect();
        let b: Vec<&[u8]> = other.labels().collect();
        for (x, y) in a.iter().rev().zip(b.iter().rev()) {
            let xl = x.to_ascii_lowercase();
            let yl = y.to_ascii_lowercase();
            match xl.cmp(&yl) {
                std::cmp::Ordering::Equal => continue,
                o => return o,
            }
        }
        a.len().cmp(&b.len())
    }
}

/// Iterator over a name's labels.
pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = *self.wire.get(self.pos)? as usize;
        if len == 0 {
            return None;
        }
        let l = self.wire.get(self.pos + 1..self.pos + 1 + len)?;
        self.pos += 1 + len;
        Some(l)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.wire.eq_ignore_ascii_case(&other.wire)
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in &self.wire {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl std::str::FromStr for Name {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Name, WireError> {
        Name::parse(s)
    }
}

/// Writes one label in presentation form, escaping like BIND and miekg/dns.
pub fn write_label(f: &mut impl fmt::Write, label: &[u8]) -> fmt::Result {
    for &b in label {
        match b {
            b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b' ' | b'@' | b'$' => {
                f.write_char('\\')?;
                f.write_char(b as char)?;
            }
            0x21..=0x7e => f.write_char(b as char)?,
            _ => write!(f, "\\{:03}", b)?,
        }
    }
    Ok(())
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        for l in self.labels() {
            write_label(f, l)?;
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_lowercase_matches_display() {
        for t in [
            "WWW.Example.com.",
            ".",
            "a\\.B.c.",
            "x\\032Y.z.",
            "_Srv._TCP.k8s.local.",
            "Ab.x\\.Y.Cd.",
            // The longest name: 255 bytes on the wire, 254 in presentation form.
            format!("{0}.{0}.{0}.{1}.", "A".repeat(63), "b".repeat(61)).as_str(),
        ] {
            let n = Name::parse(t).unwrap();
            let mut out = String::from("> ");
            n.write_lowercase(&mut out);
            assert_eq!(out, format!("> {}", n.to_lowercase()));
            assert_eq!(n.to_lowercase_string(), n.to_lowercase().to_string());
        }
    }

    #[test]
    fn parse_and_display() {
        let n = Name::parse("WWW.Example.com").unwrap();
        assert_eq!(n.to_string(), "WWW.Example.com.");
        assert_eq!(n.to_lowercase_string(), "www.example.com.");
        assert_eq!(n.label_count(), 3);
        assert_eq!(Name::parse(".").unwrap().to_string(), ".");
        assert_eq!(Name::parse("a\\.b.c.").unwrap().label_count(), 2);
        assert_eq!(Name::parse("a\\.b.c.").unwrap().to_string(), "a\\.b.c.");
        assert_eq!(Name::parse("\\065b").unwrap().to_string(), "Ab.");
        assert!(Name::parse("a..b").is_err());
        assert!(Name::parse(&"a".repeat(64)).is_err());
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(Name::parse(&long).is_err());
    }

    #[test]
    fn case_insensitive_eq_and_subdomain() {
        let a = Name::parse("Foo.Cluster.Local.").unwrap();
        let z = Name::parse("cluster.local.").unwrap();
        assert!(a.is_subdomain_of(&z));
        assert!(z.is_subdomain_of(&z));
        assert!(a.is_subdomain_of(&Name::root()));
        assert!(!Name::parse("xcluster.local.").unwrap().is_subdomain_of(&z));
        // Same bytes at the end but not on a label boundary, in either case.
        assert!(!Name::parse("a.bcluster.local.")
            .unwrap()
            .is_subdomain_of(&z));
        assert!(!Name::parse("a.BCLUSTER.local.")
            .unwrap()
            .is_subdomain_of(&z));
        assert!(Name::parse("foo.cluster.local.")
            .unwrap()
            .is_subdomain_of(&z));
        assert!(!Name::parse("foo.cluster.locax.")
            .unwrap()
            .is_subdomain_of(&z));
        assert!(!Name::parse("local.").unwrap().is_subdomain_of(&z));
        assert_eq!(a, Name::parse("foo.cluster.local").unwrap());
        assert_eq!(a.prefix_labels(&z).unwrap(), vec![b"Foo".as_slice()]);
        assert_eq!(a.parent().to_string(), "Cluster.Local.");
        let r = a
            .replace_suffix(&z, &Name::parse("example.org").unwrap())
            .unwrap();
        assert_eq!(r.to_string(), "Foo.example.org.");
    }

    #[test]
    fn label_escaping_in_display() {
        let n = Name::from_labels([b"a b".as_slice(), &[0u8, 200]]).unwrap();
        assert_eq!(n.to_string(), "a\\ b.\\000\\200.");
    }
}
