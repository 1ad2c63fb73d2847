//! The `tls` plugin: the certificate and key a block's `tls://` (DNS over TLS, RFC 7858)
//! listeners present, and optional client certificate checks.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sextant_corefile::{Directive, Error, Token};

use crate::plugin::SetupCtx;

fn read_certs(
    d: &Directive,
    t: &Token,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let f = std::fs::File::open(path)
        .map_err(|e| d.err_at(t, format!("cannot read certificate {:?}: {e}", t.text)))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut BufReader::new(f)).collect();
    let certs = certs.map_err(|e| d.err_at(t, format!("bad certificate {:?}: {e}", t.text)))?;
    if certs.is_empty() {
        return Err(d.err_at(t, format!("no certificate in {:?}", t.text)));
    }
    Ok(certs)
}

fn read_key(d: &Directive, t: &Token, path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let f = std::fs::File::open(path)
        .map_err(|e| d.err_at(t, format!("cannot read key {:?}: {e}", t.text)))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| d.err_at(t, format!("bad key {:?}: {e}", t.text)))?
        .ok_or_else(|| d.err_at(t, format!("no private key in {:?}", t.text)))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClientAuth {
    NoCert,
    Request,
    Require,
    VerifyIfGiven,
    RequireAndVerify,
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(2, 3)?;
    // Relative names are under the block's `root`.
    let certs = read_certs(d, &d.args[0], &ctx.file_path(&d.args[0].text))?;
    let key = read_key(d, &d.args[1], &ctx.file_path(&d.args[1].text))?;
    let ca = match d.args.get(2) {
        Some(t) => Some(read_certs(d, t, &ctx.file_path(&t.text))?),
        None => None,
    };
    let mut auth = ClientAuth::NoCert;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "client_auth" => {
                sub.arg_count(1, 1)?;
                auth = match sub.args[0].text.as_str() {
                    "nocert" => ClientAuth::NoCert,
                    "request" => ClientAuth::Request,
                    "require" => ClientAuth::Require,
                    "verify_if_given" => ClientAuth::VerifyIfGiven,
                    "require_and_verify" => ClientAuth::RequireAndVerify,
                    other => {
                        return Err(sub.err_at(
                            &sub.args[0],
                            format!("unknown authentication type '{other}'"),
                        ))
                    }
                };
            }
            other => return Err(sub.err(format!("unknown option '{other}'"))),
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| d.err(format!("TLS setup: {e}")))?;
    let builder = match (auth, &ca) {
        (ClientAuth::NoCert, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(d.err("client_auth other than nocert needs a CA certificate argument"))
        }
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in ca {
                roots
                    .add(c.clone())
                    .map_err(|e| d.err(format!("bad CA certificate: {e}")))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
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
        .with_single_cert(certs, key)
        .map_err(|e| d.err(format!("certificate and key do not match: {e}")))?;
    ctx.set_tls(Arc::new(cfg));
    Ok(())
}
