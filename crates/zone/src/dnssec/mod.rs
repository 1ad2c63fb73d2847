//! DNSSEC for Sextant's zones and replies: signing keys from BIND key files, DS digests and key
//! tags ([`keys`]), the canonical form of RRsets and the RRSIG/NSEC records ([`sign`]), whole-zone
//! signing with an NSEC chain ([`zone_sign`]), the signing schedule's check of a signed zone
//! file ([`resign_reason`]) and the presentation format of DNSSEC records ([`text`]). The
//! cryptography is `ring`'s. No network I/O.

pub mod keys;
pub mod sign;
pub mod text;
pub mod zone_sign;

pub use keys::{algorithm_name, ds_rdata, key_tag, verify_bytes, SignError, SigningKey};
pub use sign::{
    canonical_rdata, covered_type, nsec_rdata, nsec_record, rrsig_labels, sign_rrset, signed_data,
    verify_rrsig, RrsigHead, SigParams,
};
pub use text::{bitmap_types, rdata_text, record_text, sig_time_string};
pub use zone_sign::{keys_for, sign_zone, split_keys, ZoneSigning};

use sextant_wire::{Name, RData, RType, Record};

/// Why a signed zone file must be signed again (CoreDNS `sign`'s schedule), judged on the
/// signatures of its SOA among the first 100 records at `now` (seconds since 1970).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resign {
    /// Signed longer ago than `resign_after` seconds: the inception time.
    Old { inception: u32 },
    /// An inception in the future.
    Future { inception: u32 },
    /// Expiring within `expire_within` seconds: the expiration time.
    Expiring { expiration: u32 },
    /// No SOA signature among the first 100 records.
    NoSoaSig,
    /// The file does not parse.
    Parse(String),
}

/// Checks the text of a signed zone file: None when its SOA signatures were made less than
/// `resign_after` seconds before `now` and expire more than `expire_within` seconds after it.
/// The check ends at the first record after the SOA signatures (CoreDNS reads on and, in a zone
/// of more than 100 records, always finds a reason to sign again).
pub fn resign_reason(
    text: &str,
    file: &str,
    now: i64,
    resign_after: i64,
    expire_within: i64,
) -> Option<Resign> {
    let mut seen = 0usize;
    let mut sig_seen = false;
    let mut verdict: Option<Resign> = None;
    let stop = "\u{0}stop";
    let r = crate::parse_zone(text, &Name::root(), file, None, &mut |rec: Record| {
        if let (RType::RRSIG, RData::Unknown(d)) = (rec.rtype, &rec.data) {
            if let Some((h, _)) = RrsigHead::parse(d) {
                if h.type_covered == RType::SOA {
                    let incep = h.inception as i64;
                    let expir = h.expiration as i64;
                    if now - incep >= 0 && now - incep > resign_after {
                        verdict = Some(Resign::Old {
                            inception: h.inception,
                        });
                    } else if now - incep < 0 {
                        verdict = Some(Resign::Future {
                            inception: h.inception,
                        });
                    } else if expir - now < expire_within {
                        verdict = Some(Resign::Expiring {
                            expiration: h.expiration,
                        });
                    }
                    if verdict.is_some() {
                        return Err(stop.to_string());
                    }
                    sig_seen = true;
                    return Ok(());
                }
            }
        }
        if sig_seen {
            // Every SOA signature (they follow the SOA) was good.
            return Err(stop.to_string());
        }
        seen += 1;
        if seen > 100 {
            verdict = Some(Resign::NoSoaSig);
            return Err(stop.to_string());
        }
        Ok(())
    });
    match r {
        Err(e) if e.msg == stop => verdict,
        Err(e) => Some(Resign::Parse(e.to_string())),
        Ok(()) => verdict,
    }
}

#[cfg(test)]
mod tests;
