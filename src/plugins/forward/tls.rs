//! TLS client configuration for `tls://` upstreams (rustls with the ring provider): the `tls
//! [CERT KEY CA]` arguments turned into a `ClientConfig`. Reads files; no sockets.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("could not read certificate file {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("could not parse certificate file {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificates found in {path}"));
    }
    Ok(certs)
}

fn native_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    // Missing or unreadable system certificates are not fatal: an explicit CA may follow, and
    // verification then fails per connection with a clear error.
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    roots
}

/// Builds the client configuration for `tls` with 0 to 3 arguments, like CoreDNS's
/// `NewTLSConfigFromArgs`: none = system roots; CA; CERT KEY (client certificate, system
/// roots); CERT KEY CA.
pub(crate) fn client_config(args: &[String]) -> Result<Arc<ClientConfig>, String> {
    let (client, ca) = match args {
        [] => (None, None),
        [ca] => (None, Some(ca)),
        [cert, key] => (Some((cert, key)), None),
        [cert, key, ca] => (Some((cert, key)), Some(ca)),
        _ => return Err("too many arguments to tls".into()),
    };
    let roots = match ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("invalid CA certificate in {ca}: {e}"))?;
            }
            roots
        }
        None => native_roots(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => {
            let certs = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("could not read key file {key}: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("invalid client certificate/key: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}
