//! The command line: CoreDNS's flags (`-conf`, `-dns.port`, `-plugins`, `-version`, `-quiet`,
//! `-pidfile`) plus `-check`, the `node-cache` and `migrate` subcommands' dispatch, and the main
//! loop (signals, reload polling).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::log;
use crate::pkg;
use crate::pkg::clock::Clock;
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

/// Why the command line is refused; what Go's `flag` package reports is followed by the usage
/// text, as it prints it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlagsError {
    /// `-h`/`-help`: the usage text alone.
    #[error("{}", usage())]
    Help,
    #[error("{0}\n{usage}", usage = usage())]
    Flag(pkg::flags::FlagError),
    #[error("unexpected argument {0:?}\n{usage}", usage = usage())]
    Unexpected(String),
    #[error("invalid value {0:?} for flag -dns.port")]
    Port(String),
}

impl From<pkg::flags::FlagError> for FlagsError {
    fn from(e: pkg::flags::FlagError) -> Self {
        FlagsError::Flag(e)
    }
}

/// Parses the flags with Go's `flag` rules (`-flag value`, `-flag=value`, `--flag`).
pub(crate) fn parse_flags(args: &[String]) -> Result<Flags, FlagsError> {
    let mut f = Flags::default();
    let mut it = pkg::flags::Flags::new(args);
    while let Some(flag) = it.next_flag()? {
        let mut value = || it.value(&flag);
        let boolean = || flag.bool();
        match flag.name {
            "conf" => f.conf = Some(PathBuf::from(value()?)),
            "dns.port" => {
                let v = value()?;
                f.dns_port = Some(v.parse().map_err(|_| FlagsError::Port(v.to_string()))?);
            }
            "pidfile" => f.pidfile = Some(PathBuf::from(value()?)),
            "plugins" => f.plugins = boolean()?,
            "version" => f.version = boolean()?,
            "quiet" => f.quiet = boolean()?,
            "check" => f.check = boolean()?,
            "h" | "help" => return Err(FlagsError::Help),
            _ => return Err(flag.not_defined().into()),
        }
    }
    if let Some(a) = it.rest().first() {
        return Err(FlagsError::Unexpected(a.clone()));
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
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(flags, source, port))
}

/// The multi-threaded runtime the server runs on (also node-cache's).
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sextant")
        .build()
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
    let code = signals(runtime.clone(), sigs, Clock::system()).await;
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

/// How long until the next reload check: INTERVAL ± JITTER, uniformly; an hour without
/// `reload`.
fn reload_wait(settings: Option<(Duration, Duration)>) -> Duration {
    let Some((interval, jitter)) = settings else {
        return Duration::from_secs(3600);
    };
    let j = jitter.as_millis() as u64;
    let off = if j > 0 {
        rand::random::<u64>() % (2 * j + 1)
    } else {
        0
    };
    (interval + Duration::from_millis(off)).saturating_sub(jitter)
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

/// Waits for signals and the reload timer (on `clock`); returns the exit code.
async fn signals(runtime: Arc<Runtime>, sigs: Signals, clock: Clock) -> i32 {
    let Signals {
        mut term,
        mut int,
        mut quit,
        mut usr1,
        mut hup,
    } = sigs;
    loop {
        let wait = reload_wait(runtime.reload_settings().await);
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
            _ = clock.sleep(wait) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::clock::ManualClock;

    #[test]
    fn reload_wait_is_interval_plus_or_minus_jitter() {
        let (i, j) = (Duration::from_secs(30), Duration::from_secs(15));
        for _ in 0..1000 {
            let w = reload_wait(Some((i, j)));
            assert!(w >= i - j && w <= i + j, "{w:?}");
        }
        assert_eq!(reload_wait(Some((i, Duration::ZERO))), i);
        assert_eq!(reload_wait(None), Duration::from_secs(3600));
    }

    /// The reload timer runs on the clock: it fires once the clock has moved by the wait, and
    /// not before, without real time passing.
    #[tokio::test]
    async fn reload_timer_follows_the_clock() {
        let m = ManualClock::new();
        let clock = m.clock();
        let wait = reload_wait(Some((Duration::from_secs(2), Duration::from_secs(1))));
        let timer = tokio::spawn(async move { clock.sleep(wait).await });
        m.sleepers(1).await;
        m.advance(Duration::from_millis(999));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!timer.is_finished(), "fired before INTERVAL - JITTER");
        m.advance(Duration::from_secs(3));
        tokio::time::timeout(Duration::from_secs(5), timer)
            .await
            .expect("fires once the clock passed INTERVAL + JITTER")
            .unwrap();
    }

    #[test]
    fn flags_follow_go_rules() {
        let a = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let f = parse_flags(&a(&[
            "-conf",
            "/x",
            "--dns.port=1053",
            "-quiet",
            "-check=false",
        ]))
        .unwrap();
        assert_eq!(f.conf, Some(PathBuf::from("/x")));
        assert_eq!(f.dns_port, Some(1053));
        assert!(f.quiet && !f.check && !f.version);
        let e = |s: &[&str]| parse_flags(&a(s)).unwrap_err().to_string();
        assert!(
            e(&["-nope"]).starts_with("flag provided but not defined: -nope\nUsage of sextant:")
        );
        assert!(e(&["-conf"]).starts_with("flag needs an argument: -conf\n"));
        assert!(e(&["stray"]).starts_with("unexpected argument \"stray\"\n"));
        assert!(e(&["-quiet=maybe"]).starts_with("invalid boolean value \"maybe\" for -quiet"));
        assert_eq!(
            e(&["-dns.port=x"]),
            "invalid value \"x\" for flag -dns.port"
        );
        assert!(e(&["-h"]).starts_with("Usage of sextant:"));
    }
}
