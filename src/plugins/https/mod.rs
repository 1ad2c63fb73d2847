//! The `https` plugin: limits of a block's `https://` (DNS over HTTPS) listeners
//! (`max_connections`). The listener itself lives in `src/server/stream.rs`.

use sextant_corefile::{Directive, Error};

use crate::pkg::num::limit;
use crate::plugin::SetupCtx;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(0, 0)?;
    let mut conns = None;
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "max_connections" => limit(sub, &mut conns, false)?,
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    ctx.transport().https_connections = conns;
    Ok(())
}
