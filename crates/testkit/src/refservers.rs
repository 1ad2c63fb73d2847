//! Reference DNS servers from Debian for differential and forwarding tests: Knot DNS
//! (authoritative, `knot` package) and Unbound (caching forwarder, `unbound` package), each
//! run in the foreground from a config in a fresh temp dir, on loopback, killed on Drop.
//! A missing binary is an error naming the package to install; tests fail, they do not skip.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::client::{udp, Query};
use crate::error::{Error, Result};
use crate::ports::free_addr;

/// Path of Debian's knotd.
pub const KNOTD: &str = "/usr/sbin/knotd";
/// Path of Debian's unbound.
pub const UNBOUND: &str = "/usr/sbin/unbound";

fn require(program: &str, package: &str) -> Result<()> {
    if Path::new(program).exists() {
        Ok(())
    } else {
        Err(Error::MissingProgram {
            program: program.into(),
            package: package.into(),
        })
    }
}

/// A running reference server: the child process, killed (SIGKILL) and reaped on Drop, with
/// its temp dir. [`Knot`] and [`Unbound`] dereference to it.
pub struct RefServer {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl RefServer {
    fn spawn(
        mut cmd: Command,
        dir: tempfile::TempDir,
        addr: SocketAddr,
        name: &str,
    ) -> Result<RefServer> {
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| Error::Command {
                command: format!("{cmd:?}"),
                detail: e.to_string(),
            })?;
        Ok(RefServer {
            child,
            dir,
            addr,
            log,
        })
    }

    /// Address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The temp dir with its config (and, for Knot, zone file and database).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Wait until `q` gets any reply; fail early if the daemon exits.
    fn wait_ready(&mut self, q: &Query, timeout: Duration, what: &str) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for _ in 0..10_000 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(Error::Exited {
                    status: st.to_string(),
                    what: what.into(),
                    output: self.log(),
                });
            }
            if Instant::now() >= deadline {
                break;
            }
            match udp(self.addr, q, Duration::from_millis(200)) {
                Ok(_) => return Ok(()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        Err(Error::timeout(
            timeout,
            format!("{what}; log:\n{}", self.log()),
        ))
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Knot DNS serving one zone on 127.0.0.1, authoritative.
///
/// ```no_run
/// use sextant_testkit::*;
/// let k = Knot::start("example.test.", "$TTL 300\n@ SOA ns hostmaster 1 7200 1800 86400 30\n@ NS ns\nns A 192.0.2.53\n").unwrap();
/// let r = udp(k.addr(), &Query::new("ns.example.test.", RecordType::A), std::time::Duration::from_secs(2)).unwrap();
/// ```
pub struct Knot {
    d: RefServer,
}

impl Knot {
    /// Start knotd for `zone_name` with `zone_text` (zone-file syntax; `$ORIGIN` is the zone)
    /// and wait (up to 10 s) until it answers the zone's SOA.
    pub fn start(zone_name: &str, zone_text: &str) -> Result<Knot> {
        Self::start_on(free_addr(), zone_name, zone_text)
    }

    /// Like [`Knot::start`], listening on `addr` (e.g. port 53 on an address inside a network
    /// namespace; start it from a thread that entered the namespace).
    pub fn start_on(addr: SocketAddr, zone_name: &str, zone_text: &str) -> Result<Knot> {
        Self::start_with(addr, zone_name, Some(zone_text), "", "")
    }

    /// Like [`Knot::start_on`] with more configuration: `top` is added at the top level of
    /// knot.conf (e.g. `remote:` and `acl:` sections), `zone_extra` inside the zone's entry
    /// (each line indented by four spaces, e.g. `"    notify: sextant\n"`). Without
    /// `zone_text` the zone has no file: a secondary zone (`master:` in `zone_extra`).
    pub fn start_with(
        addr: SocketAddr,
        zone_name: &str,
        zone_text: Option<&str>,
        top: &str,
        zone_extra: &str,
    ) -> Result<Knot> {
        require(KNOTD, "knot")?;
        let dir = tempfile::Builder::new().prefix("knot-test-").tempdir()?;
        let d = dir.path();
        let zone = zone_name.trim_end_matches('.');
        let origin = if zone.is_empty() {
            ".".to_string()
        } else {
            format!("{zone}.")
        };
        std::fs::create_dir_all(d.join("db"))?;
        if let Some(zone_text) = zone_text {
            std::fs::write(
                d.join("zone.db"),
                format!("$ORIGIN {origin}\n{zone_text}\n"),
            )?;
        }
        let conf = format!(
            "server:\n    listen: {ip}@{port}\n    rundir: \"{dir}\"\n    pidfile: \"{dir}/knot.pid\"\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             database:\n    storage: \"{dir}/db\"\n\
             control:\n    listen: \"{dir}/knot.sock\"\n\
             log:\n  - target: stderr\n    any: info\n\
             {top}\
             zone:\n  - domain: \"{origin}\"\n    storage: \"{dir}\"\n    file: \"zone.db\"\n{zone_extra}",
            ip = addr.ip(),
            port = addr.port(),
            dir = d.display(),
        );
        std::fs::write(d.join("knot.conf"), conf)?;
        let mut cmd = Command::new(KNOTD);
        cmd.arg("-c").arg(d.join("knot.conf"));
        let mut daemon = RefServer::spawn(cmd, dir, addr, "knotd")?;
        let q = Query::new(&origin, RecordType::SOA).rd(false);
        daemon.wait_ready(&q, Duration::from_secs(10), "knotd to answer")?;
        Ok(Knot { d: daemon })
    }
}

impl std::ops::Deref for Knot {
    type Target = RefServer;
    fn deref(&self) -> &RefServer {
        &self.d
    }
}

impl Knot {
    /// Runs `knotc` against this server's control socket with `args`; returns its output, or
    /// an error with it when knotc fails.
    pub fn knotc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("/usr/sbin/knotc")
            .arg("-s")
            .arg(self.dir().join("knot.sock"))
            .args(args)
            .output()
            .map_err(|e| Error::Command {
                command: format!("knotc {args:?}"),
                detail: e.to_string(),
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("knotc {args:?}"),
                detail: text,
            });
        }
        Ok(text)
    }
}

/// Unbound as a caching forwarder on 127.0.0.1 (no chroot, no daemon, no remote control,
/// no DNSSEC validation), forwarding everything to one upstream.
pub struct Unbound {
    d: RefServer,
}

impl Unbound {
    /// Start unbound forwarding `.` to `upstream`, and wait (up to 10 s) until it answers.
    pub fn start_forwarder(upstream: SocketAddr) -> Result<Unbound> {
        Self::start_forwarder_with(upstream, "")
    }

    /// Like [`Unbound::start_forwarder`], with extra `server:` clause lines (each indented
    /// by four spaces), e.g. `"    cache-max-ttl: 5\n"`.
    pub fn start_forwarder_with(upstream: SocketAddr, extra_server: &str) -> Result<Unbound> {
        require(UNBOUND, "unbound")?;
        let dir = tempfile::Builder::new().prefix("unbound-test-").tempdir()?;
        let addr = free_addr();
        let d = dir.path();
        let conf = format!(
            "server:\n    interface: {ip}\n    port: {port}\n    do-daemonize: no\n    chroot: \"\"\n    username: \"\"\n    directory: \"{dir}\"\n    pidfile: \"{dir}/unbound.pid\"\n    use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    num-threads: 1\n    do-ip6: no\n    so-reuseport: no\n    access-control: 127.0.0.0/8 allow\n    do-not-query-localhost: no\n    module-config: \"iterator\"\n    qname-minimisation: no\n    trust-anchor-signaling: no\n    root-key-sentinel: no\n    local-zone: \"test.\" nodefault\n    local-zone: \"invalid.\" nodefault\n    local-zone: \"local.\" nodefault\n{extra_server}\
             remote-control:\n    control-enable: no\n\
             forward-zone:\n    name: \".\"\n    forward-addr: {uip}@{uport}\n",
            ip = addr.ip(),
            port = addr.port(),
            dir = d.display(),
            uip = upstream.ip(),
            uport = upstream.port(),
        );
        std::fs::write(d.join("unbound.conf"), conf)?;
        let mut cmd = Command::new(UNBOUND);
        cmd.arg("-d").arg("-c").arg(d.join("unbound.conf"));
        let mut daemon = RefServer::spawn(cmd, dir, addr, "unbound")?;
        // Any reply counts (even SERVFAIL if the upstream is down): unbound is listening.
        let q = Query::new("localhost.", RecordType::A);
        daemon.wait_ready(&q, Duration::from_secs(10), "unbound to answer")?;
        Ok(Unbound { d: daemon })
    }
}

impl std::ops::Deref for Unbound {
    type Target = RefServer;
    fn deref(&self) -> &RefServer {
        &self.d
    }
}
