//! Interoperability with Vault's on-disk format, checked against an
//! independent implementation (RustCrypto `aes-gcm` used directly here, and
//! hand-written JSON in the shape Vault's Go code writes) and against the
//! AES-GCM known-answer vectors of McGrew & Viega, "The Galois/Counter Mode
//! of Operation (GCM)", test cases 13 and 14 (AES-256, all-zero key and IV).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use barrier::{AeadBackend, Barrier, KEYRING_PATH};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use seal_core::{MemoryStorage, RootKey, Storage};

const ROOT: [u8; 32] = [0x5a; 32];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Encrypts `plaintext` the way Vault's barrier does, independently of the
/// crate under test.
fn vault_encrypt(key: &[u8], term: u32, path: &str, plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    let nonce = [0x11u8; 12];
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: path.as_bytes(),
            },
        )
        .unwrap();
    let mut out = term.to_be_bytes().to_vec();
    out.push(2);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn vault_decrypt(key: &[u8], path: &str, entry: &[u8]) -> Vec<u8> {
    assert_eq!(entry[4], 2);
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    cipher
        .decrypt(
            Nonce::from_slice(&entry[5..17]),
            Payload {
                msg: &entry[17..],
                aad: path.as_bytes(),
            },
        )
        .unwrap()
}

/// A keyring JSON exactly as Vault's `EncodedKeyring` marshals it.
fn vault_keyring_json(install_time: &str, encryptions: Option<u64>, rotation: &str) -> String {
    let term_key = B64.encode([0u8; 32]);
    let count = encryptions.map_or(String::new(), |n| format!(",\"encryptions\":{n}"));
    format!(
        "{{\"MasterKey\":\"{}\",\"Keys\":[{{\"Term\":1,\"Version\":1,\"Value\":\"{term_key}\",\"InstallTime\":\"{install_time}\"{count}}}],\"RotationConfig\":{rotation}}}",
        B64.encode(ROOT)
    )
}

async fn barrier_over(json: &str, backend: AeadBackend) -> (Arc<MemoryStorage>, Barrier) {
    let storage = Arc::new(MemoryStorage::new());
    let entry = vault_encrypt(&ROOT, 1, KEYRING_PATH, json.as_bytes());
    Storage::put(storage.as_ref(), KEYRING_PATH, &entry)
        .await
        .unwrap();
    let barrier = Barrier::with_backend(storage.clone(), backend);
    barrier
        .unseal(&RootKey::from_bytes(&ROOT).unwrap())
        .await
        .unwrap();
    (storage, barrier)
}

const DEFAULT_ROTATION: &str = r#"{"Disabled":false,"MaxOperations":3865470566,"Interval":0}"#;

#[tokio::test]
async fn unseals_a_vault_keyring_and_decrypts_known_answers() {
    for &backend in AeadBackend::ALL {
        let json = vault_keyring_json(
            "2023-05-01T10:20:30.123456789+02:00",
            Some(42),
            DEFAULT_ROTATION,
        );
        let (_, b) = barrier_over(&json, backend).await;
        let status = b.key_status().await.unwrap();
        assert_eq!(status.term, 1);
        assert_eq!(status.encryptions, 42);
        assert_eq!(
            status.install_time,
            time::macros::datetime!(2023-05-01 10:20:30.123456789 +02:00)
        );

        // Test case 14: P = 16 zero bytes → C, T. Empty path = no AAD.
        let mut entry = vec![0, 0, 0, 1, 2];
        entry.extend([0u8; 12]);
        entry.extend(unhex("cea7403d4d606b6e074ec5d3baf39d18"));
        entry.extend(unhex("d0d1c8a799996bf0265b98b5d48ab919"));
        assert_eq!(&*b.decrypt("", &entry).unwrap(), &[0u8; 16], "{backend}");
        // Test case 13: empty plaintext, tag only.
        let mut entry = vec![0, 0, 0, 1, 2];
        entry.extend([0u8; 12]);
        entry.extend(unhex("530f8afbc74536b9a963b4f1c4cb738b"));
        assert!(b.decrypt("", &entry).unwrap().is_empty(), "{backend}");

        // An entry Vault would write under a path.
        let vault_entry =
            vault_encrypt(&[0u8; 32], 1, "logical/abc/secret", b"{\"password\":\"x\"}");
        assert_eq!(
            &*b.decrypt("logical/abc/secret", &vault_entry).unwrap(),
            b"{\"password\":\"x\"}"
        );
        // And what the barrier writes, Vault's code reads.
        let ours = b.encrypt("logical/abc/other", b"from strongroom").unwrap();
        assert_eq!(
            vault_decrypt(&[0u8; 32], "logical/abc/other", &ours),
            b"from strongroom"
        );
    }
}

#[tokio::test]
async fn writes_the_keyring_in_vaults_json_shape() {
    for &backend in AeadBackend::ALL {
        let json = vault_keyring_json("2024-01-02T03:04:05Z", None, DEFAULT_ROTATION);
        let (storage, b) = barrier_over(&json, backend).await;
        let new_term = b.rotate().await.unwrap();
        let stored = Storage::get(storage.as_ref(), KEYRING_PATH)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&stored[..5], &[0, 0, 0, 1, 2], "keyring stays term 1");
        let plain = vault_decrypt(&ROOT, KEYRING_PATH, &stored);
        let value: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(value["MasterKey"], B64.encode(ROOT));
        let keys = value["Keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["Term"], 1);
        assert_eq!(keys[0]["Version"], 1);
        assert_eq!(keys[0]["Value"], B64.encode([0u8; 32]));
        assert_eq!(keys[0]["InstallTime"], "2024-01-02T03:04:05Z");
        assert_eq!(keys[1]["Term"], new_term);
        assert_eq!(
            B64.decode(keys[1]["Value"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert!(
            time::OffsetDateTime::parse(
                keys[1]["InstallTime"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
        assert_eq!(value["RotationConfig"]["Disabled"], false);
        assert_eq!(value["RotationConfig"]["MaxOperations"], 3_865_470_566u64);
        assert_eq!(value["RotationConfig"]["Interval"], 0);
    }
}

#[tokio::test]
async fn auto_rotation_triggers_like_vault() {
    let day_ns = 86_400_000_000_000u64;
    let cases = [
        // (what, install time, encryptions, rotation config, rotates?)
        (
            "over max operations",
            "2099-01-01T00:00:00Z",
            Some(3_865_470_567),
            DEFAULT_ROTATION.to_owned(),
            true,
        ),
        (
            "at max operations",
            "2099-01-01T00:00:00Z",
            Some(3_865_470_566),
            DEFAULT_ROTATION.to_owned(),
            false,
        ),
        (
            "interval elapsed",
            "2020-01-01T00:00:00Z",
            Some(5),
            format!(r#"{{"MaxOperations":0,"Interval":{day_ns}}}"#),
            true,
        ),
        (
            "interval not elapsed",
            "2099-01-01T00:00:00Z",
            Some(5),
            format!(r#"{{"MaxOperations":0,"Interval":{day_ns}}}"#),
            false,
        ),
        (
            "legacy key a year old",
            "2020-01-01T00:00:00Z",
            None,
            DEFAULT_ROTATION.to_owned(),
            true,
        ),
        (
            "disabled",
            "2020-01-01T00:00:00Z",
            Some(u64::MAX),
            format!(r#"{{"Disabled":true,"Interval":{day_ns}}}"#),
            false,
        ),
    ];
    for (what, install, count, rotation, rotates) in cases {
        let json = vault_keyring_json(install, count, &rotation);
        let (_, b) = barrier_over(&json, AeadBackend::default()).await;
        let result = b.check_auto_rotate().await.unwrap();
        assert_eq!(result, rotates.then_some(2), "{what}");
    }
}

#[tokio::test]
async fn stored_rotation_config_is_sanitized_on_load() {
    let json = vault_keyring_json(
        "2099-01-01T00:00:00Z",
        Some(1),
        r#"{"Disabled":false,"MaxOperations":12,"Interval":1000}"#,
    );
    let (_, b) = barrier_over(&json, AeadBackend::default()).await;
    let cfg = b.rotation_config().await.unwrap();
    assert_eq!(cfg.max_operations, 1_000_000);
    assert_eq!(cfg.interval, Some(std::time::Duration::from_secs(86_400)));
    assert!(cfg.enabled);
}

#[tokio::test]
async fn corrupt_keyrings_are_reported_not_panicked() {
    for (json, needle) in [
        ("not json", "does not parse"),
        (r#"{"MasterKey":"!!!","Keys":[]}"#, "does not parse"),
        (
            r#"{"MasterKey":"WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo=","Keys":[]}"#,
            "no term keys",
        ),
    ] {
        let storage = Arc::new(MemoryStorage::new());
        let entry = vault_encrypt(&ROOT, 1, KEYRING_PATH, json.as_bytes());
        Storage::put(storage.as_ref(), KEYRING_PATH, &entry)
            .await
            .unwrap();
        let b = Barrier::new(storage);
        let err = b
            .unseal(&RootKey::from_bytes(&ROOT).unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{json}: {err}");
        assert!(
            !err.to_string().contains("WlpaWl"),
            "key material in error: {err}"
        );
        assert!(b.is_sealed());
    }
    // A keyring stored under a term other than 1.
    let storage = Arc::new(MemoryStorage::new());
    let json = vault_keyring_json("2099-01-01T00:00:00Z", None, DEFAULT_ROTATION);
    let entry = vault_encrypt(&ROOT, 2, KEYRING_PATH, json.as_bytes());
    Storage::put(storage.as_ref(), KEYRING_PATH, &entry)
        .await
        .unwrap();
    let err = Barrier::new(storage)
        .unseal(&RootKey::from_bytes(&ROOT).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("term 2"), "{err}");
}
