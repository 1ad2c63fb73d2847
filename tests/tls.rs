//! DNS over TLS end to end: a `tls://` block with the `tls` plugin, queried with a rustls client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sextant_testkit::*;

const T: Duration = Duration::from_secs(5);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sextant"))
}

fn cert() -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let der = c.cert.der().clone();
    (c.cert.pem(), c.signing_key.serialize_pem(), der)
}

fn exchange(
    port: u16,
    der: &rustls::pki_types::CertificateDer<'static>,
    queries: &[Query],
) -> Vec<Reply> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), T).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    for q in queries {
        let b = q.to_bytes();
        let mut framed = (b.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&b);
        tls.write_all(&framed).unwrap();
    }
    let mut out = Vec::new();
    for _ in queries {
        let mut len = [0u8; 2];
        tls.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        tls.read_exact(&mut body).unwrap();
        out.push(Reply::parse(body).unwrap());
    }
    out
}

#[test]
fn dns_over_tls_answers_pipelined_queries() {
    let (port, mport) = (free_port(), free_port());
    let (cpem, kpem, der) = cert();
    let cf = format!(
        "tls://.:{port} {{\n    tls cert.pem key.pem\n    prometheus 127.0.0.1:{mport}\n    whoami\n}}\n"
    );
    let s = Sextant::builder(bin(), &cf)
        .file("cert.pem", cpem)
        .file("key.pem", kpem)
        .start();
    s.wait_for_line(&format!("tls://.:{port}"), T).unwrap();
    let qs: Vec<Query> = (0..5)
        .map(|i| Query::new(&format!("t{i}.example."), RecordType::A).id(100 + i))
        .collect();
    let mut replies = exchange(port, &der, &qs);
    // Pipelined queries may be answered in any order (RFC 7766 §7).
    replies.sort_by_key(|r| r.id());
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.rcode_name(), "NOERROR");
        assert_eq!(r.id(), 100 + i as u16);
        assert_eq!(r.additional()[0], format!("t{i}.example. 0 IN A 127.0.0.1"));
        assert!(r.additional()[1].starts_with(&format!("_tcp.t{i}.example. 0 IN SRV")));
    }
    let (_, body) = http_get(SocketAddr::from(([127, 0, 0, 1], mport)), "/metrics", T).unwrap();
    assert!(
        body.contains(&format!("server=\"tls://:{port}\"")),
        "{body}"
    );
    // Plain TCP on the TLS port gets no DNS answer.
    let r = tcp_raw(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &Query::new("x.", RecordType::A),
        Duration::from_millis(500),
    );
    assert!(!matches!(r, Ok(Some(_))));
}

#[test]
fn tls_key_without_tls_plugin_or_with_bad_files_is_an_error() {
    let (code, out, err) = Sextant::check(bin(), "tls://.:8853 {\n    whoami\n}\n").unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("needs the tls plugin"),
        "{out}{err}"
    );
    let (code, out, err) = Sextant::check(
        bin(),
        "tls://.:8853 {\n    tls /nonexistent/c.pem /nonexistent/k.pem\n    whoami\n}\n",
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(":2:9: tls: cannot read certificate"),
        "{out}{err}"
    );
}

/// `keylog FILE` writes the session secrets in NSS key-log format (with a warning at start);
/// the ACME block form is checked, then refused with a clear error naming its position.
#[test]
fn keylog_and_the_acme_block_form() {
    let port = free_port();
    let (cpem, kpem, der) = cert();
    let cf = format!(
        "tls://.:{port} {{\n    tls cert.pem key.pem {{\n        keylog keys.log\n    }}\n    whoami\n}}\n"
    );
    let s = Sextant::builder(bin(), &cf)
        .file("cert.pem", cpem)
        .file("key.pem", kpem)
        .start();
    s.wait_for_line(&format!("tls://.:{port}"), T).unwrap();
    s.wait_for_line("[WARNING] plugin/tls: Writing TLS Key Log to", T)
        .unwrap();
    let r = exchange(port, &der, &[Query::new("k.example.", RecordType::A)]);
    assert_eq!(r[0].rcode_name(), "NOERROR");
    let log = std::fs::read_to_string(s.dir().join("keys.log")).unwrap();
    let labels: Vec<&str> = log.lines().filter_map(|l| l.split(' ').next()).collect();
    // TLS 1.3: the handshake and traffic secrets, each with the 32-byte client random in hex.
    for want in [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    ] {
        assert!(labels.contains(&want), "{want} in {log}");
    }
    assert!(log
        .lines()
        .all(|l| l.split(' ').nth(1).is_some_and(|r| r.len() == 64)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.dir().join("keys.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let (code, out, err) = Sextant::check(
        bin(),
        "tls://.:8853 {\n    tls {\n        acme dns.example.org\n        email hostmaster@example.org\n    }\n    whoami\n}\n",
    )
    .unwrap();
    let all = format!("{out}{err}");
    assert_ne!(code, 0);
    assert!(
        all.contains(":3:9: acme: ACME certificate management is not supported"),
        "{all}"
    );
    let (code, out, err) = Sextant::check(
        bin(),
        "tls://.:8853 {\n    tls {\n        acme dns.example.org\n        ca ftp://x\n    }\n    whoami\n}\n",
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(":4:12: ca: invalid ACME CA URL \"ftp://x\""),
        "{out}{err}"
    );
}

/// Several `tls` lines in one block are all checked and the last one is used, as in CoreDNS.
#[test]
fn the_last_of_several_tls_lines_is_used() {
    let port = free_port();
    let (cpem, kpem, der) = cert();
    let (other_c, other_k, _) = cert();
    let cf = format!(
        "tls://.:{port} {{\n    tls other.pem otherkey.pem\n    tls cert.pem key.pem\n    whoami\n}}\n"
    );
    let s = Sextant::builder(bin(), &cf)
        .file("cert.pem", cpem)
        .file("key.pem", kpem)
        .file("other.pem", other_c)
        .file("otherkey.pem", other_k)
        .start();
    s.wait_for_line(&format!("tls://.:{port}"), T).unwrap();
    // The client trusts only the second line's certificate.
    let r = exchange(port, &der, &[Query::new("last.example.", RecordType::A)]);
    assert_eq!(r[0].rcode_name(), "NOERROR");
    // A wrong earlier line is still an error.
    let (code, out, err) = Sextant::check(
        bin(),
        "tls://.:8853 {\n    tls /nonexistent/c.pem /nonexistent/k.pem\n    tls {\n        acme a.example\n    }\n    whoami\n}\n",
    )
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains(":2:9: tls: cannot read certificate"),
        "{out}{err}"
    );
}

/// A DoT handshake and one `whoami` query with an optional client certificate (chain PEM, key
/// PEM); Err when the server refuses the handshake or closes before answering.
fn try_exchange(
    port: u16,
    server: &rustls::pki_types::CertificateDer<'static>,
    client: Option<(&str, &str)>,
) -> Result<Reply, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.clone()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match client {
        None => b.with_no_client_auth(),
        Some((c, k)) => b
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_slice_iter(c.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), T).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let b = Query::new("who.example.", RecordType::A).id(7).to_bytes();
    let mut framed = (b.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&b);
    tls.write_all(&framed).map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    tls.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    tls.read_exact(&mut body).map_err(|e| e.to_string())?;
    Reply::parse(body).map_err(|e| e.to_string())
}

/// `client_auth` over the wire, each mode with three clients: none, a certificate signed by
/// the block's CA, a self-signed one. `request` and `require` verify a certificate that is sent,
/// as `verify_if_given` and `require_and_verify` do (the README's difference from CoreDNS).
#[test]
fn client_auth_modes_over_dot() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let (spem, skey, sder) = cert();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let signed = CertificateParams::new(vec!["client".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (signed_pem, signed_key) = (signed.pem(), key.serialize_pem());
    let other = rcgen::generate_simple_self_signed(vec!["client".to_string()]).unwrap();
    let (other_pem, other_key) = (other.cert.pem(), other.signing_key.serialize_pem());
    // (mode, answers without a certificate, with the CA's, with a self-signed one)
    for (mode, none, good, bad) in [
        ("nocert", true, true, true),
        ("request", true, true, false),
        ("verify_if_given", true, true, false),
        ("require", false, true, false),
        ("require_and_verify", false, true, false),
    ] {
        let port = free_port();
        let cf = format!(
            "tls://.:{port} {{\n    tls cert.pem key.pem ca.pem {{\n        client_auth {mode}\n    }}\n    whoami\n}}\n"
        );
        let s = Sextant::builder(bin(), &cf)
            .file("cert.pem", spem.clone())
            .file("key.pem", skey.clone())
            .file("ca.pem", ca.pem())
            .start();
        s.wait_for_line(&format!("tls://.:{port}"), T).unwrap();
        for (who, client, want) in [
            ("no certificate", None, none),
            (
                "a certificate of the CA",
                Some((signed_pem.as_str(), signed_key.as_str())),
                good,
            ),
            (
                "a self-signed certificate",
                Some((other_pem.as_str(), other_key.as_str())),
                bad,
            ),
        ] {
            let got = try_exchange(port, &sder, client);
            match (&got, want) {
                (Ok(r), true) => {
                    assert_eq!(r.rcode_name(), "NOERROR", "{mode}, {who}");
                    assert_eq!(r.id(), 7, "{mode}, {who}");
                    // whoami: the client's address and TCP port (RFC 7858 runs over TCP).
                    assert!(
                        r.additional().iter().any(|a| a.contains("127.0.0.1"))
                            && r.additional().iter().any(|a| a.contains("_tcp")),
                        "{mode}, {who}: {:?}",
                        r.additional()
                    );
                }
                (Err(_), false) => {}
                _ => panic!("client_auth {mode}, {who}: got {got:?}, expected an answer: {want}"),
            }
        }
    }
}
