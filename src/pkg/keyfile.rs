//! DNSSEC key pairs named in Corefiles (`key file` of `dnssec` and `sign`): CoreDNS's three
//! spellings of a BIND key (`Kname+alg+id`, `.key`, `.private`) read into a signing key, errors
//! naming the key file's `file:line:col`.

use std::path::Path;

use sextant_zone::dnssec::SigningKey;

/// Reads the key pair of a `key file` argument: `Kname+alg+id`, with or without `.key` or
/// `.private` (CoreDNS's three spellings), relative to `base`.
pub(crate) fn read_key(arg: &str, base: &Path) -> Result<SigningKey, String> {
    let stem = arg
        .strip_suffix(".key")
        .or_else(|| arg.strip_suffix(".private"))
        .unwrap_or(arg);
    let (pubf, privf) = (format!("{stem}.key"), format!("{stem}.private"));
    let read =
        |f: &str| std::fs::read_to_string(base.join(f)).map_err(|e| format!("open {f}: {e}"));
    let (pubt, privt) = (read(&pubf)?, read(&privf)?);
    SigningKey::from_files(&pubt, &pubf, &privt, &privf).map_err(|e| e.to_string())
}
