//! The `rewrite` plugin: rewrites the query (name, type, class, EDNS0 options) before the rest of
//! the chain sees it and the reply on the way back (names and values in records, TTLs, rcode, CNAME
//! targets resolved anew, reverted options), rule by rule in CoreDNS's order; setup and handler.
//! Rules live in `rules.rs`, `edns0.rs` and `cname.rs`.

pub(crate) mod cname;
pub(crate) mod edns0;
pub(crate) mod rules;

use std::sync::Arc;

use sextant_corefile::{Directive, Error};
use sextant_wire::{Edns, Message, Name, RData, Rcode, Record, Reply};

use crate::log::PluginLog;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};

use edns0::Env;
use rules::{Kind, Mode, ResponseRule, Rule};

const LOG: PluginLog = PluginLog("rewrite");

pub(crate) struct Rewrite {
    rules: Vec<Rule>,
    /// Option codes a reply without an OPT record echoes from the rewritten query: CoreDNS
    /// attaches the query's OPT to such a reply, keeping the options it supports, among them
    /// every `local` code a rule names and NSID. Empty when there is no `edns0` rule.
    echo: Vec<u16>,
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
pub(crate) fn parse(lines: &[&Directive]) -> Result<Vec<Rule>, Error> {
    let mut out = Vec::new();
    for d in lines {
        let args = flat_args(d);
        let rule = Rule::parse(&args).map_err(|e| match d.args.first() {
            Some(t) => d.err_at(t, e.to_string()),
            None => d.err(e.to_string()),
        })?;
        out.push(rule);
    }
    Ok(out)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let rules = parse(lines)?;
    let mut echo: Vec<u16> = Vec::new();
    for r in &rules {
        if let Kind::Edns0(e) = &r.kind {
            if let Some(c) = e.echo_code() {
                if !echo.contains(&c) {
                    echo.push(c);
                }
            }
        }
    }
    ctx.add_handler(Arc::new(Rewrite { rules, echo }));
    Ok(())
}

/// Where a record of the reply being rewritten lives: records are shared between the sections
/// and a `cname` rule's rebuilt answer, as the Go pointers are in CoreDNS.
struct Arena {
    records: Vec<Record>,
    sections: [Vec<usize>; 3],
}

const AUTHORITY: usize = 0;
const ANSWER: usize = 1;

/// Applies response rules to a reply: every record of authority, answer and additional (and the
/// OPT record, for the `edns0` reverts) gets every rule, last rule first; a reply without records
/// only gets the rcode rules. A `cname` rule resolves the new target through `req`'s server.
pub(crate) async fn respond(m: &mut Message, rules: &[ResponseRule], req: Option<&Request>) {
    if rules.is_empty() {
        return;
    }
    let mut rcode = m.rcode();
    let total = m.answers.len() + m.authority.len() + m.additional.len();
    let mut arena = Arena {
        records: Vec::with_capacity(total),
        sections: [Vec::new(), Vec::new(), Vec::new()],
    };
    for (i, sec) in [
        std::mem::take(&mut m.authority),
        std::mem::take(&mut m.answers),
        std::mem::take(&mut m.additional),
    ]
    .into_iter()
    .enumerate()
    {
        for rr in sec {
            arena.sections[i].push(arena.records.len());
            arena.records.push(rr);
        }
    }
    for sec in 0..3 {
        let snapshot = arena.sections[sec].clone();
        for idx in snapshot {
            for r in rules.iter().rev() {
                match r {
                    ResponseRule::Cname(c) => {
                        cname_rewrite(m, &mut arena, idx, c, req).await;
                    }
                    ResponseRule::Edns(rv) => {
                        if let Some(e) = m.edns.as_mut() {
                            rv.apply(&mut e.options);
                        }
                    }
                    _ => r.apply(&mut rcode, Some(&mut arena.records[idx])),
                }
            }
        }
    }
    if m.edns.is_some() {
        // The OPT record is one more record of the additional section in CoreDNS.
        for r in rules.iter().rev() {
            match r {
                ResponseRule::Edns(rv) => {
                    if let Some(e) = m.edns.as_mut() {
                        rv.apply(&mut e.options);
                    }
                }
                ResponseRule::Cname(_) => {}
                _ => r.apply(&mut rcode, None),
            }
        }
    } else if total == 0 {
        for r in rules.iter().rev() {
            r.apply(&mut rcode, None);
        }
    }
    let take = |ids: &[usize]| -> Vec<Record> {
        ids.iter()
            .filter_map(|&i| arena.records.get(i).cloned())
            .collect()
    };
    m.authority = take(&arena.sections[AUTHORITY]);
    m.answers = take(&arena.sections[ANSWER]);
    m.additional = take(&arena.sections[2]);
    if rcode != m.rcode() {
        m.set_rcode(rcode);
    }
}

/// One `cname` rule on one record: if it is a CNAME whose target the rule rewrites, look the new
/// target up (same query type) and make the answer the CNAMEs up to that one, its target changed,
/// followed by the lookup's answer; TC comes from the lookup.
async fn cname_rewrite(
    m: &mut Message,
    arena: &mut Arena,
    idx: usize,
    rule: &cname::CnameRule,
    req: Option<&Request>,
) {
    let target = match &arena.records[idx].data {
        RData::Cname(t) => t.to_string(),
        _ => return,
    };
    let Some(to) = rule.new_target(&target) else {
        return;
    };
    let Some(req) = req else {
        LOG.error("upstream lookup failed: no full server is running");
        return;
    };
    let Ok(to_name) = Name::parse(&to) else {
        LOG.error(&format!("upstream lookup failed: invalid name {to}"));
        return;
    };
    let mut out = req.resolve(to_name.clone(), req.qtype()).await;
    // A chain that wrote nothing gets the server's error reply: no answer.
    let (answers, tc) = match out.take_message() {
        Some(up) => (up.answers, up.header.tc),
        None => (Vec::new(), false),
    };
    let mut new_answer = Vec::new();
    for &i in &arena.sections[ANSWER] {
        if let RData::Cname(t) = &mut arena.records[i].data {
            new_answer.push(i);
            if t.to_string() == target {
                *t = to_name.clone();
                break;
            }
        }
    }
    for rr in answers {
        new_answer.push(arena.records.len());
        arena.records.push(rr);
    }
    arena.sections[ANSWER] = new_answer;
    m.header.tc = tc;
}

/// The reply carries no OPT record: attach the rewritten query's options CoreDNS would echo
/// (reverted by `revert` rules), as its server does with the query's OPT.
fn echo(reply: &mut Message, query: &Message, resp: &[ResponseRule], codes: &[u16]) {
    let Some(qe) = &query.edns else {
        return;
    };
    let mut opts = qe.options.clone();
    for r in resp.iter().rev() {
        if let ResponseRule::Edns(rv) = r {
            rv.apply(&mut opts);
        }
    }
    opts.retain(|o| codes.contains(&o.code));
    if opts.is_empty() {
        return;
    }
    let rcode = reply.rcode();
    let mut e = Edns::new(qe.udp_size);
    e.dnssec_ok = qe.dnssec_ok;
    e.options = opts;
    reply.edns = Some(e);
    reply.set_rcode(rcode);
}

/// [`respond`] without a server to resolve through, for tests.
#[cfg(test)]
pub(crate) fn rewrite_reply(m: &mut Message, rules: &[ResponseRule]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(respond(m, rules, None));
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
            let env = Env {
                client: req.client,
                local: req.local,
                proto: req.proto,
            };
            let mut resp: Vec<ResponseRule> = Vec::new();
            let mut stopped = false;
            for rule in &self.rules {
                match rule.rewrite_env(&mut req.msg, &env) {
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
                if self.echo.is_empty() {
                    return next.run(req).await;
                }
                let mut out = next.run(req).await;
                if let Some(reply) = out.message_mut() {
                    if reply.edns.is_none() {
                        echo(reply, &req.msg, &[], &self.echo);
                    }
                }
                return out;
            }
            let mut out = next.run(req).await;
            // A reply a later plugin (cache) wrote as bytes is decoded so it can be rewritten.
            let mut reply = match out.take_message() {
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
            let had_opt = reply.edns.is_some();
            respond(&mut reply, &resp, Some(req)).await;
            if !had_opt && !self.echo.is_empty() {
                echo(&mut reply, &req.msg, &resp, &self.echo);
            }
            Outcome {
                reply: Some(Reply::parsed(reply)),
                ..out
            }
        })
    }
}

#[cfg(test)]
mod tests;
