//! The `quic` plugin: limits of a block's `quic://` (DNS over QUIC, RFC 9250) listeners
//! (`max_streams` per connection, `worker_pool_size` over all connections). The listener itself
//! lives in `src/server/quic.rs`.

use sextant_corefile::{Directive, Error};

use crate::pkg::num::limits;
use crate::plugin::SetupCtx;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let [streams, workers] = limits(lines[0], ["max_streams", "worker_pool_size"], true)?;
    let t = ctx.transport();
    t.quic_streams = streams;
    t.quic_workers = workers;
    Ok(())
}
