//! `rewrite cname` rules: parsing `cname [exact|prefix|suffix|substring|regex] FROM TO` (CoreDNS's
//! error texts) and deciding which CNAME target a reply's record is rewritten to. The lookup of
//! the new target and the answer surgery live in the handler (`mod.rs`).

use regex::Regex;

use super::rules::{RewriteError, MAX_REGEXP_LEN};

#[derive(Clone, Debug)]
pub(crate) enum CnameMatch {
    Exact,
    Prefix,
    Suffix,
    Substring,
    Regex(Regex),
}

#[derive(Clone, Debug)]
pub(crate) struct CnameRule {
    pub kind: CnameMatch,
    pub from: String,
    pub to: String,
}

fn normalize(s: &str) -> String {
    let mut s = s.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

impl CnameRule {
    /// Parses the words after `cname`.
    pub(crate) fn parse(args: &[String]) -> Result<CnameRule, RewriteError> {
        let (kind, from, to) = match args.len() {
            3 => {
                let k = args[0].to_ascii_lowercase();
                if !matches!(
                    k.as_str(),
                    "exact" | "prefix" | "suffix" | "substring" | "regex"
                ) {
                    return Err(RewriteError::CnameType(k));
                }
                (k, args[1].to_lowercase(), args[2].to_lowercase())
            }
            2 => (
                "exact".to_string(),
                args[0].to_lowercase(),
                args[1].to_lowercase(),
            ),
            n => return Err(RewriteError::TooFew { rule: "cname", n }),
        };
        let kind = match kind.as_str() {
            "exact" => {
                return Ok(CnameRule {
                    kind: CnameMatch::Exact,
                    from: normalize(&from),
                    to: normalize(&to),
                })
            }
            "prefix" => CnameMatch::Prefix,
            "suffix" => CnameMatch::Suffix,
            "substring" => CnameMatch::Substring,
            _ => {
                if from.len() > MAX_REGEXP_LEN {
                    return Err(RewriteError::RuleRegexTooLong {
                        rule: "cname",
                        len: from.len(),
                    });
                }
                let re = Regex::new(&from).map_err(|e| {
                    // The last line of the regex crate's report says what is wrong.
                    let e = e.to_string();
                    let why = e.lines().last().unwrap_or("").trim_start_matches("error: ");
                    RewriteError::CnameRegex(why.to_string())
                })?;
                CnameMatch::Regex(re)
            }
        };
        Ok(CnameRule { kind, from, to })
    }

    /// True when the rule takes part at all (CoreDNS skips a rule with an empty FROM or TO).
    pub(crate) fn active(&self) -> bool {
        !self.from.is_empty() && !self.to.is_empty()
    }

    /// The (FROM, TO) pair for a CNAME target; the record is rewritten when its target equals
    /// FROM. `None` when the target does not match at all.
    pub(crate) fn pair_for(&self, target: &str) -> Option<(String, String)> {
        match &self.kind {
            CnameMatch::Exact => Some((self.from.clone(), self.to.clone())),
            CnameMatch::Prefix => target
                .strip_prefix(self.from.as_str())
                .map(|rest| (target.to_string(), format!("{}{rest}", self.to))),
            CnameMatch::Suffix => target
                .strip_suffix(self.from.as_str())
                .map(|before| (target.to_string(), format!("{before}{}", self.to))),
            CnameMatch::Substring => target
                .contains(self.from.as_str())
                .then(|| (target.to_string(), target.replace(&self.from, &self.to))),
            CnameMatch::Regex(re) => {
                let caps = re.captures(target)?;
                let mut s = self.to.clone();
                for (i, g) in caps.iter().enumerate() {
                    s = s.replace(&format!("{{{i}}}"), g.map(|m| m.as_str()).unwrap_or(""));
                }
                Some((target.to_string(), s))
            }
        }
    }

    /// The new target for a CNAME record's target, if this rule rewrites it.
    pub(crate) fn new_target(&self, target: &str) -> Option<String> {
        let (from, to) = self.pair_for(target)?;
        (from == target).then_some(to)
    }
}
