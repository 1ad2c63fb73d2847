//! The `view` plugin: a server block is chosen for a query only when every `expr` of its view
//! is true for it (split DNS); several blocks may then serve the same zone and port. Setup
//! compiles the expressions (an error fails the configuration at its `file:line:column`) and
//! registers the block's filter; the server evaluates it while routing (`src/server/site.rs`).

mod expr;

use std::net::IpAddr;
use std::sync::Arc;

use sextant_corefile::{Directive, Error, Pos};
use sextant_wire::{Class, Name, RType};

use crate::plugin::{
    BoxFuture, Handler, Metadata, MetadataProvider, Next, Outcome, Proto, Request, SetupCtx,
    ViewFilter,
};

/// One block's view: its name and compiled expressions (all must be true).
pub(crate) struct View {
    name: Arc<str>,
    progs: Vec<expr::Program>,
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let view = parse(lines[0])?;
    let view = Arc::new(view);
    ctx.set_view(view.name.clone(), view.clone());
    ctx.add_handler(view);
    Ok(())
}

fn parse(d: &Directive) -> Result<View, Error> {
    d.arg_count(1, 1)?;
    let mut progs = Vec::new();
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "expr" => {
                sub.arg_count(1, usize::MAX)?;
                let src = sub.arg_strs().join(" ");
                let prog = expr::compile(&src).map_err(|e| {
                    // Point at the argument the error falls in.
                    let mut at = 0;
                    let mut tok = &sub.args[0];
                    for t in &sub.args {
                        if e.offset < at + t.text.len() + 1 {
                            tok = t;
                            break;
                        }
                        at += t.text.len() + 1;
                        tok = t;
                    }
                    let inside = e.offset.saturating_sub(at).min(tok.text.len());
                    let pos = Pos {
                        file: tok.pos.file.clone(),
                        line: tok.pos.line,
                        col: tok.pos.col + inside as u32 + u32::from(tok.quoted),
                    };
                    Error {
                        pos,
                        directive: Some(d.name.text.clone()),
                        msg: format!("invalid expression {src:?}: {e}"),
                    }
                })?;
                progs.push(prog);
            }
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    Ok(View {
        name: Arc::from(d.args[0].text.as_str()),
        progs,
    })
}

impl ViewFilter for View {
    fn matches(&self, req: &mut Request) -> bool {
        let env = ReqEnv(req);
        self.progs.iter().all(|p| p.matches(&env))
    }
}

impl Handler for View {
    fn name(&self) -> &'static str {
        "view"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        next.run(req)
    }

    fn metadata_provider(&self) -> Option<&dyn MetadataProvider> {
        Some(self)
    }
}

/// `view/name`: the name of the view of the block handling the request.
impl MetadataProvider for View {
    fn metadata(&self, _req: &Request, md: &mut Metadata) {
        md.set("view/name", self.name.to_string());
    }
}

/// The request as the expression language sees it (CoreDNS's `request.Request` methods).
struct ReqEnv<'a>(&'a Request);

impl expr::Env for ReqEnv<'_> {
    fn qname(&self) -> Option<&Name> {
        self.0.msg.question().map(|q| &q.name)
    }
    fn qtype(&self) -> RType {
        self.0.qtype()
    }
    fn qclass(&self) -> Class {
        self.0.qclass()
    }
    fn proto(&self) -> &'static str {
        self.0.proto.as_str()
    }
    fn size(&self) -> i64 {
        self.0.size as i64
    }
    fn client_ip(&self) -> IpAddr {
        self.0.client.ip()
    }
    fn client_port(&self) -> u16 {
        self.0.client.port()
    }
    fn server_ip(&self) -> IpAddr {
        // CoreDNS reads a UDP query's local address from its socket, and a listener on every
        // address is one dual-stack socket: "::" for IPv4 and IPv6 clients alike.
        let ip = self.0.local.ip();
        if self.0.proto == Proto::Udp && ip.is_unspecified() {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            ip
        }
    }
    fn server_port(&self) -> u16 {
        self.0.local.port()
    }
    fn id(&self) -> i64 {
        i64::from(self.0.msg.header.id)
    }
    fn opcode(&self) -> i64 {
        i64::from(self.0.msg.header.opcode)
    }
    fn do_bit(&self) -> bool {
        self.0.do_bit()
    }
    fn bufsize(&self) -> i64 {
        match self.0.proto {
            Proto::Tcp => 65535,
            Proto::Udp => i64::from(self.0.bufsize()),
        }
    }
    fn metadata(&self, label: &str) -> Option<String> {
        // Collected by the block's `metadata` plugin while the request is routed.
        self.0.meta(label).map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<View, Error> {
        let cf = sextant_corefile::parse_str(
            "Corefile",
            &format!(". {{\n{text}\n}}\n"),
            std::path::Path::new("."),
        )
        .unwrap();
        parse(&cf.blocks[0].directives[0])
    }

    #[test]
    fn setup_as_coredns() {
        assert_eq!(
            parse_str("view example {\n expr name() == 'example.com.'\n}")
                .unwrap()
                .progs
                .len(),
            1
        );
        assert_eq!(
            parse_str("view example {\n expr incidr(client_ip(), '10.0.0.0/24')\n}")
                .unwrap()
                .progs
                .len(),
            1
        );
        assert_eq!(
            parse_str("view example {\n expr name() == 'example.com.'\n expr name() == 'example2.com.'\n}")
                .unwrap()
                .progs
                .len(),
            2
        );
        assert_eq!(parse_str("view example").unwrap().progs.len(), 0);
        assert!(parse_str("view").is_err());
        assert!(parse_str("view a b").is_err());
        let e = parse_str("view x {\n foo bar\n}").err().unwrap();
        assert_eq!((e.pos.line, e.pos.col), (3, 2));
        assert!(e.msg.contains("unknown property 'foo'"));
    }

    #[test]
    fn expression_errors_point_into_the_corefile() {
        // ". {" is line 1; "view" line 2; the expr line 3, "expr" at column 2.
        let e = parse_str("view x {\n expr name() == 1\n}").err().unwrap();
        assert_eq!((e.pos.line, e.pos.col), (3, 14), "{e}");
        assert!(
            e.msg.contains("mismatched types string and int) (1:8)"),
            "{}",
            e.msg
        );
        let e = parse_str("view x {\n expr invalid expression\n}")
            .err()
            .unwrap();
        assert_eq!(e.pos.line, 3);
        let e = parse_str("view x {\n expr \"name() == foo\"\n}")
            .err()
            .unwrap();
        assert!(e.msg.contains("unknown name foo"), "{}", e.msg);
        assert_eq!((e.pos.line, e.pos.col), (3, 18), "{e}");
    }
}
