//! The `tls` plugin: the certificate and key a block's `tls://` (DNS over TLS, RFC 7858)
//! listeners present, and optional client certificate checks.

use sextant_corefile::{Directive, Error};

use crate::pkg::tls::{self, ClientAuth};
use crate::plugin::SetupCtx;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(2, 3)?;
    let mut auth = ClientAuth::NoCert;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "client_auth" => {
                sub.arg_count(1, 1)?;
                let t = &sub.args[0];
                auth = ClientAuth::parse(&t.text).ok_or_else(|| {
                    sub.err_at(t, format!("unknown authentication type '{}'", t.text))
                })?;
            }
            other => return Err(sub.err(format!("unknown option '{other}'"))),
        }
    }
    let cfg = tls::server_config(d, &d.args, auth)?;
    ctx.set_tls(cfg);
    Ok(())
}
