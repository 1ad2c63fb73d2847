//! The `reload` plugin: poll the Corefile (and its imports) for changes every INTERVAL ± JITTER.
//! The polling itself runs in the server runtime; this parses the settings.

use std::time::Duration;

use sextant_corefile::{Directive, Error};

use crate::pkg::duration;
use crate::plugin::SetupCtx;

pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_JITTER: Duration = Duration::from_secs(15);

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let d = lines[0];
    d.arg_count(0, 2)?;
    let interval = match d.args.first() {
        Some(t) => duration::arg(d, t)?,
        None => DEFAULT_INTERVAL,
    };
    let mut jitter = match d.args.get(1) {
        Some(t) => duration::arg(d, t)?,
        None => DEFAULT_JITTER,
    };
    if interval < Duration::from_secs(2) {
        return Err(d.err("interval value must be greater or equal to 2s"));
    }
    if jitter < Duration::from_secs(1) {
        return Err(d.err("jitter value must be greater or equal to 1s"));
    }
    if jitter > interval / 2 {
        jitter = interval / 2;
    }
    let g = ctx.settings();
    g.reload = Some(match g.reload {
        // Several blocks: the first one's settings win, like CoreDNS.
        Some(prev) => prev,
        None => (interval, jitter),
    });
    Ok(())
}
