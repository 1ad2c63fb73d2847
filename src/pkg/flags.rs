//! Command-line flags the way Go's `flag` package reads them (`-flag`, `--flag`, `-flag=value`,
//! `-flag value`, booleans as `-flag` or `-flag=false`, `--` ends the flags, the first non-flag
//! argument stops parsing), for `sextant` and `sextant node-cache`. What each flag means stays
//! with its command. No I/O.

use std::fmt;

/// One flag as written: its name and the value after `=`, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flag<'a> {
    pub name: &'a str,
    pub inline: Option<&'a str>,
}

/// What Go's `flag` package reports, with its texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FlagError {
    /// `---x`, `-=x`.
    BadSyntax(String),
    /// A flag that takes a value was last with none.
    NeedsArgument(String),
    /// A boolean flag's value is not one `strconv.ParseBool` accepts (flag, value).
    BadBool(String, String),
    /// No such flag.
    NotDefined(String),
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::BadSyntax(a) => write!(f, "bad flag syntax: {a}"),
            FlagError::NeedsArgument(n) => write!(f, "flag needs an argument: -{n}"),
            FlagError::BadBool(n, v) => {
                write!(f, "invalid boolean value {v:?} for -{n}: parse error")
            }
            FlagError::NotDefined(n) => write!(f, "flag provided but not defined: -{n}"),
        }
    }
}

/// Walks a command line flag by flag.
pub(crate) struct Flags<'a> {
    args: &'a [String],
    next: usize,
}

impl<'a> Flags<'a> {
    pub(crate) fn new(args: &'a [String]) -> Flags<'a> {
        Flags { args, next: 0 }
    }

    /// The next flag; None at the end, after `--`, or at the first argument that is not a flag
    /// (left in [`rest`](Flags::rest)).
    pub(crate) fn next_flag(&mut self) -> Result<Option<Flag<'a>>, FlagError> {
        let Some(a) = self.args.get(self.next) else {
            return Ok(None);
        };
        if a.len() < 2 || !a.starts_with('-') {
            return Ok(None);
        }
        if a == "--" {
            self.next += 1;
            return Ok(None);
        }
        let name = a.strip_prefix("--").unwrap_or(&a[1..]);
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(FlagError::BadSyntax(a.clone()));
        }
        self.next += 1;
        Ok(Some(match name.split_once('=') {
            Some((name, v)) => Flag {
                name,
                inline: Some(v),
            },
            None => Flag { name, inline: None },
        }))
    }

    /// The value of a flag that takes one: after `=`, else the next argument.
    pub(crate) fn value(&mut self, f: &Flag<'a>) -> Result<&'a str, FlagError> {
        if let Some(v) = f.inline {
            return Ok(v);
        }
        let v = self
            .args
            .get(self.next)
            .ok_or_else(|| FlagError::NeedsArgument(f.name.to_string()))?;
        self.next += 1;
        Ok(v)
    }

    /// What is left once [`next_flag`](Flags::next_flag) returned None: the arguments after
    /// the flags.
    pub(crate) fn rest(&self) -> &'a [String] {
        &self.args[self.next.min(self.args.len())..]
    }
}

impl Flag<'_> {
    /// A boolean flag's value: true without `=`, else Go's `strconv.ParseBool`.
    pub(crate) fn bool(&self) -> Result<bool, FlagError> {
        match self.inline {
            None => Ok(true),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(v) => Err(FlagError::BadBool(self.name.to_string(), v.to_string())),
        }
    }

    /// The error for a flag the command does not define.
    pub(crate) fn not_defined(&self) -> FlagError {
        FlagError::NotDefined(self.name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    /// (name, value) pairs.
    type Pairs = Vec<(String, String)>;

    /// Every flag as (name, value): booleans `b`, `quiet` and `x`, the others take a value.
    fn walk(a: &[&str]) -> Result<(Pairs, Vec<String>), FlagError> {
        let a = args(a);
        let mut f = Flags::new(&a);
        let mut out = Vec::new();
        while let Some(flag) = f.next_flag()? {
            let v = match flag.name {
                "b" | "quiet" | "x" => flag.bool()?.to_string(),
                _ => f.value(&flag)?.to_string(),
            };
            out.push((flag.name.to_string(), v));
        }
        Ok((out, f.rest().to_vec()))
    }

    fn pairs(p: &[(&str, &str)]) -> Pairs {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn every_syntax() {
        let (got, rest) = walk(&[
            "-conf",
            "/c",
            "--port=53",
            "-b",
            "--quiet=false",
            "-x=T",
            "-e=",
            "-s",
            "-v",
        ])
        .unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("conf", "/c"),
                ("port", "53"),
                ("b", "true"),
                ("quiet", "false"),
                ("x", "true"),
                ("e", ""),
                ("s", "-v"),
            ])
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn stops_at_double_dash_and_at_the_first_argument() {
        let (got, rest) = walk(&["-b", "--", "-quiet", "x"]).unwrap();
        assert_eq!(got, pairs(&[("b", "true")]));
        assert_eq!(rest, args(&["-quiet", "x"]));
        let (got, rest) = walk(&["-b", "stray", "-quiet"]).unwrap();
        assert_eq!(got, pairs(&[("b", "true")]));
        assert_eq!(rest, args(&["stray", "-quiet"]));
        let (_, rest) = walk(&["-", "-b"]).unwrap();
        assert_eq!(rest, args(&["-", "-b"]));
    }

    #[test]
    fn go_errors() {
        let e = |a: &[&str]| walk(a).unwrap_err().to_string();
        assert_eq!(e(&["---x"]), "bad flag syntax: ---x");
        assert_eq!(e(&["-=x"]), "bad flag syntax: -=x");
        assert_eq!(e(&["-conf"]), "flag needs an argument: -conf");
        assert_eq!(
            e(&["-quiet=maybe"]),
            "invalid boolean value \"maybe\" for -quiet: parse error"
        );
        let a = args(&["-nope"]);
        let mut f = Flags::new(&a);
        let flag = f.next_flag().unwrap().unwrap();
        assert_eq!(
            flag.not_defined().to_string(),
            "flag provided but not defined: -nope"
        );
    }
}
