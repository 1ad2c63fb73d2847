//! The `header` plugin: sets or clears the AA, RA and RD flags of queries (as later plugins see
//! them) and of replies.

use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::Header as Flags;

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flag {
    Aa,
    Ra,
    Rd,
}

/// (flag, state) in the order written; later rules win.
type Rules = Vec<(Flag, bool)>;

pub(crate) struct Header {
    query: Rules,
    response: Rules,
}

fn apply(h: &mut Flags, rules: &Rules) {
    for &(f, on) in rules {
        match f {
            Flag::Aa => h.aa = on,
            Flag::Ra => h.ra = on,
            Flag::Rd => h.rd = on,
        }
    }
}

fn parse(d: &Directive) -> Result<(Rules, Rules), Error> {
    d.arg_count(0, 0)?;
    let (mut query, mut response) = (Rules::new(), Rules::new());
    for sub in d.sub() {
        let selector = sub.name.text.to_ascii_lowercase();
        let rules = match selector.as_str() {
            "query" => &mut query,
            "response" => &mut response,
            _ => {
                return Err(sub.err(format!(
                    "setting up rule: invalid selector={selector} should be query or response"
                )))
            }
        };
        let Some((action, flags)) = sub.args.split_first() else {
            return Err(sub.err("setting up rule: no flag action provided"));
        };
        let on = match action.text.to_ascii_lowercase().as_str() {
            "set" => true,
            "clear" => false,
            other => {
                return Err(sub.err_at(
                    action,
                    format!("setting up rule: unknown flag action={other}, should be set or clear"),
                ))
            }
        };
        if flags.is_empty() {
            return Err(sub.err(
                "setting up rule: invalid length for flags, at least one should be provided",
            ));
        }
        for t in flags {
            let f = match t.text.to_ascii_lowercase().as_str() {
                "aa" => Flag::Aa,
                "ra" => Flag::Ra,
                "rd" => Flag::Rd,
                other => {
                    return Err(sub.err_at(
                        t,
                        format!("setting up rule: unknown/unsupported flag={other}"),
                    ))
                }
            };
            rules.push((f, on));
        }
    }
    Ok((query, response))
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    // Like CoreDNS: the first line with rules is used.
    for d in lines {
        let (query, response) = parse(d)?;
        if !query.is_empty() || !response.is_empty() {
            ctx.add_handler(Arc::new(Header { query, response }));
            return Ok(());
        }
    }
    Err(lines[0].err("wrong argument count: header needs at least one rule in its block"))
}

impl Handler for Header {
    fn name(&self) -> &'static str {
        "header"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        apply(&mut req.msg.header, &self.query);
        if self.response.is_empty() {
            return next.run(req);
        }
        Box::pin(async move {
            let mut out = next.run(req).await;
            if let Some(m) = out.message_mut() {
                apply(&mut m.header, &self.response);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(text: &str) -> Result<(Rules, Rules), Error> {
        let cf = sextant_corefile::parse_str("Corefile", text, std::path::Path::new(".")).unwrap();
        parse(&cf.blocks[0].directives[0])
    }

    #[test]
    fn rules_in_order_and_errors_named() {
        let (q, r) = directive(
            ". {\n header {\n  query set rd\n  response set ra aa\n  response clear RD\n }\n}\n",
        )
        .unwrap();
        assert_eq!(q, vec![(Flag::Rd, true)]);
        assert_eq!(
            r,
            vec![(Flag::Ra, true), (Flag::Aa, true), (Flag::Rd, false)]
        );
        let e = directive(". {\n header {\n  answer set ra\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:3: answer: setting up rule: invalid selector=answer should be query or response"
        );
        let e = directive(". {\n header {\n  query set xx\n }\n}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Corefile:3:13: query: setting up rule: unknown/unsupported flag=xx"
        );
        assert_eq!(directive(". {\n header\n}\n").unwrap(), (vec![], vec![]));
        assert!(directive(". {\n header {\n  query set\n }\n}\n").is_err());
        assert!(directive(". {\n header {\n  query flip rd\n }\n}\n").is_err());
    }
}
