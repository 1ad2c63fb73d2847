//! The `tls` plugin: the certificate and key a block's `tls://` (DNS over TLS, RFC 7858)
//! listeners present, optional client certificate checks and a TLS key log; the ACME block form
//! (`tls { acme ... }`) is parsed and checked as CoreDNS checks it, then refused as unsupported.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sextant_corefile::{Directive, Error, Token};

use crate::log::PluginLog;
use crate::pkg::tls::{self, ClientAuth};
use crate::plugin::SetupCtx;

const LOG: PluginLog = PluginLog("tls");

/// Every `tls` line of the block is checked and set up; like CoreDNS, the last one is used.
pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let mut last = None;
    for d in lines {
        last = Some(server(ctx, d)?);
    }
    if let Some(cfg) = last {
        ctx.set_tls(cfg);
    }
    Ok(())
}

/// One `tls` line: its server configuration.
fn server(ctx: &SetupCtx<'_>, d: &Directive) -> Result<Arc<rustls::ServerConfig>, Error> {
    if d.args.is_empty() {
        return Err(acme(d));
    }
    d.arg_count(2, 3)?;
    let mut auth = ClientAuth::NoCert;
    let mut keylog = None;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "client_auth" => {
                sub.arg_count(1, 1)?;
                let t = &sub.args[0];
                auth = ClientAuth::parse(&t.text).ok_or_else(|| {
                    sub.err_at(t, format!("unknown authentication type '{}'", t.text))
                })?;
            }
            "keylog" => {
                sub.arg_count(1, 1)?;
                keylog = Some(sub);
            }
            other => return Err(sub.err(format!("unknown option '{other}'"))),
        }
    }
    // Relative file names are under the block's `root` (CoreDNS joins them the same way).
    let args: Vec<Token> = d
        .args
        .iter()
        .map(|t| Token {
            text: ctx.file_path(&t.text).display().to_string(),
            ..t.clone()
        })
        .collect();
    let mut cfg = tls::server_config(d, &args, auth)?;
    if let Some(sub) = keylog {
        let t = &sub.args[0];
        let path = std::path::absolute(Path::new(&t.text)).map_err(|e| {
            sub.err_at(
                t,
                format!("unable to write TLS Key Log to {:?}: {e}", t.text),
            )
        })?;
        let file = open_keylog(&path).map_err(|e| {
            sub.err_at(
                t,
                format!("unable to write TLS Key Log to {:?}: {e}", path.display()),
            )
        })?;
        LOG.warning(&format!("Writing TLS Key Log to {:?}", path.display()));
        let mut c = (*cfg).clone();
        c.key_log = Arc::new(KeyLogFile(Mutex::new(file)));
        cfg = Arc::new(c);
    }
    Ok(cfg)
}

/// Opens (creating, mode 0600) a key log file for appending, as CoreDNS does.
fn open_keylog(path: &Path) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// TLS secrets in the NSS key log format (`LABEL CLIENT_RANDOM SECRET`, hex), one line each,
/// for tools such as Wireshark to decrypt captured sessions.
struct KeyLogFile(Mutex<File>);

impl std::fmt::Debug for KeyLogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyLogFile")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = format!("{label} {} {}\n", hex(client_random), hex(secret));
        if let Ok(mut f) = self.0.lock() {
            // A failed write loses one line of a debugging aid; the connection goes on.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// The ACME block form: every property checked as CoreDNS checks it, then refused, since
/// obtaining certificates needs an ACME server Sextant does not talk to. Returns the error.
fn acme(d: &Directive) -> Error {
    match acme_checked(d) {
        Ok(e) | Err(e) => e,
    }
}

/// The ACME checks: `Err` for a wrong property, `Ok` with the "not supported" error otherwise.
fn acme_checked(d: &Directive) -> Result<Error, Error> {
    let mut seen: Vec<&str> = Vec::new();
    let mut domains = None;
    let mut ca = None;
    let mut resolver = None;
    for sub in d.sub() {
        let name = sub.name.text.as_str();
        if seen.contains(&name) {
            return Err(sub.err(format!("ACME option {name:?} can only be specified once")));
        }
        seen.push(name);
        match name {
            "acme" => {
                sub.arg_count(1, usize::MAX)?;
                domains = Some(sub);
            }
            "email" | "storage" | "ca_root" => {
                sub.arg_count(1, 1)?;
            }
            "ca" => {
                sub.arg_count(1, 1)?;
                ca = Some(sub);
            }
            "resolver" => {
                sub.arg_count(1, 1)?;
                resolver = Some(sub);
            }
            other => return Err(sub.err(format!("unknown ACME option {other:?}"))),
        }
    }
    let Some(acme_line) = domains else {
        return Err(d.err("ACME requires at least one domain"));
    };
    for t in &acme_line.args {
        let lower = t.text.trim_end_matches('.').to_ascii_lowercase();
        let check = lower.strip_prefix("*.").unwrap_or(&lower);
        let valid = !check.is_empty()
            && !check.contains('*')
            && check.parse::<std::net::IpAddr>().is_err()
            && sextant_wire::Name::parse(check).is_ok();
        if !valid {
            return Err(acme_line.err_at(t, format!("invalid ACME domain {lower:?}")));
        }
    }
    if let Some(sub) = ca {
        let t = &sub.args[0];
        let ok = ["https://", "http://"].iter().any(|s| {
            t.text
                .strip_prefix(s)
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        });
        if !ok {
            return Err(sub.err_at(t, format!("invalid ACME CA URL {:?}", t.text)));
        }
    }
    if let Some(sub) = resolver {
        let t = &sub.args[0];
        match t.text.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.is_empty() => {}
            Some(("", _)) => {
                return Err(sub.err_at(
                    t,
                    format!("invalid ACME resolver {:?}: host is empty", t.text),
                ))
            }
            _ => {
                return Err(sub.err_at(
                    t,
                    format!(
                        "invalid ACME resolver {:?}: missing port in address",
                        t.text
                    ),
                ))
            }
        }
    }
    Ok(acme_line.err(
        "ACME certificate management is not supported by Sextant (it needs an ACME server); \
         obtain the certificate outside (e.g. cert-manager) and use `tls CERT KEY [CA]`",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::testing::directive;

    fn acme_err(body: &str) -> String {
        acme(&directive(&format!(
            "tls://.:853 {{\n tls {{\n{body} }}\n}}\n"
        )))
        .to_string()
    }

    #[test]
    fn acme_block_is_checked_then_refused() {
        let e = acme_err("  acme dns.example.org *.example.org\n  email a@example.org\n  ca https://acme.example/dir\n  storage /tmp/x\n  ca_root /tmp/ca.pem\n  resolver 127.0.0.1:53\n");
        assert!(
            e.starts_with("Corefile:3:3: acme: ACME certificate management is not supported"),
            "{e}"
        );
        let cases: &[(&str, &str)] = &[
            ("  email a@b\n", "Corefile:2:2: tls: ACME requires at least one domain"),
            ("  acme\n", "Corefile:3:3: acme: wrong argument count: expected at least 1, got 0"),
            ("  acme 192.0.2.1\n", "Corefile:3:8: acme: invalid ACME domain \"192.0.2.1\""),
            ("  acme a.*.example\n", "Corefile:3:8: acme: invalid ACME domain \"a.*.example\""),
            ("  acme a.example\n  acme b.example\n", "Corefile:4:3: acme: ACME option \"acme\" can only be specified once"),
            ("  acme a.example\n  ca ftp://x\n", "Corefile:4:6: ca: invalid ACME CA URL \"ftp://x\""),
            ("  acme a.example\n  resolver 127.0.0.1\n", "Corefile:4:12: resolver: invalid ACME resolver \"127.0.0.1\": missing port in address"),
            ("  acme a.example\n  email\n", "Corefile:4:3: email: wrong argument count: expected 1, got 0"),
            ("  acme a.example\n  bogus x\n", "Corefile:4:3: bogus: unknown ACME option \"bogus\""),
        ];
        for (body, want) in cases {
            assert_eq!(&acme_err(body), want, "for {body:?}");
        }
    }
}
