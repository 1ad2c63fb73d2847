//! TSIG keys and MACs (RFC 8945) with `ring`'s HMAC (and HMAC-SHA224 over `sha2`, which `ring`
//! lacks): a secret set by key name, checking a signed request against it (BADKEY, BADSIG,
//! BADTIME as miekg/dns decides them), and the signer that puts a TSIG on every message of the
//! reply (the response MAC over the request's, then each later TCP message over the previous
//! one with the timers only). No I/O.

use std::collections::HashMap;

use ring::hmac;
use sextant_wire::tsig::{append_tsig, find_tsig, mac_input, strip_tsig, tsig_error, Tsig};
use sextant_wire::Name;

use crate::plugin::ReplySigner;

/// Fudge of the signatures Sextant makes (miekg/dns: 300 s when none is set).
pub(crate) const FUDGE: u16 = 300;

/// A TSIG algorithm Sextant computes MACs with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Algorithm {
    Ring(hmac::Algorithm),
    /// HMAC-SHA224 (RFC 4231), built here on `sha2`: `ring` has no SHA-224.
    Sha224,
}

/// The HMAC of a TSIG algorithm name, the ones miekg/dns 1.1.72 (CoreDNS 1.14.7) knows; None for
/// any other, hmac-md5 included (miekg/dns dropped it: CoreDNS answers such a request BADSIG
/// when it has the key).
pub(crate) fn algorithm(name: &Name) -> Option<Algorithm> {
    match name.to_lowercase_string().as_str() {
        "hmac-sha1." => Some(Algorithm::Ring(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY)),
        "hmac-sha224." => Some(Algorithm::Sha224),
        "hmac-sha256." => Some(Algorithm::Ring(hmac::HMAC_SHA256)),
        "hmac-sha384." => Some(Algorithm::Ring(hmac::HMAC_SHA384)),
        "hmac-sha512." => Some(Algorithm::Ring(hmac::HMAC_SHA512)),
        _ => None,
    }
}

/// A key ready to make and check MACs with.
#[derive(Clone)]
pub(crate) enum MacKey {
    Ring(hmac::Key),
    /// The HMAC-SHA224 key block (64 bytes: the secret, or its digest when longer, zero-padded).
    Sha224(Box<[u8; 64]>),
}

impl MacKey {
    pub(crate) fn new(alg: Algorithm, secret: &[u8]) -> MacKey {
        match alg {
            Algorithm::Ring(a) => MacKey::Ring(hmac::Key::new(a, secret)),
            Algorithm::Sha224 => {
                use sha2::Digest;
                let mut block = Box::new([0u8; 64]);
                if secret.len() > 64 {
                    let d = sha2::Sha224::digest(secret);
                    block[..d.len()].copy_from_slice(&d);
                } else {
                    block[..secret.len()].copy_from_slice(secret);
                }
                MacKey::Sha224(block)
            }
        }
    }

    /// Length of the MACs this key makes.
    pub(crate) fn output_len(&self) -> usize {
        match self {
            MacKey::Ring(k) => k.algorithm().digest_algorithm().output_len(),
            MacKey::Sha224(_) => 28,
        }
    }

    pub(crate) fn sign(&self, data: &[u8]) -> Vec<u8> {
        match self {
            MacKey::Ring(k) => hmac::sign(k, data).as_ref().to_vec(),
            MacKey::Sha224(block) => {
                use sha2::Digest;
                let pad = |byte: u8| block.map(|b| b ^ byte);
                let mut inner = sha2::Sha224::new();
                inner.update(pad(0x36));
                inner.update(data);
                let mut outer = sha2::Sha224::new();
                outer.update(pad(0x5c));
                outer.update(inner.finalize());
                outer.finalize().to_vec()
            }
        }
    }

    /// True when `mac` is this key's MAC of `data` (compared in constant time).
    pub(crate) fn verify(&self, data: &[u8], mac: &[u8]) -> bool {
        match self {
            MacKey::Ring(k) => hmac::verify(k, data, mac).is_ok(),
            MacKey::Sha224(_) => {
                let want = self.sign(data);
                want.len() == mac.len()
                    && want.iter().zip(mac).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
            }
        }
    }
}

/// TSIG secrets by key name (lower-case FQDN), as decoded bytes.
#[derive(Clone, Default, Debug)]
pub(crate) struct Secrets(HashMap<Name, Vec<u8>>);

impl Secrets {
    /// Adds a secret; false if the name already has one.
    pub(crate) fn insert(&mut self, name: Name, secret: Vec<u8>) -> bool {
        use std::collections::hash_map::Entry;
        match self.0.entry(name.to_lowercase()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(secret);
                true
            }
        }
    }

    pub(crate) fn get(&self, name: &Name) -> Option<&[u8]> {
        self.0.get(name).map(Vec::as_slice)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// What checking a signed request found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The MAC checks and the time is within the fudge.
    Ok,
    /// Unknown key or algorithm (BADKEY), wrong MAC (BADSIG), time off (BADTIME).
    Bad(u16),
}

/// The state of a request's TSIG: its record, the verdict, the secret and algorithm to sign the
/// reply with.
#[derive(Clone)]
pub(crate) struct Checked {
    pub(crate) tsig: Tsig,
    pub(crate) verdict: Verdict,
    key: Option<MacKey>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("tsig", &self.tsig)
            .field("verdict", &self.verdict)
            .finish()
    }
}

/// Checks the TSIG closing `raw` (a request as received) at time `now` (seconds since 1970).
/// None when the request carries no TSIG (or it cannot be read).
pub(crate) fn check(raw: &[u8], secrets: &Secrets, now: u64) -> Option<Checked> {
    let (off, tsig) = find_tsig(raw).ok()??;
    // miekg/dns: an unknown key name is BADKEY; a known key with an algorithm it cannot compute
    // (hmac-md5, anything else) fails as a bad signature, BADSIG.
    let Some(secret) = secrets.get(&tsig.key.to_lowercase()) else {
        return Some(Checked {
            tsig,
            verdict: Verdict::Bad(tsig_error::BADKEY),
            key: None,
        });
    };
    let Some(alg) = algorithm(&tsig.algorithm) else {
        return Some(Checked {
            tsig,
            verdict: Verdict::Bad(tsig_error::BADSIG),
            key: None,
        });
    };
    let key = MacKey::new(alg, secret);
    let unsigned = strip_tsig(raw, off, tsig.orig_id);
    let input = mac_input(&[], &unsigned, &tsig, false);
    let verdict = if !key.verify(&input, &tsig.mac) {
        Verdict::Bad(tsig_error::BADSIG)
    } else if now.abs_diff(tsig.time_signed) > u64::from(tsig.fudge) {
        Verdict::Bad(tsig_error::BADTIME)
    } else {
        Verdict::Ok
    };
    Some(Checked {
        tsig,
        verdict,
        key: Some(key),
    })
}

/// Signs the messages of one reply to a TSIG request (miekg/dns's `WriteMsg` with a TSIG, as
/// CoreDNS's `tsig` plugin sets it up): the first over the request's MAC with every variable,
/// each later one over the previous MAC with the timers only. After BADKEY or BADSIG the TSIG
/// carries the error and no MAC (RFC 8945 §5.3.2); after BADTIME it is signed, holds the
/// request's time and the server's time in Other Data.
pub(crate) struct Signer {
    checked: Checked,
    prior_mac: Vec<u8>,
    first: bool,
    now: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Signer {
    pub(crate) fn new(checked: Checked, now: Box<dyn Fn() -> u64 + Send + Sync>) -> Signer {
        Signer {
            prior_mac: checked.tsig.mac.clone(),
            checked,
            first: true,
            now,
        }
    }
}

impl ReplySigner for Signer {
    fn reserve(&self) -> usize {
        let mac = self.checked.key.as_ref().map_or(0, MacKey::output_len);
        Tsig::record_len(&self.checked.tsig.key, &self.checked.tsig.algorithm, mac, 6)
    }

    fn sign(&mut self, msg: &mut Vec<u8>) {
        if msg.len() < 12 {
            return;
        }
        let req = &self.checked.tsig;
        let error = match self.checked.verdict {
            Verdict::Ok => 0,
            Verdict::Bad(e) => e,
        };
        let now = (self.now)();
        let mut t = Tsig {
            key: req.key.clone(),
            algorithm: req.algorithm.clone(),
            time_signed: now,
            fudge: FUDGE,
            mac: Vec::new(),
            orig_id: u16::from_be_bytes([msg[0], msg[1]]),
            error,
            other: Vec::new(),
        };
        if error == tsig_error::BADTIME {
            t.time_signed = req.time_signed;
            t.other = now.to_be_bytes()[2..].to_vec();
        }
        let signs = error != tsig_error::BADKEY && error != tsig_error::BADSIG;
        if let (true, Some(key)) = (signs, self.checked.key.as_ref()) {
            let input = mac_input(&self.prior_mac, msg, &t, !self.first);
            t.mac = key.sign(&input);
            self.prior_mac = t.mac.clone();
        } else {
            t.time_signed = 0;
        }
        self.first = false;
        append_tsig(msg, &t);
    }
}

/// Signs a request (for tests and for clients such as a secondary's transfer): appends a TSIG
/// with `key`/`algorithm` at `now`; returns the MAC to check the reply with.
#[cfg(test)]
pub(crate) fn sign_request(
    msg: &mut Vec<u8>,
    key: &Name,
    algorithm: &Name,
    secret: &[u8],
    now: u64,
) -> Vec<u8> {
    let alg = self::algorithm(algorithm).expect("known algorithm");
    let k = MacKey::new(alg, secret);
    let mut t = Tsig {
        key: key.clone(),
        algorithm: algorithm.clone(),
        time_signed: now,
        fudge: FUDGE,
        mac: Vec::new(),
        orig_id: u16::from_be_bytes([msg[0], msg[1]]),
        error: 0,
        other: Vec::new(),
    };
    let input = mac_input(&[], msg, &t, false);
    t.mac = k.sign(&input);
    append_tsig(msg, &t);
    t.mac
}

/// Checks a reply message (`prior`: the MAC it answers) for tests: true if its MAC checks.
#[cfg(test)]
pub(crate) fn verify_reply(raw: &[u8], secret: &[u8], prior: &[u8], timers_only: bool) -> bool {
    let Ok(Some((off, t))) = find_tsig(raw) else {
        return false;
    };
    let Some(alg) = algorithm(&t.algorithm) else {
        return false;
    };
    let k = MacKey::new(alg, secret);
    let unsigned = strip_tsig(raw, off, t.orig_id);
    k.verify(&mac_input(prior, &unsigned, &t, timers_only), &t.mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_wire::{Message, RType};

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn secrets() -> Secrets {
        let mut s = Secrets::default();
        assert!(s.insert(n("Key.Example."), b"0123456789abcdef".to_vec()));
        assert!(!s.insert(n("key.example."), b"x".to_vec()));
        s
    }

    #[test]
    fn request_verdicts() {
        let now = 1_700_000_000;
        let q = Message::query(7, n("example.org."), RType::SOA).to_wire();
        for alg in [
            "hmac-sha1.",
            "hmac-sha224.",
            "hmac-sha256.",
            "hmac-sha384.",
            "hmac-sha512.",
        ] {
            let mut m = q.clone();
            sign_request(
                &mut m,
                &n("key.example."),
                &n(alg),
                b"0123456789abcdef",
                now,
            );
            let c = check(&m, &secrets(), now + 10).unwrap();
            assert_eq!(c.verdict, Verdict::Ok, "{alg}");
            assert_eq!(
                check(&m, &secrets(), now + 301).unwrap().verdict,
                Verdict::Bad(18)
            );
            let mut bad = m.clone();
            let l = bad.len();
            bad[l - 8] ^= 1; // inside the MAC
            assert_eq!(
                check(&bad, &secrets(), now).unwrap().verdict,
                Verdict::Bad(16)
            );
        }
        let mut m = q.clone();
        sign_request(&mut m, &n("other."), &n("hmac-sha256."), b"k", now);
        assert_eq!(
            check(&m, &secrets(), now).unwrap().verdict,
            Verdict::Bad(17)
        );
        assert!(check(&q, &secrets(), now).is_none());
    }

    /// RFC 4231 test cases 1 and 6 (a key longer than the block) for HMAC-SHA224.
    #[test]
    fn hmac_sha224_matches_rfc_4231() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let k = MacKey::new(Algorithm::Sha224, &[0x0b; 20]);
        assert_eq!(
            k.sign(b"Hi There"),
            hex("896fb1128abbdf196832107cd49df33f47b4b1169912ba4f53684b22")
        );
        let k = MacKey::new(Algorithm::Sha224, &[0xaa; 131]);
        let mac = k.sign(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            mac,
            hex("95e9a0db962095adaebe9b2d6f0dbce2d499f112f2d2b7273fa6870e")
        );
        assert!(k.verify(
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            &mac
        ));
        assert!(!k.verify(b"Test", &mac));
    }

    #[test]
    fn a_known_key_with_an_unknown_algorithm_is_badsig() {
        let now = 1_700_000_000;
        let mut m = Message::query(7, n("example.org."), RType::SOA).to_wire();
        sign_request(
            &mut m,
            &n("key.example."),
            &n("hmac-sha256."),
            b"0123456789abcdef",
            now,
        );
        // The same request claiming hmac-md5: CoreDNS (miekg/dns) cannot compute it.
        let (off, mut t) = find_tsig(&m).unwrap().unwrap();
        t.algorithm = n("hmac-md5.sig-alg.reg.int.");
        m.truncate(off);
        let c = m[10..12].to_vec();
        let arcount = u16::from_be_bytes([c[0], c[1]]) - 1;
        m[10..12].copy_from_slice(&arcount.to_be_bytes());
        append_tsig(&mut m, &t);
        assert_eq!(
            check(&m, &secrets(), now).unwrap().verdict,
            Verdict::Bad(tsig_error::BADSIG)
        );
    }

    #[test]
    fn replies_chain_their_macs() {
        let now = 1_700_000_000;
        let mut q = Message::query(9, n("example.org."), RType::AXFR).to_wire();
        let req_mac = sign_request(
            &mut q,
            &n("key.example."),
            &n("hmac-sha256."),
            b"0123456789abcdef",
            now,
        );
        let c = check(&q, &secrets(), now).unwrap();
        let mut s = Signer::new(c, Box::new(move || now + 1));
        let reply = Message::reply_to(&Message::query(9, n("example.org."), RType::AXFR));
        let mut first = reply.to_wire();
        let before = first.len();
        s.sign(&mut first);
        assert!(first.len() - before <= s.reserve());
        assert!(verify_reply(&first, b"0123456789abcdef", &req_mac, false));
        let (_, t1) = find_tsig(&first).unwrap().unwrap();
        assert_eq!((t1.time_signed, t1.fudge, t1.orig_id), (now + 1, 300, 9));
        let mut second = reply.to_wire();
        s.sign(&mut second);
        assert!(verify_reply(&second, b"0123456789abcdef", &t1.mac, true));
        assert!(!verify_reply(&second, b"0123456789abcdef", &req_mac, true));
    }

    #[test]
    fn bad_requests_get_an_unsigned_tsig_with_the_error() {
        let now = 1_700_000_000;
        let mut q = Message::query(9, n("example.org."), RType::SOA).to_wire();
        sign_request(&mut q, &n("nokey."), &n("hmac-sha256."), b"x", now);
        let c = check(&q, &secrets(), now).unwrap();
        let mut s = Signer::new(c, Box::new(move || now));
        let mut r = Message::reply_to(&Message::query(9, n("example.org."), RType::SOA)).to_wire();
        s.sign(&mut r);
        let (_, t) = find_tsig(&r).unwrap().unwrap();
        assert_eq!((t.error, t.mac.len(), t.time_signed), (17, 0, 0));
        // BADTIME: signed, the request's time, ours in Other Data.
        let mut q = Message::query(9, n("example.org."), RType::SOA).to_wire();
        let req_mac = sign_request(
            &mut q,
            &n("key.example."),
            &n("hmac-sha256."),
            b"0123456789abcdef",
            now - 1000,
        );
        let c = check(&q, &secrets(), now).unwrap();
        assert_eq!(c.verdict, Verdict::Bad(18));
        let mut s = Signer::new(c, Box::new(move || now));
        let mut r = Message::reply_to(&Message::query(9, n("example.org."), RType::SOA)).to_wire();
        s.sign(&mut r);
        let (_, t) = find_tsig(&r).unwrap().unwrap();
        assert_eq!((t.error, t.time_signed), (18, now - 1000));
        assert_eq!(t.other, now.to_be_bytes()[2..].to_vec());
        assert!(verify_reply(&r, b"0123456789abcdef", &req_mac, false));
    }
}
