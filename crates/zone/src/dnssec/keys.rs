//! DNSSEC signing keys from BIND's key files (`K<name>+<alg>+<id>.key` with the DNSKEY record,
//! `.private` in `Private-key-format: v1.x`), the key tag (RFC 4034 Appendix B), DS digests
//! (RFC 4509, RFC 4034 §5.1.4) and the signature primitives of algorithms 8, 10, 13, 14 and 15
//! through `ring`. Every error names `file:line:col`. No network I/O.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use sextant_wire::{Name, RType, Record};

use crate::codec::base64_decode;
use crate::ZoneError;

/// RSA/SHA-256 (RFC 5702).
pub const RSASHA256: u8 = 8;
/// RSA/SHA-512 (RFC 5702).
pub const RSASHA512: u8 = 10;
/// ECDSA P-256 with SHA-256 (RFC 6605).
pub const ECDSAP256SHA256: u8 = 13;
/// ECDSA P-384 with SHA-384 (RFC 6605).
pub const ECDSAP384SHA384: u8 = 14;
/// Ed25519 (RFC 8080).
pub const ED25519: u8 = 15;

/// DNSKEY flag: zone key (bit 7).
pub const FLAG_ZONE: u16 = 0x0100;
/// DNSKEY flag: secure entry point (bit 15).
pub const FLAG_SEP: u16 = 0x0001;

/// The key tag of DNSKEY record data (RFC 4034 Appendix B; algorithm 1 is not supported here).
pub fn key_tag(dnskey: &[u8]) -> u16 {
    let mut ac: u32 = 0;
    for (i, &b) in dnskey.iter().enumerate() {
        ac += if i & 1 == 1 {
            b as u32
        } else {
            (b as u32) << 8
        };
    }
    ac += (ac >> 16) & 0xffff;
    (ac & 0xffff) as u16
}

/// DS record data for a DNSKEY (`digest_type` 1: SHA-1, 2: SHA-256, 4: SHA-384); None for
/// another digest type.
pub fn ds_rdata(owner: &Name, dnskey: &[u8], digest_type: u8) -> Option<Vec<u8>> {
    let alg = match digest_type {
        1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        2 => &ring::digest::SHA256,
        4 => &ring::digest::SHA384,
        _ => return None,
    };
    let mut ctx = ring::digest::Context::new(alg);
    ctx.update(owner.to_lowercase().wire());
    ctx.update(dnskey);
    let digest = ctx.finish();
    let mut out = Vec::with_capacity(4 + digest.as_ref().len());
    out.extend_from_slice(&key_tag(dnskey).to_be_bytes());
    out.push(*dnskey.get(3)?);
    out.push(digest_type);
    out.extend_from_slice(digest.as_ref());
    Some(out)
}

/// The algorithm mnemonic used in key files and logs.
pub fn algorithm_name(alg: u8) -> &'static str {
    match alg {
        5 => "RSASHA1",
        7 => "RSASHA1NSEC3SHA1",
        RSASHA256 => "RSASHA256",
        RSASHA512 => "RSASHA512",
        ECDSAP256SHA256 => "ECDSAP256SHA256",
        ECDSAP384SHA384 => "ECDSAP384SHA384",
        ED25519 => "ED25519",
        16 => "ED448",
        _ => "unknown",
    }
}

enum Private {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
}

/// A key that signs: its DNSKEY record and the private half.
pub struct SigningKey {
    /// The DNSKEY record as read from the `.key` file (owner, TTL: 3600 unless the file says).
    pub dnskey: Record,
    /// The DNSKEY record data (flags, protocol, algorithm, public key).
    pub rdata: Vec<u8>,
    pub flags: u16,
    pub algorithm: u8,
    pub tag: u16,
    private: Private,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("owner", &self.dnskey.name)
            .field("flags", &self.flags)
            .field("algorithm", &self.algorithm)
            .field("tag", &self.tag)
            .finish()
    }
}

/// Why a signature could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

fn err(file: &str, line: usize, col: usize, msg: impl Into<String>) -> ZoneError {
    ZoneError {
        file: file.to_string(),
        line,
        col,
        msg: msg.into(),
    }
}

impl SigningKey {
    /// A key from the text of its `.key` file (`public_file` names it in errors) and of its
    /// `.private` file. The `.key` file holds one DNSKEY record in zone-file syntax (comments
    /// allowed, TTL 3600 when none is given, as miekg/dns reads it); the `.private` file
    /// `Private-key-format: v1.2` or `v1.3`, an `Algorithm:` line matching the DNSKEY's and the
    /// algorithm's fields (`PrivateKey:` for ECDSA and Ed25519; `Modulus:`, `PublicExponent:`,
    /// `PrivateExponent:`, `Prime1:`, `Prime2:`, `Exponent1:`, `Exponent2:`, `Coefficient:` for
    /// RSA). Other lines (`Created:`, `Publish:`...) are ignored.
    pub fn from_files(
        public_text: &str,
        public_file: &str,
        private_text: &str,
        private_file: &str,
    ) -> Result<SigningKey, ZoneError> {
        let mut found: Vec<(Record, usize)> = Vec::new();
        let mut line_no = 0usize;
        crate::parse::parse_records_default_ttl(
            public_text,
            &Name::root(),
            public_file,
            3600,
            &mut |r, line| {
                line_no = line;
                found.push((r, line));
                Ok(())
            },
        )?;
        let (dnskey, kline) = match found.len() {
            0 => return Err(err(public_file, 0, 0, "no DNSKEY record found")),
            1 => found.remove(0),
            _ => {
                return Err(err(
                    public_file,
                    found[1].1,
                    1,
                    "more than one record: a key file holds one DNSKEY",
                ))
            }
        };
        if dnskey.rtype != RType::DNSKEY {
            return Err(err(
                public_file,
                kline,
                1,
                format!(
                    "the record is a {}, not a DNSKEY",
                    crate::rtype_name(dnskey.rtype)
                ),
            ));
        }
        let rdata = match &dnskey.data {
            sextant_wire::RData::Unknown(d) if d.len() > 4 => d.clone(),
            _ => return Err(err(public_file, kline, 1, "DNSKEY without a public key")),
        };
        let flags = u16::from_be_bytes([rdata[0], rdata[1]]);
        let algorithm = rdata[3];
        let public = &rdata[4..];
        let fields = private_fields(private_text, private_file)?;
        let get = |k: &str| -> Result<(Vec<u8>, usize, usize), ZoneError> {
            let (v, line, col) = fields
                .iter()
                .find(|(name, _, _, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v, l, c)| (v.as_str(), *l, *c))
                .ok_or_else(|| err(private_file, 0, 0, format!("no {k}: field")))?;
            let bytes = base64_decode(v.trim())
                .ok_or_else(|| err(private_file, line, col, format!("{k}: not valid base64")))?;
            Ok((bytes, line, col))
        };
        // Format and algorithm lines.
        let (fmt, fline, fcol) = fields
            .iter()
            .find(|(n, _, _, _)| n.eq_ignore_ascii_case("Private-key-format"))
            .map(|(_, v, l, c)| (v.trim().to_string(), *l, *c))
            .ok_or_else(|| err(private_file, 1, 1, "no Private-key-format: line"))?;
        if !fmt.starts_with("v1.") {
            return Err(err(
                private_file,
                fline,
                fcol,
                format!("unsupported Private-key-format {fmt:?}"),
            ));
        }
        let (alg_text, aline, acol) = fields
            .iter()
            .find(|(n, _, _, _)| n.eq_ignore_ascii_case("Algorithm"))
            .map(|(_, v, l, c)| (v.trim().to_string(), *l, *c))
            .ok_or_else(|| err(private_file, 0, 0, "no Algorithm: line"))?;
        let alg_num: Option<u8> = alg_text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok());
        if alg_num != Some(algorithm) {
            return Err(err(
                private_file,
                aline,
                acol,
                format!(
                    "Algorithm {alg_text:?} does not match the DNSKEY's algorithm {algorithm} of {public_file}"
                ),
            ));
        }
        let rng = SystemRandom::new();
        let private = match algorithm {
            ECDSAP256SHA256 | ECDSAP384SHA384 => {
                let (d, line, col) = get("PrivateKey")?;
                let (alg, len) = if algorithm == ECDSAP256SHA256 {
                    (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, 32)
                } else {
                    (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, 48)
                };
                // The private scalar is a big-endian integer: BIND's dnssec-keygen drops its
                // leading zero bytes (one key in 256 has a 31-byte P-256 scalar), and Go's
                // reader takes it as a big.Int, so a shorter value is padded on the left.
                let d = match d.iter().position(|&b| b != 0) {
                    Some(first) if d.len() - first <= len => {
                        let mut padded = vec![0u8; len - (d.len() - first)];
                        padded.extend_from_slice(&d[first..]);
                        padded
                    }
                    _ => d,
                };
                if d.len() != len || public.len() != 2 * len {
                    return Err(err(
                        private_file,
                        line,
                        col,
                        format!(
                            "PrivateKey: {} bytes, the algorithm needs {len} (public key of {} bytes in {public_file}, needs {})",
                            d.len(),
                            public.len(),
                            2 * len
                        ),
                    ));
                }
                let mut pubpt = Vec::with_capacity(1 + public.len());
                pubpt.push(4);
                pubpt.extend_from_slice(public);
                let kp = EcdsaKeyPair::from_private_key_and_public_key(alg, &d, &pubpt, &rng)
                    .map_err(|e| {
                        err(
                            private_file,
                            line,
                            col,
                            format!(
                                "PrivateKey: does not match the public key of {public_file}: {e}"
                            ),
                        )
                    })?;
                Private::Ecdsa(kp)
            }
            ED25519 => {
                let (d, line, col) = get("PrivateKey")?;
                let kp = Ed25519KeyPair::from_seed_and_public_key(&d, public).map_err(|e| {
                    err(
                        private_file,
                        line,
                        col,
                        format!("PrivateKey: does not match the public key of {public_file}: {e}"),
                    )
                })?;
                Private::Ed25519(kp)
            }
            RSASHA256 | RSASHA512 => {
                let n = get("Modulus")?;
                let e = get("PublicExponent")?;
                let d = get("PrivateExponent")?;
                let p = get("Prime1")?;
                let q = get("Prime2")?;
                let dp = get("Exponent1")?;
                let dq = get("Exponent2")?;
                let qi = get("Coefficient")?;
                if rsa_public(public) != Some((e.0.as_slice(), n.0.as_slice())) {
                    return Err(err(
                        private_file,
                        n.1,
                        n.2,
                        format!(
                            "Modulus/PublicExponent: do not match the public key of {public_file}"
                        ),
                    ));
                }
                let comp = ring::rsa::KeyPairComponents {
                    public_key: ring::rsa::PublicKeyComponents {
                        n: n.0.as_slice(),
                        e: e.0.as_slice(),
                    },
                    d: d.0.as_slice(),
                    p: p.0.as_slice(),
                    q: q.0.as_slice(),
                    dP: dp.0.as_slice(),
                    dQ: dq.0.as_slice(),
                    qInv: qi.0.as_slice(),
                };
                let kp = RsaKeyPair::from_components(&comp).map_err(|e| {
                    err(
                        private_file,
                        n.1,
                        n.2,
                        format!(
                            "RSA key rejected ({e}): Sextant signs with RSA keys of 2048 to 4096 bits"
                        ),
                    )
                })?;
                let enc: &'static dyn signature::RsaEncoding = if algorithm == RSASHA256 {
                    &signature::RSA_PKCS1_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA512
                };
                Private::Rsa(kp, enc)
            }
            other => {
                return Err(err(
                    private_file,
                    aline,
                    acol,
                    format!(
                        "algorithm {other} ({}) is not supported: use 8, 10, 13, 14 or 15",
                        algorithm_name(other)
                    ),
                ))
            }
        };
        // A self-check: the public half ring derived must be the DNSKEY's.
        let derived: Vec<u8> = match &private {
            Private::Ecdsa(k) => k.public_key().as_ref()[1..].to_vec(),
            Private::Ed25519(k) => k.public_key().as_ref().to_vec(),
            Private::Rsa(_, _) => public.to_vec(),
        };
        if derived != public {
            return Err(err(
                private_file,
                0,
                0,
                format!("the private key does not belong to the DNSKEY of {public_file}"),
            ));
        }
        let tag = key_tag(&rdata);
        Ok(SigningKey {
            dnskey,
            rdata,
            flags,
            algorithm,
            tag,
            private,
            rng,
        })
    }

    /// A zone key with the SEP bit set (a KSK, or a CSK).
    pub fn is_ksk(&self) -> bool {
        self.flags & FLAG_ZONE != 0 && self.flags & FLAG_SEP != 0
    }

    /// A zone key without the SEP bit (a ZSK).
    pub fn is_zsk(&self) -> bool {
        self.flags & FLAG_ZONE != 0 && self.flags & FLAG_SEP == 0
    }

    /// The signature of `data` with this key, in the RRSIG signature field's format.
    pub fn sign_bytes(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.private {
            Private::Ecdsa(k) => k
                .sign(&self.rng, data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError),
            Private::Ed25519(k) => Ok(k.sign(data).as_ref().to_vec()),
            Private::Rsa(k, enc) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(*enc, &self.rng, data, &mut sig)
                    .map_err(|_| SignError)?;
                Ok(sig)
            }
        }
    }
}

/// (exponent, modulus) of an RFC 3110 RSA public key.
pub(crate) fn rsa_public(k: &[u8]) -> Option<(&[u8], &[u8])> {
    let (elen, rest) = match *k.first()? {
        0 => (
            u16::from_be_bytes([*k.get(1)?, *k.get(2)?]) as usize,
            k.get(3..)?,
        ),
        n => (n as usize, k.get(1..)?),
    };
    Some((rest.get(..elen)?, rest.get(elen..)?))
}

/// Checks `sig` over `data` with DNSKEY record data `dnskey` (RSA keys of 1024 bits and more).
pub fn verify_bytes(dnskey: &[u8], data: &[u8], sig: &[u8]) -> bool {
    let Some(&alg) = dnskey.get(3) else {
        return false;
    };
    let public = &dnskey[4..];
    match alg {
        ECDSAP256SHA256 | ECDSAP384SHA384 => {
            let a: &'static signature::EcdsaVerificationAlgorithm = if alg == ECDSAP256SHA256 {
                &signature::ECDSA_P256_SHA256_FIXED
            } else {
                &signature::ECDSA_P384_SHA384_FIXED
            };
            let mut pt = vec![4u8];
            pt.extend_from_slice(public);
            signature::UnparsedPublicKey::new(a, pt)
                .verify(data, sig)
                .is_ok()
        }
        ED25519 => signature::UnparsedPublicKey::new(&signature::ED25519, public)
            .verify(data, sig)
            .is_ok(),
        RSASHA256 | RSASHA512 => {
            let Some((e, n)) = rsa_public(public) else {
                return false;
            };
            let params = if alg == RSASHA256 {
                &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY
            } else {
                &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY
            };
            signature::RsaPublicKeyComponents { n, e }
                .verify(params, data, sig)
                .is_ok()
        }
        _ => false,
    }
}

/// The `Name: value` fields of a `.private` file with their line and the value's column.
fn private_fields(
    text: &str,
    file: &str,
) -> Result<Vec<(String, String, usize, usize)>, ZoneError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with(';') {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(err(
                file,
                i + 1,
                1,
                format!("expected \"Field: value\", got {:?}", line.trim()),
            ));
        };
        let col = k.len() + 2 + (v.len() - v.trim_start().len());
        out.push((k.trim().to_string(), v.trim().to_string(), i + 1, col));
    }
    Ok(out)
}
