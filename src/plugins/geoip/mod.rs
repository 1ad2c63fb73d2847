//! The `geoip` plugin: looks the client's address (or, with `edns-subnet`, the address of the
//! query's EDNS Client Subnet option) up in a MaxMind `.mmdb` database and publishes what it
//! finds as `geoip/...` metadata (city, country, continent, location, postal code,
//! subdivisions, ASN) for `view`, `log`, `template` and the other metadata readers. The
//! database is read once per configuration; lookups happen only for queries of blocks that
//! also have the `metadata` plugin.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use maxminddb::{geoip2, Reader};
use sextant_corefile::{Directive, Error, Token};

use crate::log::PluginLog;
use crate::plugin::{
    BoxFuture, Handler, Metadata, MetadataProvider, Next, Outcome, Request, SetupCtx,
};

const LOG: PluginLog = PluginLog("geoip");

/// EDNS option code of Client Subnet (RFC 7871).
const ECS: u16 = 8;

/// The address probed at setup to find out whether the database's records decode.
const PROBE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One block's database and options.
pub(crate) struct GeoIp {
    reader: Reader<Vec<u8>>,
    /// The database has city records (City, Country and Enterprise types).
    city: bool,
    /// The database has ASN records (ASN and ISP types).
    asn: bool,
    /// Look up the ECS option's address when the query has one.
    edns_subnet: bool,
}

/// The schemas a database type provides, as CoreDNS's reader library (geoip2-golang v2) knows
/// them: (city, asn), or None for a type it refuses to open.
fn schemas(database_type: &str) -> Option<(bool, bool)> {
    Some(match database_type {
        "DBIP-ASN-Lite (compat=GeoLite2-ASN)" | "GeoLite2-ASN" => (false, true),
        // City lookups are allowed on Country databases, for backwards compatibility.
        "DBIP-City-Lite"
        | "DBIP-Country-Lite"
        | "DBIP-Country"
        | "DBIP-Location (compat=City)"
        | "GeoLite2-City"
        | "GeoIP-City-Redacted-US"
        | "GeoIP2-City"
        | "GeoIP2-City-Africa"
        | "GeoIP2-City-Asia-Pacific"
        | "GeoIP2-City-Europe"
        | "GeoIP2-City-North-America"
        | "GeoIP2-City-South-America"
        | "GeoIP2-Precision-City"
        | "GeoLite2-Country"
        | "GeoIP2-Country" => (true, false),
        "DBIP-ISP (compat=Enterprise)"
        | "DBIP-Location-ISP (compat=Enterprise)"
        | "GeoIP-Enterprise-Redacted-US"
        | "GeoIP2-Enterprise" => (true, false),
        "GeoIP2-ISP" | "GeoIP2-Precision-ISP" => (false, true),
        // Known types the plugin reads nothing from.
        "GeoIP-Anonymous-Plus"
        | "GeoIP2-Anonymous-IP"
        | "GeoIP2-Connection-Type"
        | "GeoIP2-Domain" => (false, false),
        _ => return None,
    })
}

pub(crate) fn setup(ctx: &mut SetupCtx<'_>, lines: &[&Directive]) -> Result<(), Error> {
    let (path, edns_subnet) = parse(lines)?;
    let g = open(&path.text, edns_subnet).map_err(|msg| lines[0].err_at(path, msg))?;
    ctx.add_handler(Arc::new(g));
    Ok(())
}

/// The database argument and the `edns-subnet` flag of the plugin's lines.
fn parse<'d>(lines: &[&'d Directive]) -> Result<(&'d Token, bool), Error> {
    let mut path: Option<&Token> = None;
    let mut edns_subnet = false;
    for d in lines {
        let Some(first) = d.args.first() else {
            return Err(d.arg_err(&d.name));
        };
        if path.is_some() {
            return Err(d.err_at(first, "configuring multiple databases is not supported"));
        }
        if let Some(last) = d.args.last().filter(|_| d.args.len() > 1) {
            return Err(d.arg_err(last));
        }
        path = Some(first);
        for sub in d.sub() {
            if sub.name.text != "edns-subnet" {
                return Err(d.err_at(&sub.name, format!("unknown property {:?}", sub.name.text)));
            }
            if let Some(extra) = sub.args.first() {
                // Caddy reads the block token by token: an argument is a property of its own.
                return Err(d.err_at(extra, format!("unknown property {:?}", extra.text)));
            }
            edns_subnet = true;
        }
    }
    // `lines` is never empty: setup runs for the plugin's lines.
    let path = path.ok_or_else(|| lines[0].arg_err(&lines[0].name))?;
    Ok((path, edns_subnet))
}

/// Reads and checks the database at `path` (relative to the working directory, as CoreDNS).
fn open(path: &str, edns_subnet: bool) -> Result<GeoIp, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("failed to open database file: open {path}: {}", io_text(&e)))?;
    let base = std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned());
    from_bytes(bytes, &base, edns_subnet)
}

/// Checks the database in `bytes` (from the file named `base`).
fn from_bytes(bytes: Vec<u8>, base: &str, edns_subnet: bool) -> Result<GeoIp, String> {
    let reader = Reader::from_source(bytes)
        .map_err(|e| format!("failed to open database file: error opening database: {e}"))?;
    let kind = reader.metadata().database_type.clone();
    let (city, asn) = schemas(&kind).ok_or_else(|| {
        format!(
            "failed to open database file: geoip2: reader does not support the {kind:?} database type"
        )
    })?;
    // Like CoreDNS, one lookup per schema at setup: a database whose records do not decode
    // fails now rather than at every query.
    let probe = |schema: &str, r: Result<(), maxminddb::MaxMindDbError>| {
        r.map_err(|e| {
            format!("unexpected failure looking up database {base:?} schema {schema:?}: {e}")
        })
    };
    if city {
        probe(
            "city",
            reader
                .lookup(PROBE)
                .and_then(|r| r.decode::<CityRecord<'_>>().map(drop)),
        )?;
    }
    if asn {
        probe(
            "asn",
            reader
                .lookup(PROBE)
                .and_then(|r| r.decode::<geoip2::Asn<'_>>().map(drop)),
        )?;
    }
    if !city && !asn {
        return Err("database does not provide any supported schema (city, asn)".into());
    }
    Ok(GeoIp {
        reader,
        city,
        asn,
        edns_subnet,
    })
}

/// An I/O error as Go words the common ones.
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => e.to_string(),
    }
}

impl GeoIp {
    /// The address to look up: the client's, or the first ECS option's with `edns-subnet`.
    /// The ECS address is taken as miekg/dns decodes it, an IPv4 one as an IPv4-mapped IPv6
    /// address (so an IPv4-only database cannot look it up, as in CoreDNS).
    fn address(&self, req: &Request) -> IpAddr {
        let client = req.client.ip().to_canonical();
        if !self.edns_subnet {
            return client;
        }
        let Some(opt) = req.msg.edns.as_ref() else {
            return client;
        };
        match opt.options.iter().find(|o| o.code == ECS) {
            Some(o) => ecs_address(&o.data).unwrap_or(client),
            None => client,
        }
    }

    fn set_city(md: &mut Metadata, c: &CityRecord<'_>) {
        let s = |v: Option<&str>| v.unwrap_or_default().to_string();
        md.set_static("geoip/city/name", s(c.city.names.en));
        md.set_static("geoip/country/name", s(c.country.names.en));
        md.set_static("geoip/continent/name", s(c.continent.names.en));
        md.set_static("geoip/country/code", s(c.country.iso_code));
        let mut subs = String::new();
        for (i, d) in c.subdivisions.iter().enumerate() {
            if i > 0 {
                subs.push(',');
            }
            subs.push_str(d.iso_code.unwrap_or_default());
        }
        md.set_static("geoip/subdivisions/code", subs);
        let eu = c.country.is_in_european_union.unwrap_or(false);
        md.set_static("geoip/country/is_in_european_union", eu.to_string());
        md.set_static("geoip/continent/code", s(c.continent.code));
        let coord = |v: Option<f64>| v.map(go_float).unwrap_or_default();
        md.set_static("geoip/latitude", coord(c.location.latitude));
        md.set_static("geoip/longitude", coord(c.location.longitude));
        md.set_static("geoip/timezone", s(c.location.time_zone));
        md.set_static("geoip/postalcode", s(c.postal.code));
    }

    fn set_asn(md: &mut Metadata, a: Option<&geoip2::Asn<'_>>) {
        let number = a.and_then(|a| a.autonomous_system_number).unwrap_or(0);
        let org = a.and_then(|a| a.autonomous_system_organization);
        md.set_static("geoip/asn/number", number.to_string());
        md.set_static("geoip/asn/org", org.unwrap_or_default().to_string());
    }
}

/// The fields of a City-schema record the labels come from (a subset of
/// `maxminddb::geoip2::City`: the record's other fields are skipped, not decoded).
#[derive(serde::Deserialize, Default)]
struct CityRecord<'a> {
    #[serde(borrow, default)]
    city: Named<'a>,
    #[serde(borrow, default)]
    continent: Continent<'a>,
    #[serde(borrow, default)]
    country: Country<'a>,
    #[serde(borrow, default)]
    location: Location<'a>,
    #[serde(borrow, default)]
    postal: Postal<'a>,
    #[serde(borrow, default)]
    subdivisions: Vec<Subdivision<'a>>,
}

#[derive(serde::Deserialize, Default)]
struct English<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

#[derive(serde::Deserialize, Default)]
struct Named<'a> {
    #[serde(borrow, default)]
    names: English<'a>,
}

#[derive(serde::Deserialize, Default)]
struct Continent<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
    #[serde(borrow, default)]
    names: English<'a>,
}

#[derive(serde::Deserialize, Default)]
struct Country<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
    #[serde(default)]
    is_in_european_union: Option<bool>,
    #[serde(borrow, default)]
    names: English<'a>,
}

#[derive(serde::Deserialize, Default)]
struct Location<'a> {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(borrow, default)]
    time_zone: Option<&'a str>,
}

#[derive(serde::Deserialize, Default)]
struct Postal<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(serde::Deserialize, Default)]
struct Subdivision<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

/// The address of an ECS option as miekg/dns decodes it: family 1 into an IPv4-mapped IPv6
/// address, family 2 as is (short addresses zero-filled), family 0 with a zero prefix as
/// `::ffff:0.0.0.0`. None for an option miekg/dns would refuse.
fn ecs_address(data: &[u8]) -> Option<IpAddr> {
    let (head, addr) = (data.get(..4)?, &data[4..]);
    let family = u16::from_be_bytes([head[0], head[1]]);
    let (source, scope) = (head[2], head[3]);
    match family {
        0 if source == 0 => Some(IpAddr::V6(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped())),
        1 if source <= 32 && scope <= 32 => {
            let mut b = [0u8; 4];
            let n = addr.len().min(4);
            b[..n].copy_from_slice(&addr[..n]);
            Some(IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped()))
        }
        2 if source <= 128 && scope <= 128 => {
            let mut b = [0u8; 16];
            let n = addr.len().min(16);
            b[..n].copy_from_slice(&addr[..n]);
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that reads back as `f`,
/// never in exponent form.
fn go_float(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    format!("{f}")
}

impl MetadataProvider for GeoIp {
    fn metadata(&self, req: &Request, md: &mut Metadata) {
        let ip = self.address(req);
        let found = match self.reader.lookup(ip) {
            Ok(r) => r,
            Err(e) => {
                LOG.debug(&format!(
                    "Setting up metadata failed due to database lookup error: {e}"
                ));
                return;
            }
        };
        if self.city {
            match found.decode::<CityRecord<'_>>() {
                Ok(c) => Self::set_city(md, &c.unwrap_or_default()),
                Err(e) => LOG.debug(&format!(
                    "Setting up city metadata failed due to database lookup error: {e}"
                )),
            }
        }
        if self.asn {
            match found.decode::<geoip2::Asn<'_>>() {
                Ok(a) => Self::set_asn(md, a.as_ref()),
                Err(e) => LOG.debug(&format!(
                    "Setting up asn metadata failed due to database lookup error: {e}"
                )),
            }
        }
    }
}

impl Handler for GeoIp {
    fn name(&self) -> &'static str {
        "geoip"
    }

    fn serve<'a>(&'a self, req: &'a mut Request, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        next.run(req)
    }

    fn metadata_provider(&self) -> Option<&dyn MetadataProvider> {
        Some(self)
    }
}

#[cfg(test)]
mod tests;
