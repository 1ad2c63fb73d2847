//! The `https3` plugin: limits of a block's `https3://` (DNS over HTTP/3) listeners
//! (`max_streams`, `max_connections`). The listener itself lives in `src/server/quic.rs`.

use sextant_corefile::{Directive, Error};

use crate::pkg::num::limit;
use crate::plugin::SetupCtx;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(0, 0)?;
    let (mut streams, mut conns) = (None, None);
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "max_streams" => limit(sub, &mut streams, false)?,
            "max_connections" => limit(sub, &mut conns, false)?,
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    let t = ctx.transport();
    t.https3_streams = streams;
    t.https3_connections = conns;
    Ok(())
}
