//! The `quic` plugin: limits of a block's `quic://` (DNS over QUIC, RFC 9250) listeners
//! (`max_streams` per connection, `worker_pool_size` over all connections). The listener itself
//! lives in `src/server/quic.rs`.

use sextant_corefile::{Directive, Error};

use crate::pkg::num::limit;
use crate::plugin::SetupCtx;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(0, 0)?;
    let (mut streams, mut workers) = (None, None);
    for sub in d.sub() {
        match sub.name.text.as_str() {
            "max_streams" => limit(sub, &mut streams, true)?,
            "worker_pool_size" => limit(sub, &mut workers, true)?,
            other => return Err(sub.err(format!("unknown property '{other}'"))),
        }
    }
    let t = ctx.transport();
    t.quic_streams = streams;
    t.quic_workers = workers;
    Ok(())
}
