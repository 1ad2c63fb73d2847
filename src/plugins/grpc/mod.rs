//! The `grpc` plugin: relays queries for FROM (minus `except`) to up to 15 upstreams speaking
//! CoreDNS's `coredns.dns.DnsService/Query` over HTTP/2 (tonic), plain or TLS, with CoreDNS's
//! selection loop (policy, next upstream on error, 5 s deadline, FORMERR for a reply that does
//! not match, `fallthrough` on NXDOMAIN). Channels are made at first use and their tasks run
//! under the generation's spawner.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sextant_corefile::{Directive, Error, Token};
use sextant_wire::{Message, Name, Rcode};
use tokio_util::either::Either;

use crate::metrics::metrics;
use crate::pkg::addr::host_port;
use crate::pkg::addr::resolv_conf;
use crate::pkg::fallthrough::Fall;
use crate::plugin::{BoxFuture, Handler, Next, Outcome, Request, SetupCtx};
use crate::plugins::forward::setup::Policy;
use crate::server::grpc::{Codec, DnsPacket, MAX_GRPC_MESSAGE, QUERY_PATH};
use crate::server::lifecycle::Spawner;
use crate::server::transport::MAX_MESSAGE;

metrics! {
    REQUESTS: CounterVec("coredns_grpc_requests_total", "Counter of requests made per upstream.", ["to"]);
    RESPONSES: CounterVec("coredns_grpc_responses_total", "Counter of requests made per upstream.", ["rcode", "to"]);
    DURATION: HistogramVec("coredns_grpc_request_duration_seconds", "Histogram of the time each request took.", ["to"], crate::metrics::exp_buckets(0.00025, 2.0, 16));
}

/// Most upstreams one `grpc` line may name.
const MAX_UPSTREAMS: usize = 15;
/// Time one query may spend on upstreams (CoreDNS `defaultTimeout`).
const DEADLINE: Duration = Duration::from_secs(5);

/// Where an upstream is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Tcp(SocketAddr),
    Unix(String),
}

/// One upstream: its address, label and channel (made at first use).
struct Upstream {
    target: Target,
    /// The `to` label of the metrics (`127.0.0.1:9005`, `unix:///path`).
    label: String,
    channel: OnceLock<tonic::transport::Channel>,
}

/// Everything one `grpc` line says.
struct Config {
    from: Name,
    except: Vec<Name>,
    upstreams: Vec<(Target, String)>,
    tls: Option<Vec<Token>>,
    tls_servername: Option<String>,
    policy: Policy,
    fall: Fall,
}

pub(crate) struct Grpc {
    from: Name,
    except: Vec<Name>,
    upstreams: Vec<Upstream>,
    tls: Option<(Arc<rustls::ClientConfig>, Option<ServerName<'static>>)>,
    policy: Policy,
    robin: AtomicU32,
    fall: Fall,
    spawner: Spawner,
}

fn zone(d: &Directive, t: &Token) -> Result<Name, Error> {
    crate::pkg::zones::first(d, t)
}

/// `HOST[:PORT]` (port 53 by default), `unix://PATH`, or a resolv.conf-style file, like
/// CoreDNS's `parse.HostPortOrFile`.
fn parse_to(d: &Directive, t: &Token, out: &mut Vec<(Target, String)>) -> Result<(), Error> {
    if let Some(path) = t.text.strip_prefix("unix://") {
        out.push((Target::Unix(path.to_string()), t.text.clone()));
        return Ok(());
    }
    if let Some(sa) = host_port(&t.text, 53) {
        out.push((Target::Tcp(sa), sa.to_string()));
        return Ok(());
    }
    match std::fs::read_to_string(&t.text) {
        Ok(text) => {
            let servers = resolv_conf(&text);
            if servers.is_empty() {
                return Err(d.err_at(t, format!("no nameservers found in {}", t.text)));
            }
            out.extend(
                servers
                    .into_iter()
                    .map(|sa| (Target::Tcp(sa), sa.to_string())),
            );
            Ok(())
        }
        Err(_) => Err(d.err_at(t, format!("not an IP address or file: \"{}\"", t.text))),
    }
}

fn parse(d: &Directive) -> Result<Config, Error> {
    d.arg_count(2, usize::MAX)?;
    let from = zone(d, &d.args[0])?;
    let mut upstreams = Vec::new();
    for t in &d.args[1..] {
        parse_to(d, t, &mut upstreams)?;
    }
    let mut c = Config {
        from,
        except: Vec::new(),
        upstreams,
        tls: None,
        tls_servername: None,
        policy: Policy::Random,
        fall: Fall::default(),
    };
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "except" => {
                sub.arg_count(1, usize::MAX)?;
                for t in &sub.args {
                    c.except.push(zone(sub, t)?);
                }
            }
            "tls" => {
                sub.arg_count(0, 3)?;
                c.tls = Some(sub.args.clone());
            }
            "tls_servername" => {
                sub.arg_count(1, 1)?;
                c.tls_servername = Some(sub.args[0].text.clone());
            }
            "policy" => {
                sub.arg_count(1, 1)?;
                let t = &sub.args[0];
                c.policy = Policy::parse(sub, t)?;
            }
            "fallthrough" => c.fall = Fall::parse(sub)?,
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    if c.upstreams.len() > MAX_UPSTREAMS {
        return Err(d.err(format!(
            "more than {MAX_UPSTREAMS} TOs configured: {}",
            c.upstreams.len()
        )));
    }
    Ok(c)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    let c = parse(d)?;
    // `tls_servername` alone turns TLS on with the system roots, as in CoreDNS.
    let tls_args = match (&c.tls, &c.tls_servername) {
        (Some(a), _) => Some(a.clone()),
        (None, Some(_)) => Some(Vec::new()),
        (None, None) => None,
    };
    let tls = match tls_args {
        None => None,
        Some(args) => {
            let cfg = crate::pkg::tls::client_config(d, &args)?;
            let mut cfg = (*cfg).clone();
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            let name = match &c.tls_servername {
                Some(n) => Some(
                    ServerName::try_from(n.clone())
                        .map_err(|e| d.err(format!("invalid tls_servername {n:?}: {e}")))?,
                ),
                None => None,
            };
            Some((Arc::new(cfg), name))
        }
    };
    let g = Grpc {
        from: c.from,
        except: c.except,
        upstreams: c
            .upstreams
            .into_iter()
            .map(|(target, label)| Upstream {
                target,
                label,
                channel: OnceLock::new(),
            })
            .collect(),
        tls,
        policy: c.policy,
        robin: AtomicU32::new(0),
        fall: c.fall,
        spawner: ctx.spawner(),
    };
    ctx.add_handler(Arc::new(g));
    Ok(())
}

type Io = Either<
    Either<tokio::net::TcpStream, tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio::net::UnixStream,
>;

/// Opens the byte stream of a channel: TCP, TLS over TCP (ALPN h2), or a Unix socket.
#[derive(Clone)]
struct Connector {
    target: Target,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Io>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let c = self.clone();
        Box::pin(async move {
            let io: Io = match (&c.target, c.tls) {
                (Target::Unix(path), _) => {
                    Either::Right(tokio::net::UnixStream::connect(path).await?)
                }
                (Target::Tcp(sa), None) => {
                    let s = tokio::net::TcpStream::connect(sa).await?;
                    let _ = s.set_nodelay(true);
                    Either::Left(Either::Left(s))
                }
                (Target::Tcp(sa), Some((cfg, name))) => {
                    let s = tokio::net::TcpStream::connect(sa).await?;
                    let _ = s.set_nodelay(true);
                    let t = tokio_rustls::TlsConnector::from(cfg)
                        .connect(name, s)
                        .await?;
                    Either::Left(Either::Right(t))
                }
            };
            Ok(TokioIo::new(io))
        })
    }
}

impl Grpc {
    fn matches(&self, qname: &Name) -> bool {
        if !qname.is_subdomain_of(&self.from) {
            return false;
        }
        *qname == self.from || !self.except.iter().any(|e| qname.is_subdomain_of(e))
    }

    fn fall_through(&self, qname: &Name) -> bool {
        self.fall.through(qname)
    }

    /// The order upstreams are tried in for one query (`forward`'s policies).
    fn list(&self) -> Vec<usize> {
        self.policy.order(self.upstreams.len(), &self.robin)
    }

    fn channel(&self, u: &Upstream) -> tonic::transport::Channel {
        u.channel
            .get_or_init(|| {
                let tls = self.tls.as_ref().map(|(cfg, name)| {
                    let name = name.clone().unwrap_or_else(|| match &u.target {
                        Target::Tcp(sa) => ServerName::IpAddress(sa.ip().into()),
                        Target::Unix(_) => ServerName::try_from("localhost").unwrap_or(
                            ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into()),
                        ),
                    });
                    (cfg.clone(), name)
                });
                let connector = Connector {
                    target: u.target.clone(),
                    tls,
                };
                tonic::transport::Endpoint::from_static("http://upstream")
                    .executor(self.spawner.clone())
                    .connect_timeout(DEADLINE)
                    .connect_with_connector_lazy(connector)
            })
            .clone()
    }

    /// One exchange with one upstream (CoreDNS `Proxy.query`).
    async fn query(&self, u: &Upstream, wire: &[u8], deadline: Instant) -> Result<Message, String> {
        let start = Instant::now();
        let mut client = tonic::client::Grpc::new(self.channel(u))
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let left = deadline.saturating_duration_since(Instant::now());
        let call = async {
            client.ready().await.map_err(|e| e.to_string())?;
            let mut req = tonic::Request::new(DnsPacket { msg: wire.to_vec() });
            req.set_timeout(left);
            let path = http::uri::PathAndQuery::from_static(QUERY_PATH);
            client
                .unary::<DnsPacket, DnsPacket, Codec>(req, path, Codec::default())
                .await
                .map_err(|s| {
                    if s.code() == tonic::Code::NotFound {
                        String::from("NotFound")
                    } else {
                        format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
                    }
                })
        };
        let reply = match tokio::time::timeout(left, call).await {
            Err(_) => return Err("context deadline exceeded".into()),
            Ok(Err(e)) if e == "NotFound" => {
                let q = Message::parse(wire).map_err(|e| e.to_string())?;
                let mut m = Message::reply_to(&q);
                m.set_rcode(Rcode::NXDOMAIN);
                return Ok(m);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(r)) => r.into_inner().msg,
        };
        if reply.len() > MAX_MESSAGE {
            return Err(format!(
                "dns message exceeds size limit: {} bytes (limit {MAX_MESSAGE})",
                reply.len()
            ));
        }
        let m = Message::parse(&reply).map_err(|e| e.to_string())?;
        REQUESTS.with_label_values(&[&u.label]).inc();
        RESPONSES
            .with_label_values(&[&m.rcode().to_string(), &u.label])
            .inc();
        DURATION
            .with_label_values(&[&u.label])
            .observe(start.elapsed().as_secs_f64());
        Ok(m)
    }
}

impl Handler for Grpc {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let qname = req.qname();
            if !self.matches(&qname) {
                return next.run(req).await;
            }
            let wire = req.msg.to_wire();
            let deadline = Instant::now() + DEADLINE;
            let mut err = None;
            for i in self.list() {
                if Instant::now() >= deadline {
                    break;
                }
                let m = match self.query(&self.upstreams[i], &wire, deadline).await {
                    Ok(m) => m,
                    Err(e) => {
                        err = Some(e);
                        continue;
                    }
                };
                let matches = m.header.id == req.msg.header.id
                    && match (m.questions.first(), req.msg.questions.first()) {
                        (Some(a), Some(b)) => a.name == b.name && a.qtype == b.qtype,
                        _ => false,
                    };
                if !matches {
                    let mut f = Message::reply_to(&req.msg);
                    f.set_rcode(Rcode::FORMERR);
                    return Outcome::reply("grpc", f);
                }
                if m.rcode() == Rcode::NXDOMAIN && self.fall_through(&qname) {
                    return next.run(req).await;
                }
                return Outcome::reply("grpc", m);
            }
            if self.fall_through(&qname) {
                return next.run(req).await;
            }
            let why = err.unwrap_or_else(|| "no healthy gRPC proxies".into());
            Outcome::error("grpc", Rcode::SERVFAIL, why)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(text: &str) -> Directive {
        let cf = sextant_corefile::parse_str("Corefile", text, std::path::Path::new(".")).unwrap();
        cf.blocks[0].directives[0].clone()
    }

    fn err(text: &str) -> String {
        parse(&directive(text)).err().unwrap().to_string()
    }

    #[test]
    fn every_option() {
        let c = parse(&directive(
            ". {\n grpc Example.ORG 127.0.0.1:9005 [::1] unix:///run/g.sock {\n  except a.example.org\n  tls\n  tls_servername dns.example\n  policy round_robin\n  fallthrough in-addr.arpa\n }\n}\n",
        ))
        .unwrap();
        assert_eq!(c.from, Name::parse("example.org.").unwrap());
        assert_eq!(
            c.upstreams.iter().map(|u| u.1.as_str()).collect::<Vec<_>>(),
            ["127.0.0.1:9005", "[::1]:53", "unix:///run/g.sock"]
        );
        assert_eq!(c.except, [Name::parse("a.example.org.").unwrap()]);
        assert_eq!(c.tls.as_ref().map(Vec::len), Some(0));
        assert_eq!(c.tls_servername.as_deref(), Some("dns.example"));
        assert_eq!(c.policy, Policy::RoundRobin);
        assert_eq!(c.fall.zones(), [Name::parse("in-addr.arpa.").unwrap()]);
    }

    #[test]
    fn errors_name_position_and_directive() {
        for (text, want) in [
            (
                ". {\n grpc .\n}\n",
                "Corefile:2:2: grpc: wrong argument count",
            ),
            (
                ". {\n grpc . nowhere\n}\n",
                "Corefile:2:9: grpc: not an IP address or file: \"nowhere\"",
            ),
            (
                ". {\n grpc . 127.0.0.1 {\n  policy first\n }\n}\n",
                "Corefile:3:10: policy: unknown policy 'first'",
            ),
            (
                ". {\n grpc . 127.0.0.1 {\n  bogus\n }\n}\n",
                "Corefile:3:3: bogus: unknown property 'bogus'",
            ),
            (
                ". {\n grpc . 127.0.0.1 {\n  tls a b c d\n }\n}\n",
                "Corefile:3:13: tls: wrong argument count",
            ),
        ] {
            let got = err(text);
            assert!(got.starts_with(want), "{text}: {got}");
        }
        let many = (1..=16)
            .map(|i| format!("127.0.0.{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            err(&format!(". {{\n grpc . {many}\n}}\n")).contains("more than 15 TOs configured: 16")
        );
    }
}
