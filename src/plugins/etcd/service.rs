//! The SkyDNS record a value under the etcd path holds (CoreDNS `plugin/etcd/msg`): its JSON
//! decoding with Go's `encoding/json` rules, the DNS name ↔ etcd key mapping, what the `host`
//! field stands for, and the `group` selection. No I/O.

use std::net::IpAddr;

use serde_json::Value;
use sextant_wire::Name;

/// One SkyDNS service, the JSON value of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Service {
    pub host: String,
    pub port: i64,
    pub priority: i64,
    pub weight: i64,
    pub text: String,
    pub mail: bool,
    pub ttl: u32,
    pub target_strip: i64,
    pub group: String,
    /// The etcd key the value was found under.
    pub key: String,
}

/// What `host` holds (CoreDNS `Service.HostType`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostType {
    /// A name: a CNAME (or the target of SRV/MX/PTR).
    Name,
    /// Not an address, with text: a TXT record.
    Txt,
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
}

impl Service {
    /// Decodes a value the way Go's `json.Unmarshal` fills CoreDNS's `msg.Service`: field
    /// names matched without regard to case, unknown fields ignored, `null` leaves a field
    /// alone, a value of the wrong JSON type (or an integer out of range) is an error.
    pub(crate) fn from_json(bytes: &[u8]) -> Result<Service, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
        let mut s = Service::default();
        let obj = match v {
            Value::Null => return Ok(s),
            Value::Object(o) => o,
            other => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go value of type msg.Service",
                    go_kind(&other)
                ))
            }
        };
        for (k, v) in obj {
            if v.is_null() {
                continue;
            }
            let field = k.to_ascii_lowercase();
            let bad = |want: &str| {
                format!(
                    "json: cannot unmarshal {} into Go struct field Service.{field} of type {want}",
                    go_kind(&v)
                )
            };
            match field.as_str() {
                "host" | "text" | "group" => {
                    let Value::String(t) = &v else {
                        return Err(bad("string"));
                    };
                    match field.as_str() {
                        "host" => s.host = t.clone(),
                        "text" => s.text = t.clone(),
                        _ => s.group = t.clone(),
                    }
                }
                "port" | "priority" | "weight" | "targetstrip" => {
                    let n = v.as_i64().ok_or_else(|| bad("int"))?;
                    match field.as_str() {
                        "port" => s.port = n,
                        "priority" => s.priority = n,
                        "weight" => s.weight = n,
                        _ => s.target_strip = n,
                    }
                }
                "ttl" => {
                    s.ttl = v
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| bad("uint32"))?
                }
                "mail" => s.mail = v.as_bool().ok_or_else(|| bad("bool"))?,
                _ => {}
            }
        }
        Ok(s)
    }

    /// What the host field stands for.
    pub(crate) fn host_type(&self) -> HostType {
        match parse_ip(&self.host) {
            None if self.text.is_empty() => HostType::Name,
            None => HostType::Txt,
            Some(IpAddr::V4(a)) => HostType::A(a),
            Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => HostType::A(v4),
                None => HostType::Aaaa(a),
            },
        }
    }

    /// True when `host` is an address.
    pub(crate) fn host_is_ip(&self) -> bool {
        parse_ip(&self.host).is_some()
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The labels of `name` in presentation form, lower-cased, root last omitted (Go
/// `dns.SplitDomainName` of the lower-cased name).
pub(crate) fn labels_of(name: &Name) -> Vec<String> {
    let mut out = Vec::with_capacity(name.label_count());
    for l in name.labels() {
        let mut s = String::new();
        let _ = sextant_wire::name::write_label(&mut s, l);
        out.push(s.to_ascii_lowercase());
    }
    out
}

/// Go's `path.Clean` of an absolute path.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The etcd key of `name` under `prefix` (CoreDNS `msg.Path`): `a.b.example.` under `skydns`
/// is `/skydns/example/b/a`.
pub(crate) fn path(name: &Name, prefix: &str) -> String {
    let mut l = labels_of(name);
    l.reverse();
    clean(&format!("/{prefix}/{}", l.join("/")))
}

/// As [`path`], but cut before the first `*` or `any` label; true when it was cut (CoreDNS
/// `msg.PathWithWildcard`).
pub(crate) fn path_with_wildcard(name: &Name, prefix: &str) -> (String, bool) {
    let mut l = labels_of(name);
    l.reverse();
    let mut star = false;
    if let Some(i) = l.iter().position(|s| s == "*" || s == "any") {
        l.truncate(i);
        star = true;
    }
    (clean(&format!("/{prefix}/{}", l.join("/"))), star)
}

/// The DNS name of an etcd key (CoreDNS `msg.Domain`): the path's segments after the first
/// one, reversed.
pub(crate) fn domain(key: &str) -> String {
    let mut l: Vec<&str> = key.split('/').collect();
    if l.last() == Some(&"") {
        l.pop();
    }
    let rest: Vec<&str> = l.iter().skip(2).rev().copied().collect();
    match rest.split_last() {
        None => ".".to_string(),
        Some((&".", head)) => format!("{}.", head.join(".")),
        Some(_) => {
            let s = rest.join(".");
            if s.ends_with('.') {
                s
            } else {
                format!("{s}.")
            }
        }
    }
}

/// `name` without its `n` leftmost labels; unchanged when that would leave nothing
/// (CoreDNS `targetStrip`).
pub(crate) fn target_strip(name: &Name, n: i64) -> Name {
    if n <= 0 || n as usize >= name.label_count() {
        return name.clone();
    }
    let labels: Vec<&[u8]> = name.labels().skip(n as usize).collect();
    Name::from_labels(labels).unwrap_or_else(|_| name.clone())
}

/// Keeps the services of the group the shortest keys name (CoreDNS `msg.Group`).
pub(crate) fn group(sx: Vec<Service>) -> Vec<Service> {
    if sx.is_empty() {
        return sx;
    }
    let mut group = sx[0].group.clone();
    let mut slashes = sx[0].key.matches('/').count();
    let mut length = vec![0usize; sx.len()];
    for (i, s) in sx.iter().enumerate() {
        let x = s.key.matches('/').count();
        length[i] = x;
        if x < slashes {
            if s.group.is_empty() {
                break;
            }
            slashes = x;
            group = s.group.clone();
        }
    }
    if group.is_empty() {
        return sx;
    }
    let mut ret = Vec::new();
    for (i, s) in sx.iter().enumerate() {
        if s.group.is_empty() {
            ret.push(s.clone());
            continue;
        }
        if length[i] == slashes && s.group != group {
            return sx;
        }
        if s.group == group {
            ret.push(s.clone());
        }
    }
    ret
}

/// TXT strings of at most 255 bytes (CoreDNS `split255`).
pub(crate) fn split255(s: &str) -> Vec<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() < 255 {
        return vec![b.to_vec()];
    }
    let mut out: Vec<Vec<u8>> = b.chunks(255).map(<[u8]>::to_vec).collect();
    if b.len() % 255 == 0 {
        // Go's loop ends with the empty rest when the length is a multiple of 255.
        out.push(Vec::new());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn decodes_like_go() {
        let s = Service::from_json(
            br#"{"Host":"10.0.0.1","port":8080,"PRIORITY":5,"weight":2,"text":"t","mail":true,"ttl":60,"targetstrip":1,"group":"g","other":[1]}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Service {
                host: "10.0.0.1".into(),
                port: 8080,
                priority: 5,
                weight: 2,
                text: "t".into(),
                mail: true,
                ttl: 60,
                target_strip: 1,
                group: "g".into(),
                key: String::new(),
            }
        );
        assert_eq!(Service::from_json(b"null").unwrap(), Service::default());
        assert_eq!(
            Service::from_json(br#"{"host":null}"#).unwrap(),
            Service::default()
        );
        for bad in [
            &br#"{"port":"80"}"#[..],
            br#"{"port":1.5}"#,
            br#"{"ttl":-1}"#,
            br#"{"ttl":4294967296}"#,
            br#"{"mail":1}"#,
            br#"{"host":1}"#,
            br#"[1]"#,
            br#"{"host":"#,
        ] {
            assert!(
                Service::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            Service::from_json(br#"{"port":"80"}"#).unwrap_err(),
            "json: cannot unmarshal string into Go struct field Service.port of type int"
        );
    }

    #[test]
    fn host_types() {
        let h = |host: &str, text: &str| {
            Service {
                host: host.into(),
                text: text.into(),
                ..Service::default()
            }
            .host_type()
        };
        assert_eq!(h("10.0.0.1", ""), HostType::A("10.0.0.1".parse().unwrap()));
        assert_eq!(
            h("::ffff:10.0.0.1", ""),
            HostType::A("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            h("2003::8:1", ""),
            HostType::Aaaa("2003::8:1".parse().unwrap())
        );
        assert_eq!(h("a.example", ""), HostType::Name);
        assert_eq!(h("a.example", "t"), HostType::Txt);
        assert_eq!(h("", "t"), HostType::Txt);
        assert_eq!(h("", ""), HostType::Name);
    }

    #[test]
    fn paths_and_domains() {
        assert_eq!(
            path(&n("Service.Staging.skydns.local."), "skydns"),
            "/skydns/local/skydns/staging/service"
        );
        assert_eq!(path(&n("."), "skydns"), "/skydns");
        assert_eq!(path(&n("a.b."), "/skydns/"), "/skydns/b/a");
        assert_eq!(path(&n("a.b."), "x/y"), "/x/y/b/a");
        assert_eq!(path(&n("a.*.b."), "skydns"), "/skydns/b/*/a");
        assert_eq!(
            path_with_wildcard(&n("a.*.skydns.local."), "skydns"),
            ("/skydns/local/skydns".to_string(), true)
        );
        assert_eq!(
            path_with_wildcard(&n("any.b.c."), "skydns"),
            ("/skydns/c/b".to_string(), true)
        );
        assert_eq!(domain("/skydns/local/skydns/x5"), "x5.skydns.local.");
        assert_eq!(domain("/skydns/local/skydns/"), "skydns.local.");
        assert_eq!(domain("/skydns/local"), "local.");
        assert_eq!(
            target_strip(&n("a.b.c."), 1).to_string(),
            n("b.c.").to_string()
        );
        assert_eq!(target_strip(&n("a.b.c."), 3), n("a.b.c."));
        assert_eq!(target_strip(&n("a.b.c."), 0), n("a.b.c."));
    }

    fn sg(key: &str, group: &str) -> Service {
        Service {
            key: key.into(),
            group: group.into(),
            host: key.into(),
            ..Service::default()
        }
    }

    #[test]
    fn groups() {
        let keys = |v: Vec<Service>| v.into_iter().map(|s| s.key).collect::<Vec<_>>();
        // The shortest key's group selects; entries without a group stay.
        let sx = vec![
            sg("/skydns/a/b", "g1"),
            sg("/skydns/a/b/c", "g1"),
            sg("/skydns/a/b/d", "g2"),
            sg("/skydns/a/b/e", ""),
        ];
        assert_eq!(
            keys(group(sx)),
            ["/skydns/a/b", "/skydns/a/b/c", "/skydns/a/b/e"]
        );
        // Disagreement on the shortest level: everything.
        let sx = vec![sg("/skydns/a/b", "g1"), sg("/skydns/a/c", "g2")];
        assert_eq!(keys(group(sx)).len(), 2);
        // No group at all.
        let sx = vec![sg("/skydns/a/b", ""), sg("/skydns/a/c/d", "g2")];
        assert_eq!(keys(group(sx)).len(), 2);
    }

    #[test]
    fn txt_split() {
        assert_eq!(split255("abc"), vec![b"abc".to_vec()]);
        let long = "x".repeat(600);
        let parts = split255(&long);
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert_eq!(split255(&"y".repeat(255)), vec![vec![b'y'; 255], vec![]]);
    }
}
