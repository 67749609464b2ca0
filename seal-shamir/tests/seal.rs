//! `ShamirSeal`: the seal conformance suite (with a KEK set), and the
//! Shamir-specific lifecycle (not ready before the KEK, forgotten on clear,
//! replaced on rekey).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use seal_core::{Kek, Seal, SealError, SealType};
use seal_shamir::{ShamirSeal, Submit, UnsealProgress, split};

async fn ready_seal() -> (Arc<dyn Seal>, ()) {
    let seal = ShamirSeal::new();
    seal.set_kek(Kek::generate().unwrap());
    (Arc::new(seal), ())
}

seal_core::seal_suite!(ready_seal);

#[tokio::test]
async fn not_ready_before_the_kek_and_after_clearing_it() {
    let seal = ShamirSeal::new();
    assert!(!seal.has_kek());
    assert_eq!(seal.seal_type(), SealType::Shamir);
    match seal.encrypt(b"root", b"aad").await {
        Err(SealError::NotReady(msg)) => assert!(msg.contains("unseal key shares"), "{msg}"),
        other => panic!("expected NotReady, got {other:?}"),
    }

    seal.set_kek(Kek::generate().unwrap());
    assert!(seal.has_kek());
    let blob = seal.encrypt(b"root", b"aad").await.unwrap();

    seal.clear_kek();
    assert!(!seal.has_kek());
    assert!(matches!(
        seal.decrypt(&blob, b"aad").await,
        Err(SealError::NotReady(_))
    ));
    assert!(seal.health_check().await.is_err());
}

#[tokio::test]
async fn blobs_open_only_under_their_kek() {
    let kek = Kek::generate().unwrap();
    let seal = ShamirSeal::new();
    seal.set_kek(Kek::from_bytes(kek.expose_secret()).unwrap());
    let blob = seal
        .encrypt(b"root key", b"core/hsm/barrier-unseal-keys")
        .await
        .unwrap();

    // A rekey installs another KEK: old blobs no longer open.
    seal.set_kek(Kek::generate().unwrap());
    assert!(matches!(
        seal.decrypt(&blob, b"core/hsm/barrier-unseal-keys").await,
        Err(SealError::Decrypt)
    ));
    // A second seal (another node) with the same KEK opens it.
    let other = ShamirSeal::new();
    other.set_kek(kek);
    assert_eq!(
        other
            .decrypt(&blob, b"core/hsm/barrier-unseal-keys")
            .await
            .unwrap()
            .as_slice(),
        b"root key"
    );
}

/// The intended flow: init splits a KEK and wraps the root key; after a
/// restart the operators' shares rebuild the KEK that opens it again.
#[tokio::test]
async fn shares_rebuild_the_kek_that_opens_the_root_key() {
    let kek = Kek::generate().unwrap();
    let shares = split(kek.expose_secret(), 5, 3).unwrap();
    let at_init = ShamirSeal::new();
    at_init.set_kek(kek);
    let stored = at_init.encrypt(&[0x5a; 32], b"").await.unwrap();

    let after_restart = ShamirSeal::new();
    let progress = UnsealProgress::new();
    let mut rebuilt = None;
    for s in [&shares[4], &shares[1], &shares[2]] {
        let copy = seal_core::UnsealShare::from_bytes(s.expose_secret()).unwrap();
        if let Submit::Complete(k) = progress.submit(copy, 3).unwrap() {
            rebuilt = Some(Kek::from_bytes(&k).unwrap());
        }
    }
    after_restart.set_kek(rebuilt.expect("three shares complete"));
    assert_eq!(
        after_restart
            .decrypt(&stored, b"")
            .await
            .unwrap()
            .as_slice(),
        [0x5a; 32]
    );
}

#[test]
fn debug_prints_no_key() {
    let seal = ShamirSeal::new();
    seal.set_kek(Kek::from_bytes(&[0xd7; 32]).unwrap());
    let text = format!("{seal:?}");
    assert!(
        !text.contains("215") && !text.to_lowercase().contains("d7"),
        "{text}"
    );
}

/// Vault ≥ 1.3 with stored keys: `core/hsm/barrier-unseal-keys` is Vault's
/// `EncryptedBlobInfo` whose ciphertext is `iv || AES-GCM(KEK, ["<b64 root>"])`
/// without associated data. The Shamir seal opens it with the combined KEK
/// (the AAD argument does not apply to Vault's blobs) and refuses another KEK.
#[tokio::test]
async fn opens_vaults_stored_keys_blob() {
    use aes_gcm::aead::{Aead, KeyInit};
    use aes_gcm::{Aes256Gcm, Nonce};
    use seal_core::vault_blob::{VaultBlob, encode};

    let kek = [9u8; 32];
    let payload = br#"["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]"#;
    let iv = [4u8; 12];
    let ct = Aes256Gcm::new_from_slice(&kek)
        .unwrap()
        .encrypt(Nonce::from_slice(&iv), &payload[..])
        .unwrap();
    let mut ciphertext = iv.to_vec();
    ciphertext.extend_from_slice(&ct);
    let blob = encode(&VaultBlob {
        ciphertext,
        ..VaultBlob::default()
    });
    let seal = ShamirSeal::new();
    seal.set_kek(Kek::from_bytes(&kek).unwrap());
    let plain = seal
        .decrypt(&blob, b"core/hsm/barrier-unseal-keys")
        .await
        .unwrap();
    assert_eq!(&plain[..], &payload[..]);
    seal.set_kek(Kek::from_bytes(&[8u8; 32]).unwrap());
    assert!(matches!(
        seal.decrypt(&blob, b"").await,
        Err(SealError::Decrypt)
    ));
}
