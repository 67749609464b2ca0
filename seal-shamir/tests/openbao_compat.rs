//! Compatibility with a real implementation: unseal keys from an OpenBao
//! `operator init` combine here to OpenBao's key-encryption key.
//!
//! The fixtures come from `tests/fixtures/make-openbao-fixture.sh` (OpenBao
//! v2.7.2; see `tests/fixtures/README.md`). Two independent proofs:
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

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use seal_core::{Kek, Seal, SealType, UnsealShare, blob};
use seal_shamir::{ShamirSeal, Submit, UnsealProgress, combine, parse_share};
use serde_json::Value;

const INIT: &str = include_str!("fixtures/openbao-init-5-3.json");
const STORAGE: &str = include_str!("fixtures/openbao-storage-5-3.json");

fn init_json() -> Value {
    serde_json::from_str(INIT).unwrap()
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} missing"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The five shares, parsed from their hex form.
fn shares_hex() -> Vec<UnsealShare> {
    strings(&init_json(), "unseal_keys_hex")
        .iter()
        .map(|s| parse_share(s).unwrap())
        .collect()
}

fn take(shares: &[UnsealShare], order: &[usize]) -> Vec<UnsealShare> {
    order
        .iter()
        .map(|&i| UnsealShare::from_bytes(shares[i].expose_secret()).unwrap())
        .collect()
}

fn combined(order: &[usize]) -> Vec<u8> {
    combine(&take(&shares_hex(), order)).unwrap().to_vec()
}

/// All k-subsets of 0..n, as index lists in increasing order.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    (0u32..(1 << n))
        .filter(|m| m.count_ones() as usize == k)
        .map(|m| (0..n).filter(|i| m & (1 << i) != 0).collect())
        .collect()
}

/// All orderings of `items`.
fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for (i, &first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

fn entry(path: &str) -> Vec<u8> {
    let v: Value = serde_json::from_str(STORAGE).unwrap();
    let b64 = v["entries_base64"][path]
        .as_str()
        .unwrap_or_else(|| panic!("{path} missing from the storage fixture"));
    STANDARD.decode(b64).unwrap()
}

/// Field `want` (length-delimited) of a protobuf message: enough to read
/// `BlobInfo.ciphertext` (field 1) from OpenBao's wrapper blob.
fn proto_bytes_field(msg: &[u8], want: u64) -> Option<&[u8]> {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut r = 0u64;
        for shift in (0..64).step_by(7) {
            let c = *b.get(*i)?;
            *i += 1;
            r |= u64::from(c & 0x7f) << shift;
            if c < 0x80 {
                return Some(r);
            }
        }
        None
    }
    let mut i = 0;
    while i < msg.len() {
        let key = varint(msg, &mut i)?;
        match key & 7 {
            0 => {
                varint(msg, &mut i)?;
            }
            2 => {
                let len = usize::try_from(varint(msg, &mut i)?).ok()?;
                let body = msg.get(i..i + len)?;
                i += len;
                if key >> 3 == want {
                    return Some(body);
                }
            }
            _ => return None,
        }
    }
    None
}

/// AES-256-GCM open of `nonce (12) | ct | tag`.
fn open(key: &[u8], nonce_ct_tag: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let (nonce, ct) = nonce_ct_tag.split_at(12);
    Aes256Gcm::new_from_slice(key)
        .unwrap()
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

/// Opens a barrier entry (`term u32 BE | 0x02 | nonce | ct | tag`, AAD =
/// path) with `key`.
fn open_barrier_entry(key: &[u8], path: &str) -> Vec<u8> {
    let value = entry(path);
    assert_eq!(&value[..4], &[0, 0, 0, 1], "{path}: term 1");
    assert_eq!(value[4], 2, "{path}: barrier version 2");
    open(key, &value[5..], path.as_bytes()).unwrap_or_else(|| panic!("{path} did not open"))
}

/// Opens `core/hsm/barrier-unseal-keys` with a candidate KEK.
fn unwrap_stored_root_key(kek: &[u8]) -> Option<Vec<u8>> {
    let stored = entry("core/hsm/barrier-unseal-keys");
    let ciphertext = proto_bytes_field(&stored, 1).expect("BlobInfo.ciphertext");
    let json = open(kek, ciphertext, b"")?;
    let keys: Vec<String> = serde_json::from_slice(&json).unwrap();
    assert_eq!(keys.len(), 1, "one stored root key");
    Some(STANDARD.decode(&keys[0]).unwrap())
}

#[test]
fn fixture_is_a_5_of_3_init_with_33_byte_shares() {
    let init = init_json();
    assert_eq!(init["unseal_shares"], 5);
    assert_eq!(init["unseal_threshold"], 3);
    let shares = shares_hex();
    assert_eq!(shares.len(), 5);
    for s in &shares {
        assert_eq!(s.len(), 33);
    }
    let config: Value = serde_json::from_slice(&entry("core/seal-config")).unwrap();
    assert_eq!(config["type"], "shamir");
    assert_eq!(config["secret_shares"], 5);
    assert_eq!(config["secret_threshold"], 3);
}

#[test]
fn hex_and_base64_forms_parse_to_the_same_share() {
    let init = init_json();
    let hex = strings(&init, "unseal_keys_hex");
    let b64 = strings(&init, "unseal_keys_b64");
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
    let reference = combined(&[0, 1, 2]);
    assert_eq!(reference.len(), 32);
    let mut checked = 0;
    for k in 3..=5 {
        for subset in subsets(5, k) {
            assert_eq!(combined(&subset), reference, "subset {subset:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 10 + 5 + 1);
}

#[test]
fn every_order_of_every_3_subset_and_of_the_full_set_agrees() {
    let reference = combined(&[0, 1, 2]);
    let mut orders = 0;
    for subset in subsets(5, 3) {
        for order in permutations(&subset) {
            assert_eq!(combined(&order), reference, "order {order:?}");
            orders += 1;
        }
    }
    for order in permutations(&[0, 1, 2, 3, 4]) {
        assert_eq!(combined(&order), reference, "order {order:?}");
        orders += 1;
    }
    for order in permutations(&[4, 2, 1, 0]) {
        assert_eq!(combined(&order), reference, "order {order:?}");
        orders += 1;
    }
    assert_eq!(orders, 60 + 120 + 24);
}

#[test]
fn no_2_subset_gives_the_secret() {
    let reference = combined(&[0, 1, 2]);
    for pair in subsets(5, 2) {
        let got = combined(&pair);
        assert_eq!(got.len(), 32);
        assert_ne!(got, reference, "pair {pair:?} recovered the secret");
        assert!(
            unwrap_stored_root_key(&got).is_none(),
            "pair {pair:?} opened the stored root key"
        );
    }
}

/// The combined value is OpenBao's KEK: it opens the stored root key, the
/// root key opens the keyring, the keyring's term-1 key opens
/// `core/shamir-kek`, and that entry holds exactly the combined value.
#[test]
fn combined_secret_is_openbaos_kek() {
    let kek = combined(&[4, 0, 2]);
    let root_key =
        unwrap_stored_root_key(&kek).expect("the combined KEK opens the stored root key");
    assert_eq!(root_key.len(), 32);

    let keyring: Value =
        serde_json::from_slice(&open_barrier_entry(&root_key, "core/keyring")).unwrap();
    let term1 = keyring["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["Term"] == 1)
        .expect("term 1 key");
    let term1_key = STANDARD.decode(term1["Value"].as_str().unwrap()).unwrap();
    let root_in_keyring = STANDARD
        .decode(
            keyring["MasterKey"]
                .as_str()
                .or(keyring["RootKey"].as_str())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(root_in_keyring, root_key);

    let stored_kek = open_barrier_entry(&term1_key, "core/shamir-kek");
    assert_eq!(stored_kek, kek, "core/shamir-kek holds the combined value");
}

/// OpenBao's Shamir wrapper body (`iv | ct | tag`, no AAD) is the body of a
/// `ShamirSeal` blob: under our header, `ShamirSeal` opens OpenBao's stored
/// root key.
#[tokio::test]
async fn shamir_seal_opens_openbaos_wrapped_root_key() {
    let kek = combined(&[1, 3, 4]);
    let seal = ShamirSeal::new();
    seal.set_kek(Kek::from_bytes(&kek).unwrap());
    let stored = entry("core/hsm/barrier-unseal-keys");
    let body = proto_bytes_field(&stored, 1).unwrap();
    let json = seal
        .decrypt(&blob::encode(SealType::Shamir, body), b"")
        .await
        .unwrap();
    let keys: Vec<String> = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        STANDARD.decode(&keys[0]).unwrap(),
        unwrap_stored_root_key(&kek).unwrap()
    );
}

/// Operators typing OpenBao's keys (base64 and hex mixed, one twice) into
/// the progress state machine unseal at the third distinct key.
#[test]
fn unseal_progress_with_openbaos_keys() {
    let init = init_json();
    let hex = strings(&init, "unseal_keys_hex");
    let b64 = strings(&init, "unseal_keys_b64");
    let progress = UnsealProgress::new();
    let pending = |r: Submit| match r {
        Submit::Pending(s) => s.progress,
        Submit::Complete(_) => panic!("completed early"),
    };
    assert_eq!(
        pending(progress.submit(parse_share(&b64[3]).unwrap(), 3).unwrap()),
        1
    );
    assert_eq!(
        pending(progress.submit(parse_share(&hex[3]).unwrap(), 3).unwrap()),
        1
    );
    assert_eq!(
        pending(progress.submit(parse_share(&hex[0]).unwrap(), 3).unwrap()),
        2
    );
    match progress.submit(parse_share(&b64[1]).unwrap(), 3).unwrap() {
        Submit::Complete(kek) => assert!(unwrap_stored_root_key(&kek).is_some()),
        Submit::Pending(s) => panic!("still pending at {s:?}"),
    }
    assert_eq!(progress.status().progress, 0);
}
