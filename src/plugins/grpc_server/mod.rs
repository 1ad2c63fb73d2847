//! The `grpc_server` plugin: limits of a block's `grpc://` (DNS over gRPC) listeners
//! (`max_streams`, `max_connections`). The listener itself lives in `src/server/stream.rs`.

use sextant_corefile::{Directive, Error};

use crate::pkg::num::limits;
use crate::plugin::SetupCtx;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let [streams, conns] = limits(lines[0], ["max_streams", "max_connections"], false)?;
    let t = ctx.transport();
    t.grpc_streams = streams;
    t.grpc_connections = conns;
    Ok(())
}
