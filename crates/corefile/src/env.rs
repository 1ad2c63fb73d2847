//! Environment substitution of `{%VAR%}` and `{$VAR}` inside token text. Pure: the lookup is injected.
//!
//! Like CoreDNS (Caddy v1 `replaceEnvVars`): the `{%VAR%}` form is replaced first, then `{$VAR}`; an unset
//! variable becomes the empty string; an unterminated or empty reference (`{$}`) stops substitution of that
//! form. Unlike Caddy, a substituted value is not itself re-scanned for references of the same form (Caddy
//! would loop forever on `X={$X}`).

/// Substitute both reference forms in `s`.
pub(crate) fn substitute(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    if !s.contains('{') {
        return s.to_string();
    }
    let s = substitute_form(s, "{%", "%}", env);
    substitute_form(&s, "{$", "}", env)
}

fn substitute_form(
    s: &str,
    start: &str,
    end: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(start) {
        let after = &rest[i + start.len()..];
        let Some(j) = after.find(end) else { break };
        if j == 0 {
            break;
        }
        out.push_str(&rest[..i]);
        out.push_str(&env(&after[..j]).unwrap_or_default());
        rest = &after[j + end.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "A" => Some("alpha".into()),
            "B" => Some("b b".into()),
            "SELF" => Some("{$SELF}".into()),
            "PCT" => Some("{$A}".into()),
            _ => None,
        }
    }

    #[test]
    fn forms() {
        assert_eq!(substitute("{$A}", &env), "alpha");
        assert_eq!(substitute("{%A%}", &env), "alpha");
        assert_eq!(substitute("x{$A}y{$B}z", &env), "xalphayb bz");
        assert_eq!(substitute("{$UNSET}.", &env), ".");
        assert_eq!(substitute("{$A}{$A}", &env), "alphaalpha");
        assert_eq!(substitute("plain", &env), "plain");
    }

    #[test]
    fn malformed_references_stay() {
        assert_eq!(substitute("{$A", &env), "{$A");
        assert_eq!(substitute("{$}", &env), "{$}");
        assert_eq!(substitute("{%A}", &env), "{%A}");
        assert_eq!(substitute("{{ $x }}", &env), "{{ $x }}");
        assert_eq!(substitute("{", &env), "{");
    }

    #[test]
    fn no_recursion_within_a_form() {
        assert_eq!(substitute("{$SELF}", &env), "{$SELF}");
        // but like CoreDNS, the {$..} pass runs after the {%..%} pass
        assert_eq!(substitute("{%PCT%}", &env), "alpha");
    }
}
