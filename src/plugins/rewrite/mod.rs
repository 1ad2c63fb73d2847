//! The `rewrite` plugin: rewrites the question (name, type, class) before the rest of the chain
//! sees it and rewrites the reply on the way back (names and values in records, TTLs, rcode),
//! rule by rule in CoreDNS's order; setup and handler. Rules themselves live in `rules.rs`.

pub mod rules;

use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Message, Name, Rcode};

use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

use rules::{Mode, ResponseRule, Rule};

pub struct Rewrite {
    rules: Vec<Rule>,
}

/// Flattens a directive's arguments and, for the block form, every token of its block.
fn flat_args(d: &Directive) -> Vec<String> {
    fn walk(ds: &[Directive], out: &mut Vec<String>) {
        for d in ds {
            out.push(d.name.text.clone());
            out.extend(d.args.iter().map(|t| t.text.clone()));
            walk(d.sub(), out);
        }
    }
    let mut out: Vec<String> = d.args.iter().map(|t| t.text.clone()).collect();
    if out.len() < 2 {
        walk(d.sub(), &mut out);
    }
    out
}

/// Parses every `rewrite` line of a block into rules, in order.
pub fn parse(lines: &[&Directive]) -> Result<Vec<Rule>, Error> {
    let mut out = Vec::new();
    for d in lines {
        let args = flat_args(d);
        let rule = Rule::parse(&args).map_err(|e| match d.args.first() {
            Some(t) => d.err_at(t, e),
            None => d.err(e),
        })?;
        out.push(rule);
    }
    Ok(out)
}

pub fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let rules = parse(lines)?;
    ctx.add_handler(Arc::new(Rewrite { rules }));
    Ok(())
}

/// Applies response rules to a reply: every record of authority, answer and additional gets
/// every rule, last rule first; a reply without records only gets the rcode rules.
pub fn rewrite_reply(m: &mut Message, rules: &[ResponseRule]) {
    if rules.is_empty() {
        return;
    }
    let mut rcode = m.rcode();
    let total = m.answers.len() + m.authority.len() + m.additional.len();
    for sec in [&mut m.authority, &mut m.answers, &mut m.additional] {
        for rr in sec.iter_mut() {
            for r in rules.iter().rev() {
                r.apply(&mut rcode, Some(rr));
            }
        }
    }
    if total == 0 {
        for r in rules.iter().rev() {
            r.apply(&mut rcode, None);
        }
    }
    if rcode != m.rcode() {
        m.set_rcode(rcode);
    }
}

impl Handler for Rewrite {
    fn name(&self) -> &'static str {
        "rewrite"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let Some(orig_q) = req.msg.question().cloned() else {
                return next.run(req).await;
            };
            let mut resp: Vec<ResponseRule> = Vec::new();
            let mut stopped = false;
            for rule in &self.rules {
                match rule.rewrite(&mut req.msg) {
                    Err(bad) => {
                        req.msg.questions[0] = orig_q;
                        return Outcome::error(
                            "rewrite",
                            Rcode::SERVFAIL,
                            format!("invalid name after rewrite: {bad}"),
                        );
                    }
                    Ok(None) => {}
                    Ok(Some(r)) => {
                        resp.extend(r);
                        if rule.mode == Mode::Stop {
                            stopped = true;
                            break;
                        }
                    }
                }
            }
            if !stopped && resp.is_empty() {
                return next.run(req).await;
            }
            let mut out = next.run(req).await;
            // A reply a later plugin (cache) wrote as bytes is decoded so it can be rewritten.
            out.message_mut();
            let mut reply = match out.reply.take() {
                Some(m) => m,
                None => {
                    // CoreDNS writes the error rcode itself so response rules (rcode) apply.
                    let mut m = Message::reply_to(&req.msg);
                    m.set_rcode(out.rcode);
                    out.writer = "rewrite";
                    out.rcode = Rcode::NOERROR;
                    m
                }
            };
            reply.questions = vec![orig_q];
            rewrite_reply(&mut reply, &resp);
            Outcome {
                reply: Some(reply),
                ..out
            }
        })
    }
}

/// The question name in the lower-case presentation form rules match on.
pub fn name_str(n: &Name) -> String {
    n.to_lowercase_string()
}

#[cfg(test)]
mod tests;
