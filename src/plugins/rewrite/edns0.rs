//! `rewrite edns0` rules: parsing `local`, `nsid` and `subnet` with their actions and `revert`
//! (CoreDNS's error texts), applying them to the query's OPT record, and the option reverts a
//! `revert` rule hands back for the reply. No I/O.

use std::net::{IpAddr, SocketAddr};

use sextant_wire::{Edns, EdnsOption, IpNet, Message};

use super::rules::RewriteError;
use crate::plugin::Proto;

/// EDNS0 option codes (RFC 6891 registry).
pub(crate) const NSID: u16 = 3;
pub(crate) const SUBNET: u16 = 8;

/// Options miekg/dns decodes into a typed option; every other code is an `EDNS0_LOCAL`, which is
/// what a `local` rule looks for when it replaces.
const TYPED: [u16; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15];

fn is_local_code(code: u16) -> bool {
    !TYPED.contains(&code)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Set,
    Append,
    Replace,
    Unset,
}

/// Data of a `local` rule: fixed bytes or a variable filled in per query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Data {
    Bytes(Vec<u8>),
    Var(Variable),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Variable {
    Qname,
    Qtype,
    ClientIp,
    ClientPort,
    Protocol,
    ServerIp,
    ServerPort,
    /// `{plugin/label}`: a metadata label. Sextant has no metadata plugin, so it never has a
    /// value and the rule is skipped, as CoreDNS does for a label nobody provides.
    Metadata(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Edns0Rule {
    Local {
        action: Action,
        code: u16,
        data: Data,
        revert: bool,
    },
    Nsid {
        action: Action,
        revert: bool,
    },
    Subnet {
        action: Action,
        v4: u8,
        v6: u8,
        revert: bool,
    },
}

/// What a `revert` rule does to the reply's OPT (and to the query's OPT the reply echoes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Revert {
    /// The option was added: remove the first option with this code.
    Remove(u16),
    /// The option was changed: put the old one back in place of the first with its code.
    Restore(EdnsOption),
}

impl Revert {
    pub(crate) fn apply(&self, options: &mut Vec<EdnsOption>) {
        match self {
            Revert::Remove(code) => {
                if let Some(i) = options.iter().position(|o| o.code == *code) {
                    options.remove(i);
                }
            }
            Revert::Restore(old) => {
                if let Some(o) = options.iter_mut().find(|o| o.code == old.code) {
                    *o = old.clone();
                }
            }
        }
    }
}

/// Where the query came from, for variables and the client subnet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Env {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub proto: Proto,
}

/// Go's `strconv.ParseUint(s, 0, bits)`, with its error text.
pub(crate) fn parse_uint0(s: &str, bits: u32) -> Result<u64, RewriteError> {
    let syntax = || RewriteError::UintSyntax(s.to_string());
    let lower = s.to_ascii_lowercase();
    let (base, digits) = if let Some(r) = lower.strip_prefix("0x") {
        (16, r)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (2, r)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (8, r)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if s.is_empty() || digits.is_empty() {
        return Err(syntax());
    }
    if s.contains('_') && !underscore_ok(s) {
        return Err(syntax());
    }
    let mut v: u64 = 0;
    let max = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut overflow = false;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(base).ok_or_else(syntax)? as u64;
        match v.checked_mul(base as u64).and_then(|x| x.checked_add(d)) {
            Some(n) if n <= max => v = n,
            _ => overflow = true,
        }
    }
    if overflow {
        return Err(RewriteError::UintRange(s.to_string()));
    }
    Ok(v)
}

/// Go's rule for digit separators in a base-prefixed literal.
fn underscore_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Go's `hex.DecodeString`, with its error texts.
pub(crate) fn hex_decode(s: &str) -> Result<Vec<u8>, RewriteError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    let mut j = 1;
    while j < b.len() {
        let hi = hex_val(b[j - 1]).ok_or(RewriteError::HexByte(b[j - 1]))?;
        let lo = hex_val(b[j]).ok_or(RewriteError::HexByte(b[j]))?;
        out.push(hi << 4 | lo);
        j += 2;
    }
    if b.len() % 2 == 1 {
        let last = b[j - 1];
        if hex_val(last).is_none() {
            return Err(RewriteError::HexByte(last));
        }
        return Err(RewriteError::HexOddLength);
    }
    Ok(out)
}

fn parse_code(s: &str) -> Result<u16, RewriteError> {
    parse_uint0(s, 16).map(|v| v as u16)
}

fn parse_variable(v: &str) -> Option<Variable> {
    Some(match v {
        "{qname}" => Variable::Qname,
        "{qtype}" => Variable::Qtype,
        "{client_ip}" => Variable::ClientIp,
        "{client_port}" => Variable::ClientPort,
        "{protocol}" => Variable::Protocol,
        "{server_ip}" => Variable::ServerIp,
        "{server_port}" => Variable::ServerPort,
        _ => {
            let label = v.strip_prefix('{')?.strip_suffix('}')?;
            let p = label.find('/')?;
            if p == 0 || p >= label.len() - 1 {
                return None;
            }
            Variable::Metadata(label.to_string())
        }
    })
}

impl Edns0Rule {
    /// Parses the words after `edns0`.
    pub(crate) fn parse(args: &[String]) -> Result<Edns0Rule, RewriteError> {
        if args.len() < 2 {
            return Err(RewriteError::Edns0TooFew);
        }
        let rule_type = args[0].to_ascii_lowercase();
        let action = match args[1].to_ascii_lowercase().as_str() {
            "append" => Action::Append,
            "replace" => Action::Replace,
            "set" => Action::Set,
            "unset" => return Self::parse_unset(&rule_type, args),
            other => return Err(RewriteError::Edns0Action(other.to_string())),
        };
        let mut args = args;
        let revert = args.last().is_some_and(|a| a == "revert");
        if revert {
            args = &args[..args.len() - 1];
        }
        match rule_type.as_str() {
            "local" => {
                if args.len() != 4 {
                    return Err(RewriteError::Edns0ThreeOrFour("local"));
                }
                let data = &args[3];
                let data = if data.starts_with('{') && data.ends_with('}') {
                    let code = parse_code(&args[2])?;
                    let var = parse_variable(data)
                        .ok_or_else(|| RewriteError::Edns0Variable(data.clone()))?;
                    return Ok(Edns0Rule::Local {
                        action,
                        code,
                        data: Data::Var(var),
                        revert,
                    });
                } else {
                    data
                };
                let code = parse_code(&args[2])?;
                let bytes = match data.strip_prefix("0x") {
                    Some(h) => hex_decode(h)?,
                    None => data.as_bytes().to_vec(),
                };
                Ok(Edns0Rule::Local {
                    action,
                    code,
                    data: Data::Bytes(bytes),
                    revert,
                })
            }
            "nsid" => {
                if args.len() != 2 {
                    return Err(RewriteError::Edns0Nsid);
                }
                Ok(Edns0Rule::Nsid { action, revert })
            }
            "subnet" => {
                if args.len() != 4 {
                    return Err(RewriteError::Edns0ThreeOrFour("subnet"));
                }
                let v4 = parse_uint0(&args[2], 16)?;
                if v4 > 32 {
                    return Err(RewriteError::Edns0V4Mask(v4));
                }
                let v6 = parse_uint0(&args[3], 16)?;
                if v6 > 128 {
                    return Err(RewriteError::Edns0V6Mask(v6));
                }
                Ok(Edns0Rule::Subnet {
                    action,
                    v4: v4 as u8,
                    v6: v6 as u8,
                    revert,
                })
            }
            _ => Err(RewriteError::Edns0RuleType(rule_type.to_string())),
        }
    }

    fn parse_unset(rule_type: &str, args: &[String]) -> Result<Edns0Rule, RewriteError> {
        match rule_type {
            "local" => {
                if args.len() != 3 {
                    return Err(RewriteError::Edns0Unset("local", "two arguments"));
                }
                Ok(Edns0Rule::Local {
                    action: Action::Unset,
                    code: parse_code(&args[2])?,
                    data: Data::Bytes(Vec::new()),
                    revert: false,
                })
            }
            "nsid" => {
                if args.len() != 2 {
                    return Err(RewriteError::Edns0Unset("nsid", "one argument"));
                }
                Ok(Edns0Rule::Nsid {
                    action: Action::Unset,
                    revert: false,
                })
            }
            "subnet" => {
                if args.len() != 2 {
                    return Err(RewriteError::Edns0Unset("subnet", "one argument"));
                }
                Ok(Edns0Rule::Subnet {
                    action: Action::Unset,
                    v4: 0,
                    v6: 0,
                    revert: false,
                })
            }
            _ => Err(RewriteError::Edns0RuleType(rule_type.to_string())),
        }
    }

    /// The option code this rule adds to the codes a reply may echo (CoreDNS registers every
    /// `local` code, unset ones too, as a supported option; NSID always is).
    pub(crate) fn echo_code(&self) -> Option<u16> {
        match self {
            Edns0Rule::Local { code, .. } => Some(*code),
            Edns0Rule::Nsid { .. } => Some(NSID),
            Edns0Rule::Subnet { .. } => None,
        }
    }

    /// Applies the rule to the query. `None`: ignored; `Some(reverts)`: done, with what to undo
    /// in the reply.
    pub(crate) fn rewrite(&self, msg: &mut Message, env: &Env) -> Option<Vec<Revert>> {
        match self {
            Edns0Rule::Local {
                action,
                code,
                data,
                revert,
            } => {
                let (bytes, from_var) = match data {
                    Data::Bytes(b) => (b.clone(), false),
                    Data::Var(v) => (variable_data(v, msg, env)?, true),
                };
                let opts = &mut setup_opt(msg).options;
                if *action == Action::Unset {
                    opts.retain(|o| o.code != *code);
                    return Some(Vec::new());
                }
                let mut out = Vec::new();
                if let Some(o) = opts
                    .iter_mut()
                    .find(|o| o.code == *code && is_local_code(o.code))
                {
                    if matches!(action, Action::Replace | Action::Set) {
                        if *revert {
                            out.push(Revert::Restore(o.clone()));
                        }
                        o.data = bytes;
                        return Some(out);
                    }
                    // A variable rule stops at the first option with its code; a fixed one
                    // appends another (CoreDNS does both).
                    if from_var {
                        return None;
                    }
                }
                add(opts, *action, *code, bytes, *revert)
            }
            Edns0Rule::Nsid { action, revert } => {
                let opts = &mut setup_opt(msg).options;
                if *action == Action::Unset {
                    opts.retain(|o| o.code != NSID);
                    return Some(Vec::new());
                }
                if let Some(o) = opts.iter_mut().find(|o| o.code == NSID) {
                    if matches!(action, Action::Replace | Action::Set) {
                        let mut out = Vec::new();
                        if *revert {
                            out.push(Revert::Restore(o.clone()));
                        }
                        o.data.clear();
                        return Some(out);
                    }
                }
                add(opts, *action, NSID, Vec::new(), *revert)
            }
            Edns0Rule::Subnet {
                action,
                v4,
                v6,
                revert,
            } => {
                let ecs = subnet_data(env.client.ip(), *v4, *v6);
                let opts = &mut setup_opt(msg).options;
                if *action == Action::Unset {
                    opts.retain(|o| o.code != SUBNET);
                    return Some(Vec::new());
                }
                if let Some(o) = opts.iter_mut().find(|o| o.code == SUBNET) {
                    if matches!(action, Action::Replace | Action::Set) {
                        let mut out = Vec::new();
                        if *revert {
                            out.push(Revert::Restore(o.clone()));
                        }
                        o.data = ecs;
                        return Some(out);
                    }
                    return None;
                }
                add(opts, *action, SUBNET, ecs, *revert)
            }
        }
    }
}

fn add(
    opts: &mut Vec<EdnsOption>,
    action: Action,
    code: u16,
    data: Vec<u8>,
    revert: bool,
) -> Option<Vec<Revert>> {
    if matches!(action, Action::Append | Action::Set) {
        opts.push(EdnsOption { code, data });
        return Some(if revert {
            vec![Revert::Remove(code)]
        } else {
            Vec::new()
        });
    }
    None
}

/// The query's OPT record, created (4096 bytes, DO clear) if it has none, as CoreDNS does.
fn setup_opt(msg: &mut Message) -> &mut Edns {
    msg.edns.get_or_insert_with(|| Edns::new(4096))
}

/// An IPv4-mapped IPv6 address counts as IPv4 (Go's `To4`).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The ip in the client's family: 4 bytes for an IPv4 client, 16 for an IPv6 one.
fn ip_wire(client: IpAddr, ip: IpAddr) -> Vec<u8> {
    match (canonical(client), canonical(ip)) {
        (IpAddr::V4(_), IpAddr::V4(a)) => a.octets().to_vec(),
        // Go's To4 of an IPv6 address is nil: no bytes.
        (IpAddr::V4(_), IpAddr::V6(_)) => Vec::new(),
        (IpAddr::V6(_), IpAddr::V4(a)) => a.to_ipv6_mapped().octets().to_vec(),
        (IpAddr::V6(_), IpAddr::V6(a)) => a.octets().to_vec(),
    }
}

fn variable_data(v: &Variable, msg: &Message, env: &Env) -> Option<Vec<u8>> {
    let q = msg.question()?;
    let data = match v {
        Variable::Qname => q.name.to_string().into_bytes(),
        Variable::Qtype => q.qtype.0.to_be_bytes().to_vec(),
        Variable::ClientIp => ip_wire(env.client.ip(), env.client.ip()),
        Variable::ServerIp => ip_wire(env.client.ip(), env.local.ip()),
        Variable::ClientPort => env.client.port().to_be_bytes().to_vec(),
        Variable::ServerPort => env.local.port().to_be_bytes().to_vec(),
        Variable::Protocol => env.proto.as_str().as_bytes().to_vec(),
        Variable::Metadata(_) => return None,
    };
    // Go treats a nil slice (an IPv6 server address for an IPv4 client) as no data.
    if data.is_empty() && matches!(v, Variable::ServerIp) {
        return None;
    }
    Some(data)
}

/// ECS option data for the client's address: family, source prefix, scope 0, the address masked
/// and cut to the prefix's bytes.
pub(crate) fn subnet_data(client: IpAddr, v4: u8, v6: u8) -> Vec<u8> {
    let ip = canonical(client);
    let (family, bits) = if ip.is_ipv4() { (1u16, v4) } else { (2, v6) };
    // Prefix lengths were checked against the family when the rule was parsed.
    let net = IpNet::new(ip, bits).map_or(ip, |n| n.addr());
    let addr = match net {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut out = family.to_be_bytes().to_vec();
    out.push(bits);
    out.push(0);
    out.extend(addr.iter().take((bits as usize).div_ceil(8)));
    out
}
