//! The `debug` plugin: turns on `[DEBUG]` log lines (process-wide).

use sextant_corefile::{Directive, Error};

use crate::plugin::SetupCtx;

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    for d in lines {
        d.arg_count(0, 0)?;
    }
    ctx.settings().debug = true;
    Ok(())
}
