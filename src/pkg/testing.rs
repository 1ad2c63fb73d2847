//! Test support for the toolkit and the plugins: Corefile text to directives, and a bounded
//! wait for work running elsewhere (a spawned task, a socket peer) to show.

use std::time::Duration;

use sextant_corefile::Directive;

/// The first directive of the first server block of Corefile `text` (file name `Corefile`).
pub(crate) fn directive(text: &str) -> Directive {
    let cf = sextant_corefile::parse_str("Corefile", text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    cf.blocks[0].directives[0].clone()
}

/// `f` applied to the directives of the first server block of Corefile `text` (the way a
/// plugin's `setup` gets its lines).
pub(crate) fn with_block<R>(text: &str, f: impl FnOnce(&[&Directive]) -> R) -> R {
    let cf = sextant_corefile::parse_str("Corefile", text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let lines: Vec<&Directive> = cf.blocks[0].directives.iter().collect();
    f(&lines)
}

/// Like [`with_block`], with only the block's `name` directives.
pub(crate) fn with_named<R>(text: &str, name: &str, f: impl FnOnce(&[&Directive]) -> R) -> R {
    with_block(text, |lines| {
        let named: Vec<&Directive> = lines
            .iter()
            .copied()
            .filter(|d| d.name.text == name)
            .collect();
        f(&named)
    })
}

/// `line` as the only directive of a `. { }` block (it starts at line 2, column 2).
pub(crate) fn line(line: &str) -> Directive {
    directive(&format!(". {{\n {line}\n}}\n"))
}

/// Waits until `done` holds, polling every millisecond for at most 10 s of real time (the
/// time real work may take on a loaded machine); panics naming `what` otherwise.
pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for {what}");
}
