//! TLS configuration from PEM files (CoreDNS `plugin/pkg/tls`), with rustls and its ring
//! provider; PEM is read with `rustls-pki-types`' `PemObject`, the one PEM reader. The file
//! arguments take CoreDNS's `NewTLSConfigFromArgs` forms: none (system roots), `CA`,
//! `CERT KEY`, `CERT KEY CA`. Errors name the file's token. Reads files; no sockets.

use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sextant_corefile::{Directive, Error, Token};

/// Which client certificates a TLS server asks for (the `tls` plugin's `client_auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    #[default]
    NoCert,
    Request,
    Require,
    VerifyIfGiven,
    RequireAndVerify,
}

impl ClientAuth {
    /// `nocert`, `request`, `require`, `verify_if_given`, `require_and_verify`.
    pub(crate) fn parse(s: &str) -> Option<ClientAuth> {
        Some(match s {
            "nocert" => ClientAuth::NoCert,
            "request" => ClientAuth::Request,
            "require" => ClientAuth::Require,
            "verify_if_given" => ClientAuth::VerifyIfGiven,
            "require_and_verify" => ClientAuth::RequireAndVerify,
            _ => return None,
        })
    }
}

/// The certificate/key pair and the CA of a list of file arguments.
struct Files<'a> {
    cert_key: Option<(&'a Token, &'a Token)>,
    ca: Option<&'a Token>,
}

fn files<'a>(d: &Directive, args: &'a [Token]) -> Result<Files<'a>, Error> {
    Ok(match args {
        [] => Files {
            cert_key: None,
            ca: None,
        },
        [ca] => Files {
            cert_key: None,
            ca: Some(ca),
        },
        [cert, key] => Files {
            cert_key: Some((cert, key)),
            ca: None,
        },
        [cert, key, ca] => Files {
            cert_key: Some((cert, key)),
            ca: Some(ca),
        },
        [_, _, _, extra, ..] => {
            return Err(d.err_at(
                extra,
                format!(
                    "maximum of three arguments allowed for TLS config, found {}",
                    args.len()
                ),
            ))
        }
    })
}

fn read(d: &Directive, t: &Token, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(&t.text).map_err(|e| d.err_at(t, format!("cannot read {what} {:?}: {e}", t.text)))
}

/// Every certificate in the PEM file `t`; at least one.
fn load_certs(d: &Directive, t: &Token) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(d, t, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| d.err_at(t, format!("bad certificate {:?}: {e}", t.text)))?;
    if certs.is_empty() {
        return Err(d.err_at(t, format!("no certificate in {:?}", t.text)));
    }
    Ok(certs)
}

/// The first private key (PKCS#1, PKCS#8 or SEC1) in the PEM file `t`.
fn load_key(d: &Directive, t: &Token) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read(d, t, "key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => d.err_at(t, format!("no private key in {:?}", t.text)),
        e => d.err_at(t, format!("bad key {:?}: {e}", t.text)),
    })
}

/// The CA file `t` as a root store.
fn load_roots(d: &Directive, t: &Token) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(d, t)? {
        roots
            .add(c)
            .map_err(|e| d.err_at(t, format!("bad CA certificate {:?}: {e}", t.text)))?;
    }
    Ok(roots)
}

/// The system's trusted roots. Missing or unreadable system certificates are not fatal: a
/// connection then fails verification with a clear error.
fn native_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    roots
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration from 0 to 3 file arguments: the CA (else the system roots) verifies
/// servers; CERT KEY is the client certificate.
pub(crate) fn client_config(d: &Directive, args: &[Token]) -> Result<Arc<ClientConfig>, Error> {
    let f = files(d, args)?;
    let roots = match f.ca {
        Some(ca) => load_roots(d, ca)?,
        None => native_roots(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| d.err(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let cfg = match f.cert_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(d, cert)?, load_key(d, key)?)
            .map_err(|e| d.err_at(key, format!("certificate and key do not match: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// A client configuration that accepts any server certificate (CoreDNS's
/// `InsecureSkipVerify`, the `skipverify` options); signatures are still checked so the
/// handshake itself is sound.
pub(crate) fn insecure_client_config() -> Result<Arc<ClientConfig>, String> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider())))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Accepts every server certificate; verifies handshake signatures with the provider.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server configuration from `CERT KEY [CA]`; client certificates are asked for as `auth`
/// says and verified against CA, which every mode but `nocert` needs.
pub(crate) fn server_config(
    d: &Directive,
    args: &[Token],
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>, Error> {
    let f = files(d, args)?;
    let Some((cert, key)) = f.cert_key else {
        return Err(d.err("a TLS server needs a certificate and a key"));
    };
    let (certs, key_der) = (load_certs(d, cert)?, load_key(d, key)?);
    let ca = f.ca.map(|t| load_roots(d, t)).transpose()?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| d.err(format!("TLS setup: {e}")))?;
    let builder = match (auth, ca) {
        (ClientAuth::NoCert, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(d.err("client_auth other than nocert needs a CA certificate argument"))
        }
        (mode, Some(roots)) => {
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = match mode {
                ClientAuth::Request | ClientAuth::VerifyIfGiven => v.allow_unauthenticated(),
                _ => v,
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| d.err(format!("client verifier: {e}")))?,
            )
        }
    };
    let cfg = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| d.err(format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::line;

    /// A directory with a self-signed certificate, its key, another key, and a file that is
    /// not PEM.
    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let other = rcgen::KeyPair::generate().unwrap();
            std::fs::write(dir.path().join("cert.pem"), c.cert.pem()).unwrap();
            std::fs::write(dir.path().join("key.pem"), c.signing_key.serialize_pem()).unwrap();
            std::fs::write(dir.path().join("other.pem"), other.serialize_pem()).unwrap();
            std::fs::write(dir.path().join("junk.pem"), "not pem\n").unwrap();
            Pki { dir }
        }

        /// A `tls` line with these files of the directory as arguments.
        fn directive(&self, files: &[&str]) -> Directive {
            let args: Vec<String> = files
                .iter()
                .map(|f| self.dir.path().join(f).display().to_string())
                .collect();
            line(&format!("tls {}", args.join(" ")))
        }

        fn path(&self, f: &str) -> String {
            self.dir.path().join(f).display().to_string()
        }
    }

    fn client(d: &Directive) -> Result<Arc<ClientConfig>, Error> {
        client_config(d, &d.args)
    }

    fn server(d: &Directive, auth: ClientAuth) -> Result<Arc<ServerConfig>, Error> {
        server_config(d, &d.args, auth)
    }

    #[test]
    fn client_forms() {
        let p = Pki::new();
        client(&p.directive(&[])).unwrap();
        client(&p.directive(&["cert.pem"])).unwrap();
        assert!(client(&p.directive(&["cert.pem", "key.pem"]))
            .unwrap()
            .client_auth_cert_resolver
            .has_certs());
        client(&p.directive(&["cert.pem", "key.pem", "cert.pem"])).unwrap();
        let e = client(&p.directive(&["cert.pem", "key.pem", "cert.pem", "x"])).unwrap_err();
        assert_eq!(
            e.msg,
            "maximum of three arguments allowed for TLS config, found 4"
        );
    }

    #[test]
    fn server_forms_and_client_auth() {
        let p = Pki::new();
        server(&p.directive(&["cert.pem", "key.pem"]), ClientAuth::NoCert).unwrap();
        for mode in [
            ClientAuth::Request,
            ClientAuth::Require,
            ClientAuth::VerifyIfGiven,
            ClientAuth::RequireAndVerify,
        ] {
            server(&p.directive(&["cert.pem", "key.pem", "cert.pem"]), mode).unwrap();
            let e = server(&p.directive(&["cert.pem", "key.pem"]), mode).unwrap_err();
            assert!(e.msg.contains("needs a CA certificate"), "{e}");
        }
        let e = server(&p.directive(&["cert.pem"]), ClientAuth::NoCert).unwrap_err();
        assert!(e.msg.contains("needs a certificate and a key"), "{e}");
        assert_eq!(
            ClientAuth::parse("verify_if_given"),
            Some(ClientAuth::VerifyIfGiven)
        );
        assert_eq!(ClientAuth::parse("nope"), None);
    }

    #[test]
    fn file_errors_name_the_file_token() {
        let p = Pki::new();
        let d = p.directive(&["missing.pem", "key.pem"]);
        let e = server(&d, ClientAuth::NoCert).unwrap_err();
        assert_eq!(e.pos.to_string(), "Corefile:2:6");
        assert_eq!(e.directive.as_deref(), Some("tls"));
        assert!(
            e.msg.starts_with(&format!(
                "cannot read certificate {:?}: ",
                p.path("missing.pem")
            )),
            "{e}"
        );
        let e = server(&p.directive(&["junk.pem", "key.pem"]), ClientAuth::NoCert).unwrap_err();
        assert_eq!(e.msg, format!("no certificate in {:?}", p.path("junk.pem")));
        let d = p.directive(&["cert.pem", "junk.pem"]);
        let e = server(&d, ClientAuth::NoCert).unwrap_err();
        assert_eq!(e.pos, d.args[1].pos);
        assert_eq!(e.msg, format!("no private key in {:?}", p.path("junk.pem")));
        let e = server(&p.directive(&["cert.pem", "other.pem"]), ClientAuth::NoCert).unwrap_err();
        assert!(e.msg.starts_with("certificate and key do not match"), "{e}");
        let e = client(&p.directive(&["junk.pem"])).unwrap_err();
        assert_eq!(e.msg, format!("no certificate in {:?}", p.path("junk.pem")));
    }
}
