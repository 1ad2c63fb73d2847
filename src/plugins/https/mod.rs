//! The `https` plugin: limits of a block's `https://` (DNS over HTTPS) listeners
//! (`max_connections`). The listener itself lives in `src/server/stream.rs`.

use sextant_corefile::{Directive, Error};

use crate::pkg::num::limits;
use crate::plugin::SetupCtx;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let [conns] = limits(lines[0], ["max_connections"], false)?;
    let t = ctx.transport();
    t.https_connections = conns;
    Ok(())
}
