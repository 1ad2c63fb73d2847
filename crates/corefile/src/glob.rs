//! Minimal file globbing for `import`: `*` (any run of characters within one path component) and `?` (one
//! character), like Go's `filepath.Glob` without character classes. Reads directories; never writes.
//! Results are sorted per directory, so the import order is deterministic.

use std::path::{Component, Path, PathBuf};

/// True when `s` contains a glob metacharacter (`*`, `?`, `[`).
pub(crate) fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expand `pattern` (already absolute or relative to the process cwd) into the existing paths it matches.
pub(crate) fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut current: Vec<PathBuf> = vec![PathBuf::new()];
    for comp in pattern.components() {
        let mut next = Vec::new();
        match comp {
            Component::Normal(part) => {
                let part = part.to_string_lossy();
                if has_meta(&part) {
                    for dir in &current {
                        let read_from = if dir.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            dir.as_path()
                        };
                        let Ok(rd) = std::fs::read_dir(read_from) else {
                            continue;
                        };
                        let mut names: Vec<String> = rd
                            .filter_map(|e| e.ok())
                            .filter_map(|e| e.file_name().into_string().ok())
                            .filter(|n| matches(&part, n))
                            .collect();
                        names.sort();
                        next.extend(names.into_iter().map(|n| dir.join(n)));
                    }
                } else {
                    next.extend(current.iter().map(|d| d.join(part.as_ref())));
                }
            }
            other => next.extend(current.iter().map(|d| d.join(other.as_os_str()))),
        }
        current = next;
        if current.is_empty() {
            break;
        }
    }
    current.retain(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_ok());
    current
}

/// Match one path component against a pattern of literal chars, `*` and `?`.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative wildcard matching with single backtrack point: O(len(p) * len(n)) worst case.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == n[ni])) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher() {
        assert!(matches("*.conf", "a.conf"));
        assert!(matches("*.conf", ".conf"));
        assert!(!matches("*.conf", "a.conf.bak"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*", "anything"));
        assert!(matches("x*y*z", "xAyBz"));
        assert!(!matches("abc", "abd"));
    }

    #[test]
    fn globbing_in_a_temp_dir() {
        let d = tempfile::tempdir().unwrap();
        for f in ["b.conf", "a.conf", "c.txt"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        std::fs::create_dir(d.path().join("sub1")).unwrap();
        std::fs::write(d.path().join("sub1").join("z.conf"), "x").unwrap();
        let got = glob(&d.path().join("*.conf"));
        assert_eq!(got, vec![d.path().join("a.conf"), d.path().join("b.conf")]);
        let got = glob(&d.path().join("sub?").join("*.conf"));
        assert_eq!(got, vec![d.path().join("sub1").join("z.conf")]);
        assert!(glob(&d.path().join("*.none")).is_empty());
        assert_eq!(glob(&d.path().join("c.txt")), vec![d.path().join("c.txt")]);
        assert!(glob(&d.path().join("missing")).is_empty());
    }
}
