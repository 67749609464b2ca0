//! Split, combine, parse and config limits: Vault's rules case by case, and
//! shares made here checked by an independent implementation of Vault's
//! interpolation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use seal_core::UnsealShare;
use seal_shamir::{ShamirError, combine, combine_bytes, parse_share, split, validate_config};

fn copy(s: &UnsealShare) -> UnsealShare {
    UnsealShare::from_bytes(s.expose_secret()).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An independent GF(2^8) built from log/exp tables over generator 3 (fine
/// for a test oracle, unlike in the library where table lookups would leak
/// secrets through the cache), and Vault's `interpolatePolynomial` at 0
/// written the way Vault writes it.
mod oracle {
    pub(crate) struct Field {
        exp: [u8; 510],
        log: [u8; 256],
    }

    impl Field {
        pub(crate) fn new() -> Self {
            let mut exp = [0u8; 510];
            let mut log = [0u8; 256];
            let mut x = 1u8;
            for i in 0..255 {
                exp[i] = x;
                exp[i + 255] = x;
                log[usize::from(x)] = i as u8;
                // x *= 3 : x ^ xtime(x)
                let xtime = (x << 1) ^ if x & 0x80 != 0 { 0x1b } else { 0 };
                x ^= xtime;
            }
            Self { exp, log }
        }

        pub(crate) fn mul(&self, a: u8, b: u8) -> u8 {
            if a == 0 || b == 0 {
                return 0;
            }
            self.exp[usize::from(self.log[usize::from(a)]) + usize::from(self.log[usize::from(b)])]
        }

        pub(crate) fn div(&self, a: u8, b: u8) -> u8 {
            assert_ne!(b, 0);
            if a == 0 {
                return 0;
            }
            self.exp[usize::from(self.log[usize::from(a)]) + 255
                - usize::from(self.log[usize::from(b)])]
        }
    }

    /// Vault `shamir.Combine`: for each byte, interpolate the points
    /// (x_i, y_i) at x = 0.
    pub(crate) fn combine(parts: &[&[u8]]) -> Vec<u8> {
        let f = Field::new();
        let len = parts[0].len() - 1;
        let xs: Vec<u8> = parts.iter().map(|p| p[len]).collect();
        (0..len)
            .map(|b| {
                let mut result = 0u8;
                for (i, part) in parts.iter().enumerate() {
                    let mut basis = 1u8;
                    for (j, &xj) in xs.iter().enumerate() {
                        if i == j {
                            continue;
                        }
                        let num = xj; // 0 ^ xj
                        let denom = xs[i] ^ xj;
                        basis = f.mul(basis, f.div(num, denom));
                    }
                    result ^= f.mul(part[b], basis);
                }
                result
            })
            .collect()
    }
}

#[test]
fn oracle_field_agrees_with_fips_197() {
    let f = oracle::Field::new();
    assert_eq!(f.mul(0x57, 0x83), 0xc1);
    assert_eq!(f.div(1, 0x53), 0xca);
}

#[test]
fn shares_made_here_have_vaults_layout() {
    let secret = [0x42u8; 32];
    let shares = split(&secret, 5, 3).unwrap();
    assert_eq!(shares.len(), 5);
    let mut xs = Vec::new();
    for s in &shares {
        let bytes = s.expose_secret();
        assert_eq!(bytes.len(), 33, "32 y-bytes then x");
        let x = bytes[32];
        assert_ne!(x, 0, "x = 0 would be the secret itself");
        xs.push(x);
        // Encoded as Vault prints them: 66 hex characters, 44 base64.
        let h = hex(bytes);
        let b = STANDARD.encode(bytes);
        assert_eq!(h.len(), 66);
        assert_eq!(b.len(), 44);
        assert_eq!(parse_share(&h).unwrap(), *s);
        assert_eq!(parse_share(&b).unwrap(), *s);
    }
    xs.sort_unstable();
    xs.dedup();
    assert_eq!(xs.len(), 5, "x-coordinates are distinct");
}

#[test]
fn shares_made_here_combine_under_vaults_algorithm() {
    for (n, k) in [(2, 2), (5, 3), (10, 10), (255, 2), (255, 255)] {
        let secret: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let shares = split(&secret, n, k).unwrap();
        let parts: Vec<&[u8]> = shares.iter().take(k).map(|s| s.expose_secret()).collect();
        assert_eq!(oracle::combine(&parts), secret, "{n}/{k} via the oracle");
        assert_eq!(combine_bytes(&parts).unwrap().as_slice(), secret, "{n}/{k}");
        // And the last k shares, in reverse.
        let parts: Vec<&[u8]> = shares
            .iter()
            .rev()
            .take(k)
            .map(|s| s.expose_secret())
            .collect();
        assert_eq!(oracle::combine(&parts), secret);
    }
}

#[test]
fn secrets_of_every_allowed_length_round_trip() {
    for len in 15..=32 {
        let secret: Vec<u8> = (0..len as u8).collect();
        let shares = split(&secret, 4, 2).unwrap();
        assert!(shares.iter().all(|s| s.len() == len + 1));
        assert_eq!(combine(&shares[2..]).unwrap().as_slice(), secret);
    }
}

#[test]
fn a_single_share_is_the_raw_secret() {
    let kek = [9u8; 32];
    let shares = split(&kek, 1, 1).unwrap();
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0].expose_secret(), kek, "no x byte is appended");
    // As Vault prints it: 64 hex characters, which parse back to 32 bytes.
    assert_eq!(parse_share(&hex(&kek)).unwrap().len(), 32);
}

#[test]
fn secret_lengths_outside_the_share_format_are_refused() {
    for (len, n, k) in [
        (0, 5, 3),
        (14, 5, 3),
        (33, 5, 3),
        (64, 2, 2),
        (15, 1, 1),
        (34, 1, 1),
    ] {
        let err = split(&vec![1u8; len], n, k).unwrap_err();
        assert_eq!(err, ShamirError::SecretLength { len }, "len {len} {n}/{k}");
    }
    assert!(split(&[1u8; 33], 1, 1).is_ok());
    assert!(split(&[1u8; 16], 1, 1).is_ok());
}

#[test]
fn config_limits_and_messages_are_vaults() {
    let cases: [(usize, usize, Option<&str>); 12] = [
        (1, 1, None),
        (5, 3, None),
        (255, 255, None),
        (255, 2, None),
        (2, 2, None),
        (0, 0, Some("shares must be at least one")),
        (0, 1, Some("shares must be at least one")),
        (3, 0, Some("threshold must be at least one")),
        (
            5,
            1,
            Some("threshold must be greater than one for multiple shares"),
        ),
        (256, 3, Some("shares must be less than 256")),
        (300, 256, Some("shares must be less than 256")),
        (3, 4, Some("threshold cannot be larger than shares")),
    ];
    for (n, k, want) in cases {
        let got = validate_config(n, k).err().map(|e| e.to_string());
        assert_eq!(got.as_deref(), want, "{n}/{k}");
        // split enforces the same limits.
        if let Some(msg) = want {
            assert_eq!(split(&[1u8; 32], n, k).unwrap_err().to_string(), msg);
        }
    }
}

#[test]
fn combine_refuses_too_few_shares() {
    let shares = split(&[1u8; 32], 3, 2).unwrap();
    assert_eq!(
        combine(&[]).unwrap_err(),
        ShamirError::TooFewShares { got: 0 }
    );
    assert_eq!(
        combine(&shares[..1]).unwrap_err(),
        ShamirError::TooFewShares { got: 1 }
    );
    assert!(
        combine(&shares[..1])
            .unwrap_err()
            .to_string()
            .starts_with("less than two parts cannot be used to reconstruct the secret")
    );
}

#[test]
fn combine_refuses_duplicate_x() {
    let shares = split(&[1u8; 32], 3, 2).unwrap();
    let dup = [copy(&shares[0]), copy(&shares[0])];
    assert_eq!(combine(&dup).unwrap_err(), ShamirError::DuplicateShare);
    // Same x, different y (a corrupted share) is a duplicate too.
    let mut other = shares[1].expose_secret().to_vec();
    other[32] = shares[0].expose_secret()[32];
    let dup = [copy(&shares[0]), UnsealShare::from_bytes(&other).unwrap()];
    let err = combine(&dup).unwrap_err();
    assert_eq!(err, ShamirError::DuplicateShare);
    assert!(err.to_string().starts_with("duplicate part detected"));
}

#[test]
fn combine_refuses_mismatched_lengths() {
    let a = split(&[1u8; 32], 3, 2).unwrap();
    let b = split(&[1u8; 20], 3, 2).unwrap();
    let err = combine(&[copy(&a[0]), copy(&b[1])]).unwrap_err();
    assert_eq!(
        err,
        ShamirError::LengthMismatch {
            first: 33,
            other: 21
        }
    );
    assert!(
        err.to_string()
            .starts_with("all parts must be the same length")
    );
}

#[test]
fn combine_refuses_x_zero() {
    let shares = split(&[1u8; 32], 3, 2).unwrap();
    let mut zero = shares[1].expose_secret().to_vec();
    zero[32] = 0;
    let err = combine(&[copy(&shares[0]), UnsealShare::from_bytes(&zero).unwrap()]).unwrap_err();
    assert_eq!(err, ShamirError::ZeroCoordinate);
}

#[test]
fn combine_bytes_refuses_one_byte_parts() {
    assert_eq!(
        combine_bytes(&[&[1], &[2]]).unwrap_err(),
        ShamirError::ShareTooShort { len: 1, min: 2 }
    );
    assert_eq!(
        combine_bytes(&[&[], &[]]).unwrap_err(),
        ShamirError::ShareTooShort { len: 0, min: 2 }
    );
    // Two-byte parts (one y, one x) are the smallest Vault combines.
    let secret = combine_bytes(&[&[5, 1], &[5, 2]]).unwrap();
    assert_eq!(secret.as_slice(), [5], "a constant polynomial");
}

#[test]
fn parse_share_follows_vaults_hex_then_base64_rule() {
    let bytes: Vec<u8> = (1..=33).collect();
    let h = hex(&bytes);
    assert_eq!(parse_share(&h).unwrap().expose_secret(), bytes);
    assert_eq!(
        parse_share(&h.to_uppercase()).unwrap().expose_secret(),
        bytes
    );
    assert_eq!(
        parse_share(&format!("  {h}\n")).unwrap().expose_secret(),
        bytes
    );
    assert_eq!(
        parse_share(&STANDARD.encode(&bytes))
            .unwrap()
            .expose_secret(),
        bytes
    );
    // 16 bytes is the minimum either way.
    assert_eq!(parse_share(&hex(&[7u8; 16])).unwrap().len(), 16);
    assert_eq!(parse_share(&STANDARD.encode([7u8; 16])).unwrap().len(), 16);

    // Hex of 15 bytes (30 chars) is not a valid length; as base64 those 30
    // characters are not a multiple of 4: neither works.
    let err = parse_share(&hex(&[7u8; 15])).unwrap_err();
    assert_eq!(err, ShamirError::InvalidEncoding);
    assert_eq!(
        err.to_string(),
        "'key' must be a valid hex or base64 string"
    );

    // Hex of 12 bytes (24 chars) is also valid base64 of 18 bytes: accepted,
    // as Vault accepts it (and it then fails to combine).
    let both = hex(&[0xabu8; 12]);
    assert_eq!(parse_share(&both).unwrap().len(), 18);

    // Hex of 34 bytes (68 chars) decodes as base64 to 51 bytes: too long.
    assert_eq!(
        parse_share(&hex(&[1u8; 34])).unwrap_err(),
        ShamirError::ShareTooLong { len: 51, max: 33 }
    );
    // Short base64.
    let err = parse_share(&STANDARD.encode([1u8; 15])).unwrap_err();
    assert_eq!(err, ShamirError::ShareTooShort { len: 15, min: 16 });
    assert_eq!(
        err.to_string(),
        "invalid key: key is shorter than minimum 16 bytes (got 15 bytes)"
    );
    assert_eq!(
        parse_share(&STANDARD.encode([1u8; 40])).unwrap_err(),
        ShamirError::ShareTooLong { len: 40, max: 33 }
    );

    for bad in ["", "   ", "zz", "not a key!", "====", &"g".repeat(66)] {
        assert!(parse_share(bad).is_err(), "{bad:?}");
    }
    // URL-safe base64 and unpadded base64 are not Vault's encoding.
    let url = base64::engine::general_purpose::URL_SAFE.encode([0xfbu8; 24]);
    assert!(url.contains('-') || url.contains('_'));
    assert_eq!(parse_share(&url).unwrap_err(), ShamirError::InvalidEncoding);
    let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode([1u8; 32]);
    assert_eq!(
        parse_share(&unpadded).unwrap_err(),
        ShamirError::InvalidEncoding
    );
}

#[test]
fn errors_carry_no_share_bytes() {
    let share = [0xc3u8; 33];
    let errors = [
        parse_share(&hex(&[0xc3u8; 40])).unwrap_err(),
        parse_share("c3c3c3").unwrap_err(),
        combine(&[
            UnsealShare::from_bytes(&share).unwrap(),
            UnsealShare::from_bytes(&share).unwrap(),
        ])
        .unwrap_err(),
    ];
    for e in errors {
        let text = format!("{e} {e:?}").to_lowercase();
        assert!(!text.contains("c3c3"), "{text}");
    }
}

#[test]
fn each_split_is_fresh() {
    let secret = [1u8; 32];
    let a = split(&secret, 5, 3).unwrap();
    let b = split(&secret, 5, 3).unwrap();
    assert_ne!(a[0].expose_secret(), b[0].expose_secret());
}
