//! `import` of files and globs from temporary directories, through the public API.

use std::fs;
use std::path::{Path, PathBuf};

use sextant_corefile::{parse_file, parse_str_with_env, Corefile, Directive};

fn no_env(_: &str) -> Option<String> {
    None
}

fn names(ds: &[Directive]) -> Vec<String> {
    ds.iter()
        .map(|d| {
            let mut s = d.name.text.clone();
            for a in &d.args {
                s.push(' ');
                s.push_str(&a.text);
            }
            if !d.sub().is_empty() {
                s.push_str(&format!(" {{ {} }}", names(d.sub()).join("; ")));
            }
            s
        })
        .collect()
}

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, text).unwrap();
    p
}

fn parse_in(dir: &Path, text: &str) -> Result<Corefile, sextant_corefile::Error> {
    parse_str_with_env("Corefile", text, dir, &no_env)
}

#[test]
fn import_file_inside_block_and_positions() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "plugins.conf",
        "# extra plugins\nlog\ncache 30 {\n  success 10\n}\n",
    );
    let c = parse_in(
        d.path(),
        ". {\n  errors\n  import plugins.conf\n  whoami\n}\n",
    )
    .unwrap();
    assert_eq!(
        names(&c.blocks[0].directives),
        vec!["errors", "log", "cache 30 { success 10 }", "whoami"]
    );
    let log = &c.blocks[0].directives[1];
    assert_eq!(log.name.pos.file.as_ref(), p.display().to_string());
    assert_eq!((log.name.pos.line, log.name.pos.col), (2, 1));
    assert_eq!(c.files, vec![p]);
}

#[test]
fn import_inside_directive_block() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "fwd.conf", "force_tcp\nmax_fails 3\n");
    let c = parse_in(
        d.path(),
        ". {\n  forward . 1.1.1.1 {\n    import fwd.conf\n  }\n}\n",
    )
    .unwrap();
    assert_eq!(
        names(&c.blocks[0].directives),
        vec!["forward . 1.1.1.1 { force_tcp; max_fails 3 }"]
    );
}

#[test]
fn top_level_import_of_server_blocks_with_glob_order() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "zones/b.conf", "b.example {\n  whoami\n}\n");
    write(d.path(), "zones/a.conf", "a.example {\n  log\n}\n");
    write(d.path(), "zones/c.txt", "not imported {\n}\n");
    let c = parse_in(d.path(), "import zones/*.conf\n. {\n  errors\n}\n").unwrap();
    let keys: Vec<&str> = c.blocks.iter().map(|b| b.keys[0].text.as_str()).collect();
    assert_eq!(keys, vec!["a.example", "b.example", "."]);
    assert_eq!(c.files.len(), 2);
    assert!(c.files[0].ends_with("zones/a.conf"));
    assert!(c.files[1].ends_with("zones/b.conf"));
    assert!(c.warnings.is_empty());
    // `?` glob
    let c = parse_in(d.path(), "import zones/?.conf\n").unwrap();
    assert_eq!(c.blocks.len(), 2);
}

#[test]
fn nested_imports_are_relative_to_the_importing_file() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "conf/main.conf", "import sub/inner.conf\nlog\n");
    write(
        d.path(),
        "conf/sub/inner.conf",
        "import ../../top.conf\nwhoami\n",
    );
    write(d.path(), "top.conf", "errors\n");
    // a same-named file next to the main Corefile must not be picked for the nested import
    write(d.path(), "sub/inner.conf", "wrong\n");
    let c = parse_in(d.path(), ". {\n  import conf/main.conf\n}\n").unwrap();
    assert_eq!(
        names(&c.blocks[0].directives),
        vec!["errors", "whoami", "log"]
    );
    assert_eq!(c.files.len(), 3);
    assert!(c.files[0].ends_with("conf/main.conf"));
    assert!(c.files[1].ends_with("conf/sub/inner.conf"));
}

#[test]
fn snippet_defined_in_imported_file_and_file_from_snippet() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "lib/snippets.conf",
        "(common) {\n  errors\n  import extra.conf\n}\n",
    );
    write(d.path(), "lib/extra.conf", "log\n");
    let c = parse_in(
        d.path(),
        "import lib/snippets.conf\n. {\n  import common\n}\n",
    )
    .unwrap();
    // the snippet's own import is relative to the file that defined the snippet
    assert_eq!(names(&c.blocks[0].directives), vec!["errors", "log"]);
}

#[test]
fn parse_file_lists_files_and_uses_its_directory() {
    let d = tempfile::tempdir().unwrap();
    let inc = write(d.path(), "inc.conf", "whoami\n");
    let main = write(
        d.path(),
        "Corefile",
        ".:1053 {\n  import inc.conf\n  import inc.conf\n}\n",
    );
    let c = parse_file(&main).unwrap();
    assert_eq!(names(&c.blocks[0].directives), vec!["whoami", "whoami"]);
    assert_eq!(c.files, vec![main.clone(), inc]);
    let e = parse_file(&d.path().join("missing")).unwrap_err();
    assert!(e.msg.contains("cannot read Corefile"), "{e}");
    // errors in the main file name it as given
    fs::write(&main, ". {\n}\n}\n").unwrap();
    let e = parse_file(&main).unwrap_err();
    assert_eq!(e.pos.to_string(), format!("{}:3:1", main.display()));
}

#[test]
fn empty_glob_is_a_warning_missing_file_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let c = parse_in(d.path(), ". {\n  import nothing/*.conf\n  log\n}\n").unwrap();
    assert_eq!(names(&c.blocks[0].directives), vec!["log"]);
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].pos.to_string(), "Corefile:2:10");
    assert!(c.warnings[0].msg.contains("no files matching"));
    let e = parse_in(d.path(), ". {\n  import missing.conf\n}\n").unwrap_err();
    assert_eq!(e.pos.to_string(), "Corefile:2:10");
    assert!(
        e.msg
            .contains("no snippet named 'missing.conf' and no file"),
        "{e}"
    );
}

#[test]
fn import_errors_in_imported_files_name_that_file() {
    let d = tempfile::tempdir().unwrap();
    let bad = write(d.path(), "bad.conf", ". {\n  log\n  cache {\n");
    let e = parse_in(d.path(), "import bad.conf\n").unwrap_err();
    // the unclosed brace of `cache` is in bad.conf line 3 col 9
    assert_eq!(e.pos.to_string(), format!("{}:3:9", bad.display()));
    assert_eq!(e.directive.as_deref(), Some("cache"));
    // as in CoreDNS, the token stream is flat: a brace opened in an imported file may be closed by the
    // importing file
    write(d.path(), "open.conf", "forward . 1.1.1.1 {\n  force_tcp\n");
    let c = parse_in(d.path(), ". {\n  import open.conf\n  }\n}\n").unwrap();
    assert_eq!(
        names(&c.blocks[0].directives),
        vec!["forward . 1.1.1.1 { force_tcp }"]
    );
    let q = write(d.path(), "quote.conf", "log \"open\n");
    let e = parse_in(d.path(), ". {\n  import quote.conf\n}\n").unwrap_err();
    assert_eq!(e.pos.to_string(), format!("{}:1:5", q.display()));
}

#[test]
fn import_cycles_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "a.conf", "log\nimport b.conf\n");
    write(d.path(), "b.conf", "import a.conf\n");
    let e = parse_in(d.path(), ". {\n  import a.conf\n}\n").unwrap_err();
    assert!(e.msg.contains("import cycle"), "{e}");
    assert!(e.pos.to_string().contains("b.conf:1:8"), "{e}");
    // self import, as the last line
    fs::write(&a, "log\nimport a.conf").unwrap();
    let e = parse_in(d.path(), ". {\n  import a.conf\n}\n").unwrap_err();
    assert!(e.msg.contains("import cycle"), "{e}");
    // a glob that matches the importing file
    write(d.path(), "g/x.conf", "import *.conf\n");
    let e = parse_in(d.path(), ". {\n  import g/x.conf\n}\n").unwrap_err();
    assert!(e.msg.contains("import cycle"), "{e}");
    // the main Corefile imported back
    let main = write(d.path(), "m/Corefile", ". {\n  import back.conf\n}\n");
    write(d.path(), "m/back.conf", "import Corefile\n");
    let e = parse_file(&main).unwrap_err();
    assert!(e.msg.contains("import cycle"), "{e}");
}

#[test]
fn diamond_imports_are_not_cycles() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.conf", "import c.conf\n");
    write(d.path(), "b.conf", "import c.conf\n");
    write(d.path(), "c.conf", "x\n");
    let c = parse_in(
        d.path(),
        ". {\n  import a.conf\n  import b.conf\n  import c.conf\n}\n",
    )
    .unwrap();
    assert_eq!(names(&c.blocks[0].directives), vec!["x", "x", "x"]);
    assert_eq!(c.files.len(), 3, "each file listed once");
}

#[test]
fn importing_a_directory_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("dir")).unwrap();
    let e = parse_in(d.path(), ". {\n  import dir\n}\n").unwrap_err();
    assert!(e.msg.contains("is a directory"), "{e}");
}

#[test]
fn absolute_and_env_import_paths() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "abs.conf", "whoami\n");
    let text = format!(". {{\n  import {}\n}}\n", p.display());
    let c = parse_str_with_env("Corefile", &text, Path::new("/"), &no_env).unwrap();
    assert_eq!(names(&c.blocks[0].directives), vec!["whoami"]);
    let dir = d.path().display().to_string();
    let env = move |k: &str| (k == "CONF_DIR").then(|| dir.clone());
    let c = parse_str_with_env(
        "Corefile",
        ". {\n  import {$CONF_DIR}/abs.conf\n}\n",
        Path::new("/"),
        &env,
    )
    .unwrap();
    assert_eq!(names(&c.blocks[0].directives), vec!["whoami"]);
}

#[test]
fn env_is_substituted_in_imported_content() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "x.conf", "{$Z}:53 {\n  cache {$TTL}\n}\n");
    let env = |k: &str| match k {
        "Z" => Some("example.org".to_string()),
        "TTL" => Some("77".to_string()),
        _ => None,
    };
    let c = parse_str_with_env("Corefile", "import x.conf\n", d.path(), &env).unwrap();
    assert_eq!(c.blocks[0].keys[0].text, "example.org:53");
    assert_eq!(names(&c.blocks[0].directives), vec!["cache 77"]);
}

#[test]
fn file_import_blowup_is_bounded() {
    // Each level imports the previous one 12 times: 12^5 = 248 832 file imports requested.
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "l0.conf", "x\n");
    for level in 1..=5 {
        let body = format!("import l{}.conf\n", level - 1).repeat(12);
        write(d.path(), &format!("l{level}.conf"), &body);
    }
    let start = std::time::Instant::now();
    let e = parse_in(d.path(), ". {\n  import l5.conf\n}\n").unwrap_err();
    assert!(
        e.msg
            .contains("maximum file import count (100000) exceeded"),
        "{e}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
}
