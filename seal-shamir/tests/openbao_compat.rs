//! Compatibility with a real implementation: unseal keys from an OpenBao
//! `operator init` combine here to OpenBao's key-encryption key.
//!
//! The fixtures come from `tests/fixtures/make-openbao-fixture.sh` (OpenBao
//! v2.7.2; see `tests/fixtures/README.md`); `live_openbao.rs` repeats the
//! central checks on a fresh init every run. Two independent proofs:
//!
//! 1. Every 3-, 4- and 5-subset of the five shares, in many orders, combines
//!    to one and the same 32-byte value. Shares agree on a value only when
//!    they interpolate the true polynomial, so agreement proves the
//!    interpolation.
//! 2. That value is OpenBao's KEK, checked cryptographically against
//!    OpenBao's own storage: it AES-GCM-opens the stored root key
//!    (`core/hsm/barrier-unseal-keys`), whose root key opens the keyring,
//!    whose term-1 key opens `core/shamir-kek` — which holds the very value
//!    combined here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{OpenBaoInit, permutations, subsets};
use seal_core::{Kek, Seal, SealType, blob};
use seal_shamir::{ShamirSeal, Submit, UnsealProgress, parse_share};
use serde_json::Value;

fn fixture() -> OpenBaoInit {
    OpenBaoInit::from_strs(
        include_str!("fixtures/openbao-init-5-3.json"),
        include_str!("fixtures/openbao-storage-5-3.json"),
    )
}

#[test]
fn fixture_is_a_5_of_3_init_with_33_byte_shares() {
    let f = fixture();
    assert_eq!(f.init["unseal_shares"], 5);
    assert_eq!(f.init["unseal_threshold"], 3);
    let shares = f.shares();
    assert_eq!(shares.len(), 5);
    for s in &shares {
        assert_eq!(s.len(), 33);
    }
    let config: Value = serde_json::from_slice(&f.entry("core/seal-config")).unwrap();
    assert_eq!(config["type"], "shamir");
    assert_eq!(config["secret_shares"], 5);
    assert_eq!(config["secret_threshold"], 3);
}

#[test]
fn hex_and_base64_forms_parse_to_the_same_share() {
    let f = fixture();
    let hex = f.keys("unseal_keys_hex");
    let b64 = f.keys("unseal_keys_b64");
    assert_eq!(hex.len(), 5);
    for (h, b) in hex.iter().zip(&b64) {
        assert_eq!(parse_share(h).unwrap(), parse_share(b).unwrap());
        assert_eq!(
            parse_share(&h.to_uppercase()).unwrap(),
            parse_share(b).unwrap()
        );
    }
}

#[test]
fn every_3_4_and_5_subset_combines_to_one_32_byte_secret() {
    let f = fixture();
    let reference = f.combined(&[0, 1, 2]);
    assert_eq!(reference.len(), 32);
    let mut checked = 0;
    for k in 3..=5 {
        for subset in subsets(5, k) {
            assert_eq!(f.combined(&subset), reference, "subset {subset:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 10 + 5 + 1);
}

#[test]
fn every_order_of_every_3_subset_and_of_the_full_set_agrees() {
    let f = fixture();
    let reference = f.combined(&[0, 1, 2]);
    let mut orders = 0;
    let mut all = Vec::new();
    for subset in subsets(5, 3) {
        all.extend(permutations(&subset));
    }
    all.extend(permutations(&[0, 1, 2, 3, 4]));
    all.extend(permutations(&[4, 2, 1, 0]));
    for order in all {
        assert_eq!(f.combined(&order), reference, "order {order:?}");
        orders += 1;
    }
    assert_eq!(orders, 60 + 120 + 24);
}

#[test]
fn no_2_subset_gives_the_secret() {
    let f = fixture();
    let reference = f.combined(&[0, 1, 2]);
    for pair in subsets(5, 2) {
        let got = f.combined(&pair);
        assert_eq!(got.len(), 32);
        assert_ne!(got, reference, "pair {pair:?} recovered the secret");
        assert!(
            f.unwrap_stored_root_key(&got).is_none(),
            "pair {pair:?} opened the stored root key"
        );
    }
}

#[test]
fn combined_secret_is_openbaos_kek() {
    let f = fixture();
    f.assert_is_openbaos_kek(&f.combined(&[4, 0, 2]));
}

/// OpenBao's Shamir wrapper body (`iv | ct | tag`, no AAD) is the body of a
/// `ShamirSeal` blob: under our header, `ShamirSeal` opens OpenBao's stored
/// root key.
#[tokio::test]
async fn shamir_seal_opens_openbaos_wrapped_root_key() {
    let f = fixture();
    let kek = f.combined(&[1, 3, 4]);
    let seal = ShamirSeal::new();
    seal.set_kek(Kek::from_bytes(&kek).unwrap());
    let json = seal
        .decrypt(&blob::encode(SealType::Shamir, &f.wrapped_root_key()), b"")
        .await
        .unwrap();
    let keys: Vec<String> = serde_json::from_slice(&json).unwrap();
    assert_eq!(keys.len(), 1);
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&keys[0])
            .unwrap(),
        f.unwrap_stored_root_key(&kek).unwrap()
    );
}

/// Operators typing OpenBao's keys (base64 and hex mixed, one twice) into
/// the progress state machine unseal at the third distinct key.
#[test]
fn unseal_progress_with_openbaos_keys() {
    let f = fixture();
    let hex = f.keys("unseal_keys_hex");
    let b64 = f.keys("unseal_keys_b64");
    let progress = UnsealProgress::new();
    let pending = |r: Submit| match r {
        Submit::Pending(s) => s.progress,
        Submit::Complete(_) => panic!("completed early"),
    };
    let submit = |text: &str| progress.submit(parse_share(text).unwrap(), 3).unwrap();
    assert_eq!(pending(submit(&b64[3])), 1);
    assert_eq!(pending(submit(&hex[3])), 1, "same key, other encoding");
    assert_eq!(pending(submit(&hex[0])), 2);
    match submit(&b64[1]) {
        Submit::Complete(kek) => f.assert_is_openbaos_kek(&kek),
        Submit::Pending(s) => panic!("still pending at {s:?}"),
    }
    assert_eq!(progress.status().progress, 0);
}
