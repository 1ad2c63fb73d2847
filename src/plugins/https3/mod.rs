//! The `https3` plugin: limits of a block's `https3://` (DNS over HTTP/3) listeners
//! (`max_streams`, `max_connections`). The listener itself lives in `src/server/quic.rs`.

use sextant_corefile::{Directive, Error};

use crate::pkg::num::limits;
use crate::plugin::SetupCtx;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let [streams, conns] = limits(lines[0], ["max_streams", "max_connections"], false)?;
    let t = ctx.transport();
    t.https3_streams = streams;
    t.https3_connections = conns;
    Ok(())
}
