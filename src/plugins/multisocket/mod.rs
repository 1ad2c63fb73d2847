//! The `multisocket` plugin: how many SO_REUSEPORT sockets (UDP, each with its reader thread,
//! and TCP listeners) serve each of the block's addresses.

use sextant_corefile::{Directive, Error};

use crate::plugin::SetupCtx;

/// CoreDNS's upper bound.
const MAX_SOCKETS: i64 = 1024;

/// The number of sockets asked by the line: its argument, or the number of cores the process
/// may use (CoreDNS: GOMAXPROCS, which follows the CPU quota, as `available_parallelism` does).
fn parse(d: &Directive) -> Result<usize, Error> {
    if d.block.is_some() {
        return Err(d.err("Unexpected token '{', expecting argument"));
    }
    d.arg_count(0, 1)?;
    let Some(t) = d.args.first() else {
        return Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1));
    };
    let n = crate::pkg::num::atoi(d, t)
        .map_err(|e| d.err_at(t, format!("invalid num sockets: {}", e.msg)))?;
    if n < 1 {
        return Err(d.err_at(t, format!("num sockets can not be zero or negative: {n}")));
    }
    if n > MAX_SOCKETS {
        return Err(d.err_at(
            t,
            format!("num sockets exceeds maximum ({MAX_SOCKETS}): {n}"),
        ));
    }
    Ok(n as usize)
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let n = parse(lines[0])?;
    ctx.set_sockets(n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Result<usize, Error> {
        let cf = sextant_corefile::parse_str(
            "Corefile",
            &format!(".:53 {{\n    {text}\n}}\n"),
            std::path::Path::new("."),
        )
        .unwrap();
        parse(&cf.blocks[0].directives[0])
    }

    #[test]
    fn numbers_and_the_core_count_default() {
        assert_eq!(line("multisocket 5").unwrap(), 5);
        assert_eq!(line("multisocket 1024").unwrap(), 1024);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(line("multisocket").unwrap(), cores);
    }

    #[test]
    fn bad_values_name_the_token() {
        let e = line("multisocket 0").unwrap_err().to_string();
        assert!(e.contains("Corefile:2:17"), "{e}");
        assert!(
            e.contains("num sockets can not be zero or negative: 0"),
            "{e}"
        );
        let e = line("multisocket -3").unwrap_err().to_string();
        assert!(e.contains("zero or negative: -3"), "{e}");
        let e = line("multisocket 1025").unwrap_err().to_string();
        assert!(
            e.contains("num sockets exceeds maximum (1024): 1025"),
            "{e}"
        );
        let e = line("multisocket abc").unwrap_err().to_string();
        assert!(
            e.contains(r#"invalid num sockets: strconv.Atoi: parsing "abc": invalid syntax"#),
            "{e}"
        );
        assert!(line("multisocket 1 2").is_err());
        assert!(line("multisocket {\n    x\n    }").is_err());
    }
}
