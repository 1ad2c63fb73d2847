//! LOC record data (RFC 1876) in presentation format → wire form. No I/O.

use crate::lexer::Token;

/// `value` centimetres as the RFC 1876 mantissa/exponent byte.
fn precision(cm: u64) -> u8 {
    let mut e = 0u8;
    let mut v = cm;
    while v >= 10 && e < 9 {
        v /= 10;
        e += 1;
    }
    ((v.min(9) as u8) << 4) | e
}

/// Metres (`10`, `10.5`, `10m`) as centimetres.
fn metres(s: &str) -> Option<f64> {
    let s = s.strip_suffix(['m', 'M']).unwrap_or(s);
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Parses `d [m [s]] N|S d [m [s]] E|W alt[m] [siz[m] [hp[m] [vp[m]]]]`.
pub(crate) fn parse(toks: &[Token]) -> Result<Vec<u8>, Option<Token>> {
    let mut i = 0;
    let mut coord = |pos: &str, neg: &str, max: f64| -> Result<u32, Option<Token>> {
        let mut parts = [0f64; 3];
        let mut n = 0;
        loop {
            let t = toks.get(i).ok_or_else(|| toks.last().cloned())?;
            i += 1;
            let up = t.text.to_ascii_uppercase();
            if up == pos || up == neg {
                if n == 0 {
                    return Err(Some(t.clone()));
                }
                let secs = parts[0] * 3600.0 + parts[1] * 60.0 + parts[2];
                if parts[0] > max || parts[1] >= 60.0 || parts[2] >= 60.0 {
                    return Err(Some(t.clone()));
                }
                let ms = (secs * 1000.0).round() as i64;
                let v = if up == neg {
                    (1i64 << 31) - ms
                } else {
                    (1i64 << 31) + ms
                };
                return Ok(v as u32);
            }
            if n == 3 {
                return Err(Some(t.clone()));
            }
            parts[n] = t.text.parse::<f64>().map_err(|_| Some(t.clone()))?;
            n += 1;
        }
    };
    let lat = coord("N", "S", 90.0)?;
    let lon = coord("E", "W", 180.0)?;
    let rest = &toks[i.min(toks.len())..];
    let alt_t = rest.first().ok_or_else(|| toks.last().cloned())?;
    let alt = metres(&alt_t.text).ok_or_else(|| Some(alt_t.clone()))?;
    let alt = ((alt * 100.0).round() as i64)
        .saturating_add(10_000_000)
        .clamp(0, u32::MAX as i64) as u32;
    let mut sizes = [100u64, 1_000_000, 1000];
    for (k, t) in rest[1..].iter().enumerate() {
        if k >= 3 {
            return Err(Some(t.clone()));
        }
        let m = metres(&t.text)
            .filter(|m| *m >= 0.0)
            .ok_or_else(|| Some(t.clone()))?;
        sizes[k] = (m * 100.0).round() as u64;
    }
    let mut w = vec![
        0,
        precision(sizes[0]),
        precision(sizes[1]),
        precision(sizes[2]),
    ];
    w.extend_from_slice(&lat.to_be_bytes());
    w.extend_from_slice(&lon.to_be_bytes());
    w.extend_from_slice(&alt.to_be_bytes());
    Ok(w)
}
