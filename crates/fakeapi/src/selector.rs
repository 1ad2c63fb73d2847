//! Kubernetes label and field selector parsing and matching for the fake API server.
//! Pure functions over `serde_json::Value`: no I/O, no state.

use serde_json::Value;

/// A parse error in a label or field selector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector text as given.
    pub selector: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelTerm {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`). Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    terms: Vec<LabelTerm>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(sel: &str, rest: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or(SelectorError {
            selector: sel.to_string(),
            reason: "set operator needs a parenthesised list",
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses a selector; the empty string gives the match-all selector.
    pub fn parse(sel: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if sel.trim().is_empty() {
            return Ok(Self { terms });
        }
        let err = |reason| SelectorError {
            selector: sel.to_string(),
            reason,
        };
        for raw in split_top(sel) {
            let t = raw.trim();
            if t.is_empty() {
                return Err(err("empty term"));
            }
            if let Some(k) = t.strip_prefix('!') {
                terms.push(LabelTerm::NotExists(k.trim().to_string()));
            } else if let Some((k, v)) = t.split_once("!=") {
                terms.push(LabelTerm::NotEq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = t.split_once("==") {
                terms.push(LabelTerm::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = t.split_once('=') {
                terms.push(LabelTerm::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                terms.push(LabelTerm::NotIn(k.trim().into(), parse_set(sel, rest)?));
            } else if let Some((k, rest)) = t.split_once(" in ") {
                terms.push(LabelTerm::In(k.trim().into(), parse_set(sel, rest)?));
            } else if t.contains(|c: char| c.is_whitespace() || c == '(' || c == ')') {
                return Err(err("unknown operator"));
            } else {
                terms.push(LabelTerm::Exists(t.to_string()));
            }
        }
        for t in &terms {
            let k = match t {
                LabelTerm::Exists(k)
                | LabelTerm::NotExists(k)
                | LabelTerm::Eq(k, _)
                | LabelTerm::NotEq(k, _)
                | LabelTerm::In(k, _)
                | LabelTerm::NotIn(k, _) => k,
            };
            if k.is_empty() {
                return Err(err("empty key"));
            }
        }
        Ok(Self { terms })
    }

    /// True when the object's `metadata.labels` satisfy every term.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.terms.iter().all(|t| match t {
            LabelTerm::Exists(k) => get(k).is_some(),
            LabelTerm::NotExists(k) => get(k).is_none(),
            LabelTerm::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelTerm::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelTerm::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelTerm::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        })
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(Vec<String>, bool, String)>,
}

impl FieldSelector {
    /// Parses a selector; the empty string gives the match-all selector.
    pub fn parse(sel: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if sel.trim().is_empty() {
            return Ok(Self { terms });
        }
        for raw in sel.split(',') {
            let t = raw.trim();
            let (path, eq, val) = if let Some((p, v)) = t.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = t.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = t.split_once('=') {
                (p, true, v)
            } else {
                return Err(SelectorError {
                    selector: sel.to_string(),
                    reason: "field selector term needs =, == or !=",
                });
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            terms.push((path, eq, val.trim().to_string()));
        }
        Ok(Self { terms })
    }

    /// True when every term holds; a missing field compares as the empty string.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(path, eq, val)| {
            let mut cur = Some(obj);
            for p in path {
                cur = cur.and_then(|c| c.get(p));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *val) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_forms() {
        let o = obj(json!({"app": "web", "tier": "fe"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web)"));
        assert!(m("tier,!missing"));
        assert!(!m("!tier"));
        assert!(m("environment notin (qa),app=web"));
        assert!(!m("app in (db),tier"));
        assert!(LabelSelector::parse("app ~ x").is_err());
        assert!(LabelSelector::parse("a,,b").is_err());
    }

    #[test]
    fn field_forms() {
        let o = obj(json!({}));
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&o);
        assert!(m(
            "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"
        ));
        assert!(!m("status.phase!=Running"));
        assert!(m("metadata.name="));
        assert!(!m("metadata.name=x"));
        assert!(FieldSelector::parse("garbage").is_err());
    }
}
