//! Process harness for the `sextant` binary (or any stand-in): writes the Corefile into a
//! fresh temp dir, runs `BIN -conf <dir>/Corefile`, captures output line by line, sends
//! signals, waits for exit; kills the child and removes the dir on Drop. Also `-check` runs
//! and a tiny blocking HTTP GET for /health, /ready and /metrics.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::client::{udp, Query, Reply};
use crate::error::{Error, Result};
use hickory_proto::rr::RecordType;

/// Which stream a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

#[derive(Default)]
struct Captured {
    lines: Vec<(Stream, String)>,
    eof: usize,
}

struct Output {
    buf: Mutex<Captured>,
    cv: Condvar,
}

impl Output {
    fn all(&self) -> Vec<(Stream, String)> {
        self.buf.lock().map(|b| b.lines.clone()).unwrap_or_default()
    }
}

/// Builder for [`Sextant`]; get one from [`Sextant::builder`].
#[derive(Debug, Clone)]
pub struct SextantBuilder {
    bin: PathBuf,
    corefile: String,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    files: BTreeMap<String, Vec<u8>>,
    cwd: Option<PathBuf>,
    conf_flag: bool,
}

impl SextantBuilder {
    /// Append a command-line argument (after `-conf <path>`).
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Append several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable for the child (the rest of the environment is inherited).
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Write an extra file beside the Corefile (`name` relative to the temp dir; parent
    /// directories are created). The child runs in that dir unless [`Self::cwd`] is given,
    /// so the Corefile can refer to it by relative path.
    pub fn file(mut self, name: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files
            .insert(name.to_string(), contents.as_ref().to_vec());
        self
    }

    /// Run the child in `dir` instead of the temp dir.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Whether to pass `-conf <dir>/Corefile` first (default true). Turn off to run a
    /// stand-in program with only [`Self::arg`] arguments.
    pub fn conf_flag(mut self, on: bool) -> Self {
        self.conf_flag = on;
        self
    }

    /// Start the process.
    pub fn spawn(self) -> Result<Sextant> {
        let dir = tempfile::Builder::new().prefix("sextant-test-").tempdir()?;
        let corefile = dir.path().join("Corefile");
        std::fs::write(&corefile, &self.corefile)?;
        for (name, data) in &self.files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(p, data)?;
        }
        let mut cmd = Command::new(&self.bin);
        if self.conf_flag {
            cmd.arg("-conf").arg(&corefile);
        }
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(self.cwd.as_deref().unwrap_or(dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Command {
            command: self.bin.display().to_string(),
            detail: e.to_string(),
        })?;
        let out = Arc::new(Output {
            buf: Mutex::new(Captured::default()),
            cv: Condvar::new(),
        });
        let pid = child.id();
        if let Some(s) = child.stdout.take() {
            spawn_reader(s, Stream::Stdout, out.clone(), pid)?;
        }
        if let Some(s) = child.stderr.take() {
            spawn_reader(s, Stream::Stderr, out.clone(), pid)?;
        }
        Ok(Sextant {
            child,
            dir,
            corefile,
            out,
            exit: None,
        })
    }

    /// Start the process.
    ///
    /// # Panics
    /// If the binary cannot be started (wrong path): a broken test setup.
    pub fn start(self) -> Sextant {
        let bin = self.bin.clone();
        match self.spawn() {
            Ok(s) => s,
            Err(e) => panic!("sextant-testkit: cannot start {}: {e}", bin.display()),
        }
    }
}

fn spawn_reader<R: Read + Send + 'static>(
    r: R,
    which: Stream,
    out: Arc<Output>,
    pid: u32,
) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("sextant-{pid}-{which:?}"))
        .spawn(move || {
            let mut reader = BufReader::new(r);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&raw)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        // Shown by the test harness only when the test fails.
                        eprintln!("[sextant {pid} {which:?}] {line}");
                        if let Ok(mut b) = out.buf.lock() {
                            b.lines.push((which, line));
                        }
                        out.cv.notify_all();
                    }
                }
            }
            if let Ok(mut b) = out.buf.lock() {
                b.eof += 1;
            }
            out.cv.notify_all();
        })?;
    Ok(())
}

/// A running `sextant` process. Dropping it kills the process (SIGKILL) and removes its dir.
///
/// ```no_run
/// use sextant_testkit::*;
/// use std::time::Duration;
/// // In an integration test of the root crate: Path::new(env!("CARGO_BIN_EXE_sextant"))
/// let bin = std::path::Path::new("target/debug/sextant");
/// let port = free_port();
/// let mut s = Sextant::start(bin, &format!(".:{port} {{\n  whoami\n}}\n"));
/// let addr = format!("127.0.0.1:{port}").parse().unwrap();
/// s.wait_dns(addr, Duration::from_secs(5)).unwrap();
/// ```
pub struct Sextant {
    child: Child,
    dir: tempfile::TempDir,
    corefile: PathBuf,
    out: Arc<Output>,
    exit: Option<ExitStatus>,
}

/// How long an exited process's output readers get to reach the end of its pipes (they lag the
/// exit by a scheduling delay; a child of the process that still holds the pipes would keep
/// them open for good).
const OUTPUT_AFTER_EXIT: Duration = Duration::from_millis(300);

impl Sextant {
    /// A builder for `bin` with `corefile` as the Corefile text.
    pub fn builder(bin: &Path, corefile: &str) -> SextantBuilder {
        SextantBuilder {
            bin: bin.to_path_buf(),
            corefile: corefile.to_string(),
            args: Vec::new(),
            envs: Vec::new(),
            files: BTreeMap::new(),
            cwd: None,
            conf_flag: true,
        }
    }

    /// Start `bin -conf <tmp>/Corefile` with `corefile` as the Corefile.
    ///
    /// # Panics
    /// If the binary cannot be started.
    pub fn start(bin: &Path, corefile: &str) -> Sextant {
        Self::builder(bin, corefile).start()
    }

    /// Run `bin -conf <tmp>/Corefile -check` and return `(exit code, stdout, stderr)`;
    /// exit code is -1 if the process was killed by a signal or ran longer than 30 s.
    pub fn check(bin: &Path, corefile: &str) -> Result<(i32, String, String)> {
        let s = Self::builder(bin, corefile).arg("-check").spawn()?;
        Self::collect(s, Duration::from_secs(30))
    }

    /// Run the configured process to completion (at most `timeout`), returning
    /// `(exit code, stdout, stderr)`.
    pub fn run_to_end(builder: SextantBuilder, timeout: Duration) -> Result<(i32, String, String)> {
        let s = builder.spawn()?;
        Self::collect(s, timeout)
    }

    fn collect(mut s: Sextant, timeout: Duration) -> Result<(i32, String, String)> {
        let code = s.wait_exit(timeout).and_then(|st| st.code()).unwrap_or(-1);
        s.wait_output_eof(Duration::from_secs(2));
        let pick = |w: Stream| {
            s.out
                .all()
                .into_iter()
                .filter(|(k, _)| *k == w)
                .map(|(_, l)| l + "\n")
                .collect::<String>()
        };
        Ok((code, pick(Stream::Stdout), pick(Stream::Stderr)))
    }

    fn wait_output_eof(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let Ok(mut b) = self.out.buf.lock() else {
            return;
        };
        while b.eof < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            b = match self.out.cv.wait_timeout(b, left) {
                Ok((b, _)) => b,
                Err(_) => return,
            };
        }
    }

    /// Process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding the Corefile and extra files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the Corefile.
    pub fn corefile_path(&self) -> &Path {
        &self.corefile
    }

    /// Every captured line so far, stdout and stderr interleaved in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.out.all().into_iter().map(|(_, l)| l).collect()
    }

    /// Captured lines of one stream.
    pub fn lines_of(&self, which: Stream) -> Vec<String> {
        self.out
            .all()
            .into_iter()
            .filter(|(k, _)| *k == which)
            .map(|(_, l)| l)
            .collect()
    }

    /// All captured output as one string (for error messages).
    pub fn output(&self) -> String {
        self.lines().join("\n")
    }

    /// How many captured lines contain `substr`.
    pub fn count_lines(&self, substr: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(substr)).count()
    }

    /// Wait until some line (already captured or future) contains `substr`; returns it.
    /// Fails early with [`Error::Exited`] if the process exits and its output ends first.
    pub fn wait_for_line(&self, substr: &str, timeout: Duration) -> Result<String> {
        self.wait_for_nth_line(substr, 1, timeout)
    }

    /// Wait until `n` lines contain `substr`; returns the `n`th (for "Reloading complete"
    /// appearing a second time, and the like).
    pub fn wait_for_nth_line(&self, substr: &str, n: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut b = self.out.buf.lock().map_err(|_| Error::Closed)?;
        loop {
            if let Some((_, l)) = b
                .lines
                .iter()
                .filter(|(_, l)| l.contains(substr))
                .nth(n.saturating_sub(1))
            {
                return Ok(l.clone());
            }
            if b.eof >= 2 {
                drop(b);
                return Err(Error::Exited {
                    status: "output closed".into(),
                    what: format!("a line containing {substr:?}"),
                    output: self.output(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(b);
                return Err(Error::timeout(
                    timeout,
                    format!(
                        "line containing {substr:?}; output so far:\n{}",
                        self.output()
                    ),
                ));
            }
            b = self
                .out
                .cv
                .wait_timeout(b, left)
                .map_err(|_| Error::Closed)?
                .0;
        }
    }

    /// Retry a query (`wait-dns.testkit.invalid. A`) to `addr` until any reply arrives.
    /// Fails early if the process has exited.
    pub fn wait_dns(&mut self, addr: SocketAddr, timeout: Duration) -> Result<Reply> {
        let reply = retry_dns(addr, timeout, || match self.try_exit() {
            Some(st) => Err(Error::Exited {
                status: st.to_string(),
                what: format!("DNS on {addr}"),
                output: self.output(),
            }),
            None => Ok(()),
        })?;
        reply.ok_or_else(|| {
            Error::timeout(
                timeout,
                format!("DNS on {addr}; output so far:\n{}", self.output()),
            )
        })
    }

    /// Send a signal (`libc::SIGTERM`, `SIGINT`, `SIGQUIT`, `SIGUSR1`, ...).
    pub fn signal(&self, sig: i32) -> Result<()> {
        send_signal(self.child.id(), sig)
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// The exit status if the process has exited, without waiting (except for its last output:
    /// once it has exited, [`Sextant::output`] holds everything it wrote).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let st = self.try_exit()?;
        self.wait_output_eof(OUTPUT_AFTER_EXIT);
        Some(st)
    }

    /// Wait up to `timeout` for the process to exit; once it has, [`Sextant::output`] holds
    /// everything it wrote (the readers reached the end of its pipes, see [`OUTPUT_AFTER_EXIT`]).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                self.wait_output_eof(OUTPUT_AFTER_EXIT);
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Atomically replace the Corefile (write a temp file, then rename), for reload tests.
    pub fn rewrite_corefile(&self, text: &str) -> Result<()> {
        self.write_file("Corefile", text)
    }

    /// Atomically write a file in the temp dir (e.g. an imported snippet or hosts file).
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        let target = self.dir.path().join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = self
            .dir
            .path()
            .join(format!(".{}.tmp", name.replace('/', "_")));
        std::fs::write(&tmp, contents)?;
        std::fs::rename(&tmp, &target)?;
        Ok(())
    }

    /// Kill the process now (SIGKILL) and reap it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        self.exit
    }
}

impl Drop for Sextant {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send signal `sig` to process `pid`.
pub fn send_signal(pid: u32, sig: i32) -> Result<()> {
    let signal = nix::sys::signal::Signal::try_from(sig).map_err(|e| Error::Command {
        command: format!("kill -{sig} {pid}"),
        detail: e.to_string(),
    })?;
    let pid = i32::try_from(pid).map_err(|_| Error::Command {
        command: format!("kill -{sig} {pid}"),
        detail: "pid out of range".into(),
    })?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| Error::Command {
        command: format!("kill -{sig} {pid}"),
        detail: e.to_string(),
    })
}

/// Retry a query to `addr` until any reply arrives (any rcode), within `timeout`.
pub fn wait_dns(addr: SocketAddr, timeout: Duration) -> Result<Reply> {
    retry_dns(addr, timeout, || Ok(()))?
        .ok_or_else(|| Error::timeout(timeout, format!("DNS on {addr}")))
}

/// Sends `wait-dns.testkit.invalid. A` to `addr` until any reply arrives (None once `timeout`
/// has passed); `check` runs before each try and ends the wait with its error.
fn retry_dns(
    addr: SocketAddr,
    timeout: Duration,
    mut check: impl FnMut() -> Result<()>,
) -> Result<Option<Reply>> {
    let deadline = Instant::now() + timeout;
    let q = Query::new("wait-dns.testkit.invalid.", RecordType::A);
    for _ in 0..10_000 {
        check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match udp(addr, &q, left.min(Duration::from_millis(100))) {
            Ok(r) => return Ok(Some(r)),
            Err(Error::Io(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {}
        }
    }
    Ok(None)
}

/// A blocking HTTP/1.1 GET: returns `(status, body)`. Handles `Content-Length`, chunked
/// bodies and close-delimited bodies.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_write_timeout(Some(timeout))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: sextant-testkit\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut parsed: Option<Head> = None;
    loop {
        if let Some((_, body_at, Some(len), false)) = parsed {
            if raw.len() >= body_at + len {
                break;
            }
        }
        if let Some((_, body_at, None, true)) = parsed {
            if chunked_complete(raw.get(body_at..).unwrap_or_default()) {
                break;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::timeout(
                timeout,
                format!("HTTP GET {path} from {addr}"),
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Error::timeout(
                    timeout,
                    format!("HTTP GET {path} from {addr}"),
                ))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A server that closes with our request unread sends RST after its reply.
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => return Err(e.into()),
        }
        if parsed.is_none() {
            parsed = parse_head(&raw)?;
        }
    }
    let (status, body_at, len, chunked) = match parsed {
        Some(p) => p,
        None => parse_head(&raw)?.ok_or_else(|| Error::Http("no header".into()))?,
    };
    let body = raw.get(body_at..).unwrap_or_default();
    let body = if chunked {
        dechunk(body)?
    } else if let Some(len) = len {
        body.get(..len)
            .ok_or_else(|| Error::Http("body shorter than Content-Length".into()))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Parse the status line and headers once complete: (status, body offset, content-length, chunked).
/// Parsed response head: (status, body offset, content-length, chunked).
type Head = (u16, usize, Option<usize>, bool);

fn parse_head(raw: &[u8]) -> Result<Option<Head>> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Error::Http(format!("bad status line {status_line:?}")))?;
    let mut len = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-length" {
                len = v.parse().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    Ok(Some((
        status,
        end + 4,
        if chunked { None } else { len },
        chunked,
    )))
}

fn chunked_complete(body: &[u8]) -> bool {
    dechunk_inner(body).map(|(_, done)| done).unwrap_or(true)
}

fn dechunk(body: &[u8]) -> Result<Vec<u8>> {
    dechunk_inner(body).map(|(b, _)| b)
}

/// Returns the decoded body and whether the terminating zero chunk was seen.
fn dechunk_inner(mut body: &[u8]) -> Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return Ok((out, false));
        };
        let size_s = String::from_utf8_lossy(&body[..eol]);
        let size_s = size_s
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let size = usize::from_str_radix(&size_s, 16)
            .map_err(|_| Error::Http(format!("bad chunk size {size_s:?}")))?;
        if size == 0 {
            return Ok((out, true));
        }
        let start = eol + 2;
        let Some(data) = body.get(start..start + size) else {
            return Ok((out, false));
        };
        out.extend_from_slice(data);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
}

/// The real CoreDNS binary to compare against, from the environment variable `COREDNS_BIN`
/// (tests that compare skip, saying so, when it is unset or not a file).
pub fn coredns_bin() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("COREDNS_BIN")?);
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn fake(script: &str) -> SextantBuilder {
        Sextant::builder(Path::new("/bin/sh"), ". {\n}\n")
            .conf_flag(false)
            .arg("-c")
            .arg(script)
    }

    #[test]
    fn captures_lines_and_kills_on_drop() {
        let s = fake("echo hi; echo err >&2; echo \"pwd=$(pwd)\"; echo \"X=$X\"; cat Corefile extra.txt; sleep 5")
            .env("X", "42")
            .file("extra.txt", "extra-content\n")
            .start();
        assert_eq!(s.wait_for_line("hi", Duration::from_secs(5)).unwrap(), "hi");
        s.wait_for_line("extra-content", Duration::from_secs(5))
            .unwrap();
        // stderr is read by its own thread: give it time to catch up with stdout.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.lines_of(Stream::Stderr).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(s.lines_of(Stream::Stderr), vec!["err"]);
        assert_eq!(s.count_lines("X=42"), 1);
        let pwd = s.wait_for_line("pwd=", Duration::from_secs(5)).unwrap();
        assert_eq!(
            Path::new(&pwd[4..]).canonicalize().unwrap(),
            s.dir().canonicalize().unwrap()
        );
        assert!(s.lines().contains(&". {".to_string()));
        let err = s
            .wait_for_line("never printed", Duration::from_millis(100))
            .unwrap_err();
        assert!(err.is_timeout());
        let dir = s.dir().to_path_buf();
        let pid = s.pid();
        drop(s);
        assert!(!dir.exists(), "temp dir removed");
        assert!(send_signal(pid, 0).is_err(), "process gone");
    }

    #[test]
    fn signals_exit_and_rewrite() {
        let mut s = fake("trap 'echo got-usr1' USR1; trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.05; done")
            .start();
        s.wait_for_line("ready", Duration::from_secs(5)).unwrap();
        s.signal(libc::SIGUSR1).unwrap();
        s.wait_for_line("got-usr1", Duration::from_secs(5)).unwrap();
        assert!(s.exited().is_none());
        s.rewrite_corefile("new text\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(s.corefile_path()).unwrap(),
            "new text\n"
        );
        s.signal(libc::SIGTERM).unwrap();
        let st = s.wait_exit(Duration::from_secs(5)).unwrap();
        assert_eq!(st.code(), Some(3));
        s.wait_for_line("bye", Duration::from_secs(5)).unwrap();
        // After exit, waiting for a missing line fails fast with the output.
        let err = s
            .wait_for_line("nope", Duration::from_secs(30))
            .unwrap_err();
        assert!(matches!(err, Error::Exited { .. }), "{err}");
    }

    #[test]
    fn check_collects_code_and_output() {
        // A stand-in for `sextant -conf F -check`: prints its args and the Corefile, exits 2.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fake-sextant");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho \"args: $1 $3\"\ncat \"$2\"\necho bad >&2\nexit 2\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let (code, out, err) = Sextant::check(&bin, "example.org {\n  whoami\n}\n").unwrap();
        assert_eq!(code, 2);
        assert_eq!(out, "args: -conf -check\nexample.org {\n  whoami\n}\n");
        assert_eq!(err, "bad\n");
        let (code, out, _) =
            Sextant::run_to_end(fake("echo out; exit 0"), Duration::from_secs(10)).unwrap();
        assert_eq!((code, out.as_str()), (0, "out\n"));
    }

    #[test]
    fn wait_dns_fails_fast_when_process_died() {
        let mut s = fake("exit 1").start();
        let addr = crate::free_addr();
        let start = Instant::now();
        let err = s.wait_dns(addr, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, Error::Exited { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    /// Answers one request with `resp`; keeps the connection open a while after it when
    /// `linger` (the client must not need EOF), else closes it.
    fn serve_once_with(resp: &'static [u8], linger: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            c.write_all(resp).unwrap();
            if linger {
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        addr
    }

    fn serve_once(resp: &'static [u8]) -> SocketAddr {
        serve_once_with(resp, true)
    }

    #[test]
    fn http_get_content_length_chunked_and_close() {
        let a = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
        assert_eq!(
            http_get(a, "/health", Duration::from_secs(2)).unwrap(),
            (200, "OK".into())
        );
        let a = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nkube\r\n7\r\nrnetes\n\r\n0\r\n\r\n",
        );
        assert_eq!(
            http_get(a, "/ready", Duration::from_secs(2)).unwrap(),
            (503, "kubernetes\n".into())
        );
        let addr = serve_once_with(b"HTTP/1.0 404 Not Found\r\n\r\nno such page", false);
        assert_eq!(
            http_get(addr, "/x", Duration::from_secs(2)).unwrap(),
            (404, "no such page".into())
        );
        assert!(http_get(crate::upstream::closed_port(), "/", Duration::from_secs(1)).is_err());
    }
}
