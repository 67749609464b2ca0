//! Property tests: random secrets, share counts and thresholds; and
//! arbitrary bytes in every input position never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use seal_core::UnsealShare;
use seal_shamir::{
    ShamirError, Submit, UnsealProgress, combine, combine_bytes, parse_share, split,
    validate_config,
};

fn copy(s: &UnsealShare) -> UnsealShare {
    UnsealShare::from_bytes(s.expose_secret()).unwrap()
}

/// A secret of a splittable length, a share count and a threshold within
/// Vault's limits, and a seed that picks subsets.
fn config() -> impl Strategy<Value = (Vec<u8>, usize, usize, u64)> {
    (2usize..=24)
        .prop_flat_map(|n| (Just(n), 2usize..=n))
        .prop_flat_map(|(n, k)| {
            (
                proptest::collection::vec(any::<u8>(), 15..=32),
                Just(n),
                Just(k),
                any::<u64>(),
            )
        })
}

/// `k` distinct indices in 0..n, in a seed-dependent order.
fn pick(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut state = seed | 1;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        idx.swap(i, (state % (i as u64 + 1)) as usize);
    }
    idx.truncate(k);
    idx
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Threshold-sized subsets (several, in random orders) recover the
    /// secret, as do larger ones.
    #[test]
    fn every_threshold_subset_recovers((secret, n, k, seed) in config()) {
        let shares = split(&secret, n, k).unwrap();
        prop_assert_eq!(shares.len(), n);
        for round in 0..4u64 {
            let subset: Vec<UnsealShare> =
                pick(n, k, seed.wrapping_add(round)).iter().map(|&i| copy(&shares[i])).collect();
            prop_assert_eq!(combine(&subset).unwrap().to_vec(), secret.clone());
        }
        prop_assert_eq!(combine(&shares).unwrap().to_vec(), secret);
    }

    /// Any smaller subset (of at least two shares) gives something else.
    /// A k-1 subset is independent of the secret, so it matches only with
    /// probability 2^-(8·len), i.e. never in practice.
    #[test]
    fn smaller_subsets_do_not_recover((secret, n, k, seed) in config()) {
        prop_assume!(k >= 3);
        let shares = split(&secret, n, k).unwrap();
        for size in 2..k {
            let subset: Vec<UnsealShare> =
                pick(n, size, seed).iter().map(|&i| copy(&shares[i])).collect();
            let got = combine(&subset).unwrap();
            prop_assert_ne!(got.as_slice(), &secret[..], "{} of {}/{}", size, n, k);
        }
    }

    /// Through the progress state machine, in random order with duplicates.
    #[test]
    fn progress_recovers_with_duplicates((secret, n, k, seed) in config()) {
        let shares = split(&secret, n, k).unwrap();
        let order = pick(n, k, seed);
        let p = UnsealProgress::new();
        let mut result = None;
        for (pos, &i) in order.iter().enumerate() {
            if pos + 1 < k {
                // A duplicate before each new share changes nothing.
                if pos > 0 {
                    let again = p.submit(copy(&shares[order[pos - 1]]), k).unwrap();
                    prop_assert!(matches!(again, Submit::Pending(ref s) if s.progress == pos));
                }
            }
            if let Submit::Complete(v) = p.submit(copy(&shares[i]), k).unwrap() {
                result = Some(v.to_vec());
            }
        }
        prop_assert_eq!(result, Some(secret));
    }

    /// Validation and split agree, and neither panics, for any counts.
    #[test]
    fn config_validation_never_panics(n in 0usize..600, k in 0usize..600) {
        let valid = validate_config(n, k).is_ok();
        prop_assert_eq!(valid, n >= 1 && k >= 1 && k <= n && n <= 255 && (n == 1 || k >= 2));
        let r = split(&[3u8; 20], n, k);
        if valid {
            prop_assert_eq!(r.unwrap().len(), n);
        } else {
            prop_assert!(r.is_err());
        }
    }

    /// Arbitrary bytes as shares: combine errors or returns a value of the
    /// right length, never panics.
    #[test]
    fn arbitrary_share_bytes_never_panic(parts in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..40), 0..8)) {
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        if let Ok(secret) = combine_bytes(&slices) {
            prop_assert_eq!(secret.len(), parts[0].len() - 1);
        }
        let shares: Vec<UnsealShare> =
            parts.iter().filter_map(|p| UnsealShare::from_bytes(p).ok()).collect();
        let _ = combine(&shares);
        let p = UnsealProgress::new();
        for s in shares {
            let _ = p.submit(s, 3);
        }
    }

    /// Arbitrary text as a typed share: parse errors or gives 16..=33
    /// bytes, never panics.
    #[test]
    fn arbitrary_share_text_never_panics(text in ".{0,120}") {
        if let Ok(share) = parse_share(&text) {
            prop_assert!((16..=33).contains(&share.len()));
        }
    }

    /// Text drawn from the hex and base64 alphabets (more likely to get past
    /// the first checks).
    #[test]
    fn arbitrary_encoded_text_never_panics(text in "[0-9a-fA-F+/=]{0,80}") {
        match parse_share(&text) {
            Ok(share) => prop_assert!((16..=33).contains(&share.len())),
            Err(e) => {
                let expected = matches!(
                    e,
                    ShamirError::InvalidEncoding
                        | ShamirError::ShareTooShort { .. }
                        | ShamirError::ShareTooLong { .. }
                );
                prop_assert!(expected, "unexpected error {:?}", e);
            }
        }
    }

    /// Arbitrary secrets of any length and counts: split errors or gives
    /// shares that recover the secret.
    #[test]
    fn arbitrary_split_inputs_never_panic(
        secret in proptest::collection::vec(any::<u8>(), 0..40),
        n in 0usize..10,
        k in 0usize..10,
    ) {
        if let Ok(shares) = split(&secret, n, k) {
            if n == 1 {
                prop_assert_eq!(shares[0].expose_secret(), &secret[..]);
            } else {
                prop_assert_eq!(combine(&shares[..k]).unwrap().to_vec(), secret);
            }
        }
    }
}
