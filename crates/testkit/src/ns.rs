//! Network namespaces for tests (node-cache and multi-host setups): creates uniquely named
//! namespaces with `ip netns add`, runs commands inside them, and links them to the root
//! namespace with a veth pair. Touches only namespaces and veth links it created itself;
//! everything is deleted on Drop. Needs root and iproute2 (`ip`).

use std::ffi::OsStr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

/// Path of iproute2's `ip`.
pub const IP: &str = "/usr/sbin/ip";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}-{n}", std::process::id())
}

/// Run `ip ARGS...` and fail with its stderr if it exits non-zero.
fn ip<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    if !std::path::Path::new(IP).exists() {
        return Err(Error::MissingProgram {
            program: IP.into(),
            package: "iproute2".into(),
        });
    }
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new(IP).args(&args).stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            command: format!(
                "ip {}",
                args.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// A network namespace created by the test, deleted on Drop. Its loopback is up.
///
/// ```no_run
/// use sextant_testkit::NetNs;
/// let ns = NetNs::create("cache").unwrap();
/// let veth = ns.add_veth("169.254.99.1/30", "169.254.99.2/30").unwrap();
/// let out = ns.exec("ip", &["-4", "addr"]).unwrap();
/// assert!(String::from_utf8_lossy(&out.stdout).contains("169.254.99.2"));
/// ```
#[derive(Debug)]
pub struct NetNs {
    name: String,
    veths: std::sync::Mutex<Vec<String>>,
}

/// A veth pair between the root namespace and a [`NetNs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    /// Interface name in the root namespace.
    pub host_if: String,
    /// Interface name inside the namespace.
    pub ns_if: String,
    /// Address (CIDR) on the root side.
    pub host_addr: String,
    /// Address (CIDR) inside the namespace.
    pub ns_addr: String,
}

impl NetNs {
    /// Create `<prefix>-<pid>-<n>` (`ip netns add`) and bring its `lo` up.
    pub fn create(name_prefix: &str) -> Result<NetNs> {
        let name = format!("{name_prefix}-{}", unique_suffix());
        ip(["netns", "add", &name])?;
        let ns = NetNs {
            name,
            veths: std::sync::Mutex::new(Vec::new()),
        };
        ns.exec_ok(IP, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program args...` inside the namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(IP);
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    /// Run `program args...` inside the namespace and return its output (whatever its status).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        Ok(self.command(program, args).stdin(Stdio::null()).output()?)
    }

    /// Like [`NetNs::exec`], but a non-zero exit is an error carrying stderr.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = self.exec(program, args)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(Error::Command {
                command: format!("ip netns exec {} {program} {}", self.name, args.join(" ")),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    }

    /// Start `program args...` inside the namespace in the background (caller owns the child
    /// and must kill it).
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Child> {
        Ok(self.command(program, args).stdin(Stdio::null()).spawn()?)
    }

    /// Create a veth pair, move one end into this namespace, give both ends the given
    /// addresses (CIDR, e.g. `"169.254.99.1/30"` for the root side and `"169.254.99.2/30"`
    /// inside) and bring them up. Use link-local or documentation ranges that the host
    /// does not use. Both ends disappear when the namespace is dropped.
    pub fn add_veth(&self, host_addr: &str, ns_addr: &str) -> Result<Veth> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Interface names are limited to 15 bytes.
        let tag = format!("{:x}{:x}", std::process::id() % 0xfffff, n);
        let host_if = format!("tkh{}", &tag[..tag.len().min(11)]);
        let ns_if = format!("tkn{}", &tag[..tag.len().min(11)]);
        ip([
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &self.name,
        ])?;
        if let Ok(mut v) = self.veths.lock() {
            v.push(host_if.clone());
        }
        ip(["addr", "add", host_addr, "dev", &host_if])?;
        ip(["link", "set", &host_if, "up"])?;
        self.exec_ok(IP, &["addr", "add", ns_addr, "dev", &ns_if])?;
        self.exec_ok(IP, &["link", "set", &ns_if, "up"])?;
        Ok(Veth {
            host_if,
            ns_if,
            host_addr: host_addr.into(),
            ns_addr: ns_addr.into(),
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(v) = self.veths.lock() {
            for host_if in v.iter() {
                let _ = ip(["link", "del", host_if.as_str()]);
            }
        }
        let _ = ip(["netns", "del", self.name.as_str()]);
    }
}
