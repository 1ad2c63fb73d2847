//! The `root` plugin: the directory relative file names of the block's plugins are read from
//! (`file`, `auto` and `tls`, as in CoreDNS). No handler.

use sextant_corefile::{Directive, Error};

use crate::log::PluginLog;
use crate::plugin::SetupCtx;

const LOG: PluginLog = PluginLog("root");

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    // Like CoreDNS: every line needs a path, the last one wins, words after it are ignored.
    for d in lines {
        if d.args.is_empty() {
            d.arg_count(1, 1)?;
        }
    }
    let d = lines[lines.len() - 1];
    // Like CoreDNS: the first argument is the path, anything after it is ignored.
    let path = std::path::PathBuf::from(&d.args[0].text);
    match std::fs::metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            LOG.warning(&format!("Root path does not exist: {}", path.display()));
        }
        Err(e) => {
            return Err(d.err_at(
                &d.args[0],
                format!("unable to access root path '{}': {e}", path.display()),
            ))
        }
    }
    ctx.set_root(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_names_resolve_under_root() {
        let root = std::path::Path::new("/etc/coredns/zones");
        assert_eq!(
            crate::setup::under_root(Some(root), "db.example"),
            root.join("db.example")
        );
        assert_eq!(
            crate::setup::under_root(Some(root), "/abs/db"),
            std::path::Path::new("/abs/db")
        );
        assert_eq!(
            crate::setup::under_root(None, "db"),
            std::path::Path::new("db")
        );
    }
}
