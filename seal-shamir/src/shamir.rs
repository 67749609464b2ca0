//! Split and combine in Vault's share format, share parsing, and Vault's
//! share-count limits.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use seal_core::UnsealShare;
use zeroize::Zeroizing;

use crate::ShamirError;
use crate::gf256;

/// Shortest share Vault accepts (bytes, after decoding).
pub const MIN_SHARE_LEN: usize = 16;
/// Longest share Vault accepts: a 32-byte key plus its x-coordinate.
pub const MAX_SHARE_LEN: usize = 33;
/// Most shares one split can produce: x-coordinates are the non-zero bytes.
pub const MAX_SHARES: usize = 255;

/// Checks a share count and threshold against Vault's limits
/// (`SealConfig.Validate`): shares 1..=255, threshold 1..=255 and at most
/// shares, and threshold 1 only when there is a single share (a threshold of
/// one with several shares would make each share the whole key).
///
/// # Errors
/// [`ShamirError::InvalidConfig`] with Vault's message for the first limit
/// broken, checked in Vault's order.
pub fn validate_config(shares: usize, threshold: usize) -> Result<(), ShamirError> {
    let reason = if shares < 1 {
        "shares must be at least one"
    } else if threshold < 1 {
        "threshold must be at least one"
    } else if shares > 1 && threshold == 1 {
        "threshold must be greater than one for multiple shares"
    } else if shares > MAX_SHARES {
        "shares must be less than 256"
    } else if threshold > MAX_SHARES {
        "threshold must be less than 256"
    } else if threshold > shares {
        "threshold cannot be larger than shares"
    } else {
        return Ok(());
    };
    Err(ShamirError::InvalidConfig { reason })
}

/// Splits `secret` into `shares` shares of which any `threshold` recover it.
///
/// Each share is the secret's length plus one byte: the y-values, then the
/// x-coordinate as the **last** byte (Vault's format; 33 bytes for a 32-byte
/// key). The x-coordinates are distinct, drawn uniformly from 1..=255 by a
/// Fisher–Yates shuffle on the operating system's CSPRNG, which also gives
/// every polynomial coefficient. With a single share (threshold 1) no
/// splitting happens: the share is the secret itself, as in Vault.
///
/// # Errors
/// * [`ShamirError::InvalidConfig`] for counts Vault refuses
///   ([`validate_config`]).
/// * [`ShamirError::SecretLength`] when the shares would not be 16..=33
///   bytes: the secret must be 15..=32 bytes (16..=33 for a single share).
/// * [`ShamirError::Random`] if the OS random source fails.
pub fn split(
    secret: &[u8],
    shares: usize,
    threshold: usize,
) -> Result<Vec<UnsealShare>, ShamirError> {
    validate_config(shares, threshold)?;
    if shares == 1 {
        if !(MIN_SHARE_LEN..=MAX_SHARE_LEN).contains(&secret.len()) {
            return Err(ShamirError::SecretLength { len: secret.len() });
        }
        return Ok(vec![UnsealShare::from_bytes(secret)?]);
    }
    if !(MIN_SHARE_LEN - 1..MAX_SHARE_LEN).contains(&secret.len()) {
        return Err(ShamirError::SecretLength { len: secret.len() });
    }
    split_raw(secret, shares, threshold)?
        .iter()
        .map(|share| UnsealShare::from_bytes(share).map_err(ShamirError::from))
        .collect()
}

/// The splitting itself, for any non-empty secret and 2 ≤ threshold ≤
/// shares ≤ 255 (checked by the caller). Returns `shares` buffers of
/// `secret.len() + 1` bytes.
pub(crate) fn split_raw(
    secret: &[u8],
    shares: usize,
    threshold: usize,
) -> Result<Vec<Zeroizing<Vec<u8>>>, ShamirError> {
    let xs = random_x_coordinates(shares)?;
    let degree = threshold - 1;
    // Eight byte-polynomials are evaluated at once, one per byte of a u64
    // word (see `gf256::Lanes`). coefficients[d * words + w] holds the
    // coefficients of x^(d+1) for secret bytes 8w..8w+8; the constant terms
    // are the secret bytes themselves.
    let words = secret.len().div_ceil(8);
    let secret_words: Zeroizing<Vec<u64>> = Zeroizing::new(secret.chunks(8).map(load).collect());
    let coefficient_bytes = random(words * 8 * degree)?;
    let coefficients: Zeroizing<Vec<u64>> =
        Zeroizing::new(coefficient_bytes.chunks(8).map(load).collect());
    let mut out: Vec<Zeroizing<Vec<u8>>> = (0..shares)
        .map(|_| Zeroizing::new(vec![0u8; secret.len() + 1]))
        .collect();
    for (share, &x) in out.iter_mut().zip(&xs) {
        let times_x = gf256::Lanes::new(x);
        let (ys, x_slot) = share.split_at_mut(secret.len());
        for ((w, &intercept), chunk) in secret_words.iter().enumerate().zip(ys.chunks_mut(8)) {
            // Horner from the highest coefficient down to the intercept.
            let mut y = 0u64;
            for d in (0..degree).rev() {
                y = times_x.mul(y) ^ coefficients[d * words + w];
            }
            y = times_x.mul(y) ^ intercept;
            store(y, chunk);
        }
        x_slot.fill(x);
    }
    Ok(out)
}

/// Little-endian load of up to eight bytes into a word (missing bytes 0).
fn load(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .enumerate()
        .fold(0u64, |w, (i, &b)| w | (u64::from(b) << (8 * i)))
}

/// Little-endian store of a word's low `out.len()` (at most eight) bytes.
fn store(word: u64, out: &mut [u8]) {
    for (i, o) in out.iter_mut().take(8).enumerate() {
        *o = (word >> (8 * i)) as u8;
    }
}

/// `count` distinct x-coordinates, uniformly chosen and ordered, from
/// 1..=255: the first `count` steps of a Fisher–Yates shuffle of 1..=255,
/// each swap index drawn without bias by rejection sampling. (OpenBao draws
/// the index from `[0, i)`, Sattolo's variant, which is not uniform; Vault
/// uses a non-cryptographic generator.)
fn random_x_coordinates(count: usize) -> Result<Vec<u8>, ShamirError> {
    let mut pool: Vec<u8> = (1..=255u8).collect();
    let mut bytes = RandomBytes::new();
    for i in 0..count.min(pool.len()) {
        // Uniform j in i..=254, i.e. an offset in 0..range.
        let range = pool.len() - i;
        let offset = bytes.uniform_below(range)?;
        pool.swap(i, i + offset);
    }
    pool.truncate(count);
    Ok(pool)
}

/// A buffered reader of CSPRNG bytes for rejection sampling.
struct RandomBytes {
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
}

impl RandomBytes {
    fn new() -> Self {
        Self {
            buf: Zeroizing::new(Vec::new()),
            pos: 0,
        }
    }

    fn next(&mut self) -> Result<u8, ShamirError> {
        if self.pos >= self.buf.len() {
            self.buf = random(512)?;
            self.pos = 0;
        }
        let byte = self.buf.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        Ok(byte)
    }

    /// A uniform value in `0..range`, `1 <= range <= 256`: bytes at or above
    /// the largest multiple of `range` are rejected so every residue is
    /// equally likely.
    fn uniform_below(&mut self, range: usize) -> Result<usize, ShamirError> {
        let limit = 256 - 256 % range;
        loop {
            let b = usize::from(self.next()?);
            if b < limit {
                return Ok(b % range);
            }
        }
    }
}

fn random(len: usize) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    seal_core::random_bytes(len).map_err(ShamirError::from)
}

/// Recovers the secret from shares in Vault's format (y-bytes, then x as the
/// last byte). Any `threshold` distinct shares of one split give the secret;
/// fewer give an unrelated value (which the caller detects by using it, e.g.
/// unwrapping the stored root key). Use [`UnsealProgress`] for a
/// single-share (threshold 1) configuration: there the share is the secret
/// and nothing is combined.
///
/// [`UnsealProgress`]: crate::UnsealProgress
///
/// # Errors
/// [`ShamirError::TooFewShares`] for fewer than two shares,
/// [`ShamirError::LengthMismatch`], [`ShamirError::DuplicateShare`] (same
/// x-coordinate twice), [`ShamirError::ZeroCoordinate`].
pub fn combine(shares: &[UnsealShare]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    let parts: Vec<&[u8]> = shares.iter().map(UnsealShare::expose_secret).collect();
    combine_bytes(&parts)
}

/// [`combine`] for shares held as plain byte slices, of any length of at
/// least two bytes (one y-byte and the x-coordinate), as Vault's
/// `shamir.Combine` accepts.
///
/// # Errors
/// As [`combine`], plus [`ShamirError::ShareTooShort`] for parts shorter than
/// two bytes.
pub fn combine_bytes(parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    let Some(first) = parts.first() else {
        return Err(ShamirError::TooFewShares { got: 0 });
    };
    if parts.len() < 2 {
        return Err(ShamirError::TooFewShares { got: parts.len() });
    }
    let len = first.len();
    if len < 2 {
        return Err(ShamirError::ShareTooShort { len, min: 2 });
    }
    if let Some(other) = parts.iter().find(|p| p.len() != len) {
        return Err(ShamirError::LengthMismatch {
            first: len,
            other: other.len(),
        });
    }
    let secret_len = len - 1;

    // x-coordinates are public in Vault's design (they travel in the clear
    // as the last byte), so checking them with branches leaks nothing secret.
    let mut seen = [false; 256];
    let mut xs = Vec::with_capacity(parts.len());
    for part in parts {
        let x = part[secret_len];
        if x == 0 {
            return Err(ShamirError::ZeroCoordinate);
        }
        if std::mem::replace(&mut seen[usize::from(x)], true) {
            return Err(ShamirError::DuplicateShare);
        }
        xs.push(x);
    }

    // Lagrange basis polynomials evaluated at 0:
    // L_i(0) = Π_{j≠i} (0 − x_j) / (x_i − x_j) = P / (x_i · D_i), with
    // P = Π_j x_j and D_i = Π_{j≠i} (x_i ⊕ x_j). The D_i, the O(k²) part,
    // are computed for eight i at once, one per byte of a word.
    let product = xs.iter().fold(1u8, |acc, &x| gf256::mul(acc, x));
    let mut dens = vec![0u8; xs.len()];
    for (g, (group, out)) in xs.chunks(8).zip(dens.chunks_mut(8)).enumerate() {
        let lanes_xi = load(group);
        let mut den = gf256::LANES_LOW;
        for (j, &xj) in xs.iter().enumerate() {
            let mut factor = lanes_xi ^ (gf256::LANES_LOW * u64::from(xj));
            if j / 8 == g {
                // The lane where i == j holds x_i ⊕ x_i = 0; that factor is
                // skipped (multiplied by 1 instead).
                factor |= 1u64 << (8 * (j % 8));
            }
            den = gf256::mul_lanes(den, factor);
        }
        store(den, out);
    }
    let basis: Vec<u8> = xs
        .iter()
        .zip(&dens)
        .map(|(&xi, &di)| gf256::div(product, gf256::mul(xi, di)))
        .collect();

    // Σ L_i(0) · y_i, eight bytes at a time.
    let mut acc: Zeroizing<Vec<u64>> = Zeroizing::new(vec![0u64; secret_len.div_ceil(8)]);
    for (part, &l) in parts.iter().zip(&basis) {
        let times_l = gf256::Lanes::new(l);
        let ys = part.get(..secret_len).unwrap_or_default();
        for (a, chunk) in acc.iter_mut().zip(ys.chunks(8)) {
            *a ^= times_l.mul(load(chunk));
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; secret_len]);
    for (chunk, &a) in secret.chunks_mut(8).zip(acc.iter()) {
        store(a, chunk);
    }
    Ok(secret)
}

/// Decodes one share as an operator types it, by Vault's rule
/// (`http/sys_seal.go`): hex if it decodes to 16..=33 bytes, otherwise
/// standard (padded) base64, otherwise an error. Surrounding whitespace (a
/// pasted newline) is ignored.
///
/// # Errors
/// [`ShamirError::InvalidEncoding`] ("'key' must be a valid hex or base64
/// string") when neither decoding works; [`ShamirError::ShareTooShort`] /
/// [`ShamirError::ShareTooLong`] when base64 decodes to a length outside
/// 16..=33.
pub fn parse_share(text: &str) -> Result<UnsealShare, ShamirError> {
    let text = text.trim().as_bytes();
    // Hex: only a length that could be accepted is worth decoding.
    if text.len().is_multiple_of(2) && (MIN_SHARE_LEN..=MAX_SHARE_LEN).contains(&(text.len() / 2)) {
        let mut buf = Zeroizing::new(vec![0u8; text.len() / 2]);
        if hex::decode_to_slice(text, &mut buf[..]).is_ok() {
            return Ok(UnsealShare::from_bytes(&buf)?);
        }
    }
    let mut buf = Zeroizing::new(vec![0u8; text.len() / 4 * 3 + 3]);
    match STANDARD.decode_slice(text, &mut buf[..]) {
        Ok(n) => {
            let decoded = buf.get(..n).unwrap_or_default();
            Ok(UnsealShare::from_bytes(decoded)?)
        }
        Err(_) => Err(ShamirError::InvalidEncoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_coordinates_are_distinct_non_zero_and_cover_the_range() {
        let xs = random_x_coordinates(255).unwrap();
        let mut sorted = xs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=255u8).collect::<Vec<_>>());
        assert_eq!(random_x_coordinates(0).unwrap(), Vec::<u8>::new());
    }

    /// Every value 1..=255 shows up as the first x-coordinate with roughly
    /// equal frequency (a biased shuffle, such as Sattolo's or `% 255`
    /// without rejection, fails a chi-square bound this loose only by luck).
    #[test]
    fn first_x_coordinate_is_uniform() {
        let trials = 255 * 200;
        let mut counts = [0u32; 256];
        for _ in 0..trials {
            counts[usize::from(random_x_coordinates(1).unwrap()[0])] += 1;
        }
        assert_eq!(counts[0], 0);
        let expected = f64::from(trials as u32) / 255.0;
        let chi2: f64 = counts[1..]
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum();
        // 254 degrees of freedom: mean 254, sd ≈ 22.5; 400 is > 6 sd.
        assert!(chi2 < 400.0, "chi-square {chi2}");
    }

    #[test]
    fn uniform_below_stays_in_range() {
        let mut r = RandomBytes::new();
        for range in [1usize, 2, 3, 100, 255, 256] {
            for _ in 0..200 {
                assert!(r.uniform_below(range).unwrap() < range);
            }
        }
    }
}
