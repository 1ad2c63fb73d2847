//! The command line: CoreDNS's flags (`-conf`, `-dns.port`, `-plugins`, `-version`, `-quiet`,
//! `-pidfile`) plus `-check`, the `node-cache` and `migrate` subcommands' dispatch, and the main
//! loop (signals, reload polling).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::log;
use crate::server::runtime::{Runtime, Source};

/// The built-in configuration used when there is no Corefile, like CoreDNS.
pub(crate) const DEFAULT_COREFILE: &str = ".:{port} {\n    whoami\n    log\n}\n";

/// Parsed flags.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    pub conf: Option<PathBuf>,
    pub dns_port: Option<u16>,
    pub plugins: bool,
    pub version: bool,
    pub quiet: bool,
    pub pidfile: Option<PathBuf>,
    pub check: bool,
    /// Told about the server's life (node-cache; not a command-line flag).
    pub embedder: Option<EmbedderHandle>,
}

/// An [`Embedder`](crate::server::runtime::Embedder) in [`Flags`].
#[derive(Clone)]
pub(crate) struct EmbedderHandle(pub(crate) Arc<dyn crate::server::runtime::Embedder>);

impl std::fmt::Debug for EmbedderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbedderHandle")
    }
}

fn usage() -> String {
    "Usage of sextant:\n  -check\n    \tparse and set up the Corefile, print every error, do not serve\n  -conf string\n    \tCorefile to load (default \"Corefile\")\n  -dns.port string\n    \tDefault port (default \"53\")\n  -pidfile string\n    \tPath to write pid file\n  -plugins\n    \tList installed plugins\n  -quiet\n    \tQuiet mode (no initialization output)\n  -version\n    \tShow version\n".to_string()
}

/// Parses Go-style flags: `-flag value`, `-flag=value`, `--flag`.
pub(crate) fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut f = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let stripped = a.trim_start_matches('-');
        if stripped.len() == a.len() {
            return Err(format!("unexpected argument {a:?}\n{}", usage()));
        }
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (stripped, None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("flag needs an argument: -{name}\n{}", usage()))
        };
        let boolean = |v: &Option<String>| !matches!(v.as_deref(), Some("false") | Some("0"));
        match name {
            "conf" => f.conf = Some(PathBuf::from(value()?)),
            "dns.port" => {
                let v = value()?;
                f.dns_port = Some(
                    v.parse()
                        .map_err(|_| format!("invalid value {v:?} for flag -dns.port"))?,
                );
            }
            "pidfile" => f.pidfile = Some(PathBuf::from(value()?)),
            "plugins" => f.plugins = boolean(&inline),
            "version" => f.version = boolean(&inline),
            "quiet" => f.quiet = boolean(&inline),
            "check" => f.check = boolean(&inline),
            "h" | "help" => return Err(usage()),
            other => {
                return Err(format!(
                    "flag provided but not defined: -{other}\n{}",
                    usage()
                ))
            }
        }
        i += 1;
    }
    Ok(f)
}

/// Go's name for the architecture (`amd64`, `arm64`), as CoreDNS prints it.
pub(crate) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn version_text() -> String {
    format!(
        "Sextant-{}\nCoreDNS-{} compatible\nlinux/{}, rust",
        env!("CARGO_PKG_VERSION"),
        crate::metrics::COREDNS_VERSION,
        go_arch()
    )
}

fn plugins_text() -> String {
    let mut s = String::from(
        "Server types:\n  dns\n\nCaddyfile loaders:\n  flag\n  default\n\nOther plugins:\n",
    );
    for p in crate::plugins::ORDER {
        s.push_str(&format!("  dns.{}\n", p.name));
    }
    s
}

/// Entry point; returns the process exit code.
pub(crate) fn main(args: Vec<String>) -> i32 {
    crate::tracing_bridge::install();
    // A panic while serving a query ends that query's task only; count and log it like CoreDNS.
    std::panic::set_hook(Box::new(|info| {
        crate::metrics::PANICS.inc();
        log::error(&format!("Recovered from panic in server: {info}"));
    }));
    match args.first().map(String::as_str) {
        Some("node-cache") => return crate::nodecache::main(&args[1..]),
        Some("migrate") => return crate::nodecache::migrate::main(&args[1..]),
        _ => {}
    }
    let flags = match parse_flags(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if flags.version {
        println!("{}", version_text());
        return 0;
    }
    if flags.plugins {
        print!("{}", plugins_text());
        return 0;
    }
    let port = flags.dns_port.unwrap_or(53);
    let source = match &flags.conf {
        Some(p) => Source::File(p.clone()),
        None => {
            let p = PathBuf::from("Corefile");
            if p.exists() {
                Source::File(p)
            } else {
                Source::Inline(DEFAULT_COREFILE.replace("{port}", &port.to_string()))
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sextant")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(flags, source, port))
}

/// Runs the server until a terminating signal; node-cache mode calls this in-process.
pub(crate) async fn run(flags: Flags, source: Source, port: u16) -> i32 {
    crate::metrics::init();
    let runtime = Runtime::new(source, port);
    if let Some(e) = &flags.embedder {
        runtime.set_embedder(e.0.clone());
    }
    if flags.check {
        // Set up only: the generation is dropped uncommitted, so none of its tasks ever runs.
        return match runtime.build() {
            Ok((gen, _)) => {
                let n: usize = gen.sites.len();
                println!("Corefile OK: {n} listener(s)");
                0
            }
            Err(e) => {
                for line in e.lines() {
                    println!("{}", explain(&line));
                }
                1
            }
        };
    }
    let (gen, hash) = match runtime.build() {
        Ok(x) => x,
        Err(e) => {
            for line in e.lines() {
                log::raw(&format!("[FATAL] {}", explain(&line)));
            }
            return 1;
        }
    };
    let sigs = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            log::raw(&format!("[FATAL] cannot install signal handlers: {e}"));
            return 1;
        }
    };
    let banner = match runtime.apply(gen, hash.clone()).await {
        Ok(b) => b,
        Err(e) => {
            log::raw(&format!("[FATAL] {e}"));
            return 1;
        }
    };
    crate::metrics::RELOAD_VERSION
        .with_label_values(&["sha512", &hash])
        .set(1.0);
    if !flags.quiet {
        for l in &banner {
            println!("{l}");
        }
        println!("CoreDNS-{}", crate::metrics::COREDNS_VERSION);
        println!(
            "linux/{}, rust, sextant-{}",
            go_arch(),
            env!("CARGO_PKG_VERSION")
        );
    }
    if let Some(p) = &flags.pidfile {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            log::error(&format!("failed to write pidfile: {e}"));
        }
    }
    if runtime.reload_settings().await.is_some() {
        log::PluginLog("reload").info(&format!("Running configuration SHA512 = {hash}"));
    }
    let code = signals(runtime.clone(), sigs).await;
    if let Some(p) = &flags.pidfile {
        let _ = std::fs::remove_file(p);
    }
    code
}

/// Names plugins that CoreDNS has but this build does not, so `-check` says so plainly.
fn explain(line: &str) -> String {
    for p in crate::plugins::PENDING {
        if line.ends_with(&format!("Unknown directive '{p}'")) {
            return line.replace(
                &format!("Unknown directive '{p}'"),
                &format!("Unknown directive '{p}' (a CoreDNS plugin this Sextant build does not have yet)"),
            );
        }
    }
    line.to_string()
}

/// The signals the server handles, caught from before the first listener opens (a SIGUSR1
/// that arrives while starting must reload, not kill the process).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Waits for signals and the reload timer; returns the exit code.
async fn signals(runtime: Arc<Runtime>, sigs: Signals) -> i32 {
    let Signals {
        mut term,
        mut int,
        mut quit,
        mut usr1,
        mut hup,
    } = sigs;
    loop {
        let wait = match runtime.reload_settings().await {
            Some((interval, jitter)) => {
                let j = jitter.as_millis() as u64;
                let off = if j > 0 {
                    rand::random::<u64>() % (2 * j + 1)
                } else {
                    0
                };
                (interval + Duration::from_millis(off)).saturating_sub(jitter)
            }
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = term.recv() => {
                runtime.shutdown("SIGTERM: Shutting down servers then terminating").await;
                return 0;
            }
            _ = int.recv() => {
                runtime.shutdown("SIGINT: Shutting down").await;
                return 0;
            }
            _ = quit.recv() => {
                log::info("SIGQUIT: Shutting down");
                return 0;
            }
            _ = hup.recv() => {
                log::info("SIGHUP: Hanging up");
            }
            _ = usr1.recv() => {
                log::info("SIGUSR1: Reloading");
                reload(&runtime, true).await;
            }
            _ = tokio::time::sleep(wait) => {
                if runtime.reload_settings().await.is_some() {
                    reload(&runtime, false).await;
                }
            }
        }
    }
}

async fn reload(runtime: &Runtime, force: bool) {
    if let Err(e) = runtime.reload(force).await {
        crate::metrics::RELOAD_FAILED.inc();
        log::PluginLog("reload").error(&format!(
            "Corefile changed but reload failed: {}",
            e.lines().join("; ")
        ));
    }
}
