//! The barrier's specification, run once per AEAD backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

for_each_backend!(
    round_trip,
    layout_matches_vault,
    nonces_are_random,
    empty_path_means_no_aad,
    empty_value_is_a_minimum_length_entry,
    tamper_term,
    tamper_version,
    tamper_nonce,
    tamper_ciphertext,
    tamper_tag,
    tamper_path,
    moved_entry_does_not_decrypt,
    truncated_input_is_an_error,
    every_truncation_of_a_real_entry_is_refused,
    unknown_term_is_named,
    wrong_root_key,
    not_initialized,
    initialize_twice_refused,
    initialize_leaves_barrier_sealed,
    aes128_root_key,
    rotate_then_read_old,
    reopen_after_restart,
    sealed_refuses_every_operation,
    never_unsealed_refuses_every_operation,
    storage_view_reports_sealed,
    seal_then_unseal_again,
    unseal_twice_checks_the_key,
    reload_follows_rotation_by_another_node,
    reload_follows_rekey_by_another_node,
    reload_when_nothing_changed,
    rekey_root,
    rekey_root_with_the_same_key_rewrites_the_keyring,
    rotation_config_is_sanitized_and_persisted,
    encryptions_are_counted_and_persisted,
    check_auto_rotate_by_operations,
    reserved_paths_are_refused_and_hidden,
    core_folder_with_other_entries_stays_listed,
    transaction_encrypts_every_put,
    concurrent_encryptions_are_all_counted,
    debug_prints_no_key,
    every_data_operation_is_observed,
);

mod cases {
    use std::sync::Arc;
    use std::time::Duration;

    use barrier::cipher::{HEADER_LEN, NONCE_LEN, TAG_LEN, TERM_LEN, VERSION, entry_term};
    use barrier::{
        AeadBackend, Barrier, BarrierError, KEYRING_PATH, MIN_CIPHERTEXT_LEN, OVERHEAD,
        ROOT_KEY_PATH, RotationConfig,
    };
    use seal_core::{MemoryStorage, RootKey, Storage, StorageError, TxnOp};

    use crate::common::{assert_decrypt_error, assert_sealed, copy, raw, reopen, unsealed};

    pub(crate) async fn round_trip(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        b.put("secret/a", b"value a").await.unwrap();
        assert_eq!(
            b.get("secret/a").await.unwrap().as_deref(),
            Some(&b"value a"[..])
        );
        assert_eq!(b.get("secret/missing").await.unwrap(), None);
        let ct = b.encrypt("p", b"hello").unwrap();
        assert_eq!(&*b.decrypt("p", &ct).unwrap(), b"hello");
        b.delete("secret/a").await.unwrap();
        assert_eq!(b.get("secret/a").await.unwrap(), None);
    }

    pub(crate) async fn layout_matches_vault(backend: AeadBackend) {
        let (storage, b, _) = unsealed(backend).await;
        b.put("secret/x", b"0123456789").await.unwrap();
        let ct = raw(&storage, "secret/x").await;
        assert_eq!(ct.len(), TERM_LEN + 1 + NONCE_LEN + 10 + TAG_LEN);
        assert_eq!(ct.len(), OVERHEAD + 10);
        assert_eq!(&ct[..4], &1u32.to_be_bytes(), "term 1, big-endian");
        assert_eq!(ct[4], 0x02, "version byte");
        assert_eq!(entry_term(&ct).unwrap(), 1);
        assert!(
            !ct.windows(10).any(|w| w == b"0123456789"),
            "plaintext visible"
        );
        // The keyring itself: term 1, version 2, encrypted with the root key.
        let keyring = raw(&storage, KEYRING_PATH).await;
        assert_eq!(&keyring[..5], &[0, 0, 0, 1, VERSION]);
    }

    pub(crate) async fn nonces_are_random(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let one = b.encrypt("p", b"same").unwrap();
        let two = b.encrypt("p", b"same").unwrap();
        assert_ne!(one[5..HEADER_LEN], two[5..HEADER_LEN], "nonce reused");
        assert_ne!(one, two);
    }

    pub(crate) async fn empty_path_means_no_aad(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let ct = b.encrypt("", b"no aad").unwrap();
        assert_eq!(&*b.decrypt("", &ct).unwrap(), b"no aad");
        assert_decrypt_error(b.decrypt("x", &ct), "empty-path entry read with a path");
    }

    pub(crate) async fn empty_value_is_a_minimum_length_entry(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let ct = b.encrypt("e", b"").unwrap();
        assert_eq!(ct.len(), MIN_CIPHERTEXT_LEN);
        assert_eq!(MIN_CIPHERTEXT_LEN, 4 + 1 + 12 + 16);
        assert!(b.decrypt("e", &ct).unwrap().is_empty());
    }

    /// A term changed to another term the keyring holds gives the opaque
    /// error (wrong key); to one it lacks, `UnknownTerm`.
    pub(crate) async fn tamper_term(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let mut ct = b.encrypt("p", b"secret").unwrap();
        b.rotate().await.unwrap();
        ct[3] = 2;
        assert_decrypt_error(b.decrypt("p", &ct), "term 1 entry relabelled as term 2");
        ct[0] = 0x80;
        match b.decrypt("p", &ct) {
            Err(BarrierError::UnknownTerm { term }) => assert_eq!(term, 0x8000_0002),
            other => panic!("expected UnknownTerm, got {other:?}"),
        }
    }

    pub(crate) async fn tamper_version(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let ct = b.encrypt("p", b"secret").unwrap();
        for version in [0x00, 0x01, 0x03, 0xff] {
            let mut bad = ct.clone();
            bad[4] = version;
            match b.decrypt("p", &bad) {
                Err(BarrierError::UnknownVersion { version: v }) => assert_eq!(v, version),
                other => panic!("version {version:#x}: expected UnknownVersion, got {other:?}"),
            }
        }
    }

    pub(crate) async fn tamper_nonce(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let ct = b.encrypt("p", b"secret").unwrap();
        for i in TERM_LEN + 1..HEADER_LEN {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert_decrypt_error(b.decrypt("p", &bad), &format!("nonce byte {i} flipped"));
        }
    }

    pub(crate) async fn tamper_ciphertext(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let ct = b.encrypt("p", b"some secret value").unwrap();
        for i in HEADER_LEN..ct.len() - TAG_LEN {
            let mut bad = ct.clone();
            bad[i] ^= 0x80;
            assert_decrypt_error(
                b.decrypt("p", &bad),
                &format!("ciphertext byte {i} flipped"),
            );
        }
    }

    pub(crate) async fn tamper_tag(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let ct = b.encrypt("p", b"secret").unwrap();
        for i in ct.len() - TAG_LEN..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert_decrypt_error(b.decrypt("p", &bad), &format!("tag byte {i} flipped"));
        }
    }

    pub(crate) async fn tamper_path(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let ct = b.encrypt("secret/a", b"secret").unwrap();
        for other in ["secret/b", "secret/a/", "Secret/a", "secret/a ", ""] {
            assert_decrypt_error(b.decrypt(other, &ct), &format!("read as {other:?}"));
        }
    }

    /// An attacker with write access to storage copies an entry to another
    /// path: the AAD no longer matches.
    pub(crate) async fn moved_entry_does_not_decrypt(backend: AeadBackend) {
        let (storage, b, _) = unsealed(backend).await;
        b.put("users/alice/token", b"alice's").await.unwrap();
        let ct = raw(&storage, "users/alice/token").await;
        Storage::put(storage.as_ref(), "users/mallory/token", &ct)
            .await
            .unwrap();
        assert_decrypt_error(b.get("users/mallory/token").await, "moved entry");
    }

    pub(crate) async fn truncated_input_is_an_error(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let ct = b.encrypt("p", b"").unwrap();
        for len in [0, 1, 3, 4, 5, 16, 17, 20, 32] {
            match b.decrypt("p", &ct[..len]) {
                Err(BarrierError::TooShort { len: l, min }) => {
                    assert_eq!((l, min), (len, 33));
                }
                other => panic!("{len} bytes: expected TooShort, got {other:?}"),
            }
        }
        let err = b.decrypt("p", &ct[..5]).unwrap_err().to_string();
        assert!(err.contains("5 bytes") && err.contains("33"), "{err}");
    }

    pub(crate) async fn every_truncation_of_a_real_entry_is_refused(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let ct = b
            .encrypt("p", b"a value long enough to cut in many places")
            .unwrap();
        for len in 0..ct.len() {
            assert!(
                b.decrypt("p", &ct[..len]).is_err(),
                "{len}-byte prefix accepted"
            );
        }
        let mut longer = ct.clone();
        longer.push(0);
        assert_decrypt_error(b.decrypt("p", &longer), "extra trailing byte");
    }

    pub(crate) async fn unknown_term_is_named(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let mut ct = b.encrypt("p", b"x").unwrap();
        ct[..4].copy_from_slice(&7u32.to_be_bytes());
        let err = b.decrypt("p", &ct).unwrap_err();
        assert!(
            matches!(err, BarrierError::UnknownTerm { term: 7 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("term 7"), "{err}");
    }

    pub(crate) async fn wrong_root_key(backend: AeadBackend) {
        let (storage, b, _) = unsealed(backend).await;
        b.put("k", b"v").await.unwrap();
        let other = Barrier::with_backend(storage.clone(), backend);
        let wrong = RootKey::generate().unwrap();
        match other.unseal(&wrong).await {
            Err(BarrierError::InvalidRootKey) => {}
            r => panic!("expected InvalidRootKey, got {r:?}"),
        }
        assert!(other.is_sealed());
        assert_sealed(other.get("k").await, "get after a failed unseal");
        let short = RootKey::from_bytes(&[9u8; 16]).unwrap();
        assert!(matches!(
            other.unseal(&short).await,
            Err(BarrierError::InvalidRootKey)
        ));
    }

    pub(crate) async fn not_initialized(backend: AeadBackend) {
        let b = Barrier::with_backend(Arc::new(MemoryStorage::new()), backend);
        assert!(!b.is_initialized().await.unwrap());
        let root = RootKey::generate().unwrap();
        assert!(matches!(
            b.unseal(&root).await,
            Err(BarrierError::NotInitialized)
        ));
        assert!(b.is_sealed());
    }

    pub(crate) async fn initialize_twice_refused(backend: AeadBackend) {
        let (storage, b, root) = unsealed(backend).await;
        let before = raw(&storage, KEYRING_PATH).await;
        assert!(matches!(
            b.initialize(&root).await,
            Err(BarrierError::AlreadyInitialized)
        ));
        let other = Barrier::with_backend(storage.clone(), backend);
        let fresh = RootKey::generate().unwrap();
        assert!(matches!(
            other.initialize(&fresh).await,
            Err(BarrierError::AlreadyInitialized)
        ));
        assert_eq!(
            raw(&storage, KEYRING_PATH).await,
            before,
            "keyring overwritten"
        );
    }

    pub(crate) async fn initialize_leaves_barrier_sealed(backend: AeadBackend) {
        let b = Barrier::with_backend(Arc::new(MemoryStorage::new()), backend);
        let root = RootKey::generate().unwrap();
        b.initialize(&root).await.unwrap();
        assert!(b.is_initialized().await.unwrap());
        assert!(b.is_sealed());
        b.unseal(&root).await.unwrap();
        assert!(!b.is_sealed());
        assert_eq!(b.key_status().await.unwrap().term, 1);
    }

    pub(crate) async fn aes128_root_key(backend: AeadBackend) {
        let storage = Arc::new(MemoryStorage::new());
        let b = Barrier::with_backend(storage.clone(), backend);
        let root = RootKey::from_bytes(&[0x42; 16]).unwrap();
        b.initialize(&root).await.unwrap();
        b.unseal(&root).await.unwrap();
        b.put("k", b"v").await.unwrap();
        let again = reopen(&storage, backend, &root).await;
        assert_eq!(again.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }

    pub(crate) async fn rotate_then_read_old(backend: AeadBackend) {
        let (storage, b, _) = unsealed(backend).await;
        b.put("old", b"written under term 1").await.unwrap();
        let before = b.key_status().await.unwrap();
        assert_eq!(b.rotate().await.unwrap(), 2);
        b.put("new", b"written under term 2").await.unwrap();
        assert_eq!(b.rotate().await.unwrap(), 3);
        assert_eq!(entry_term(&raw(&storage, "old").await).unwrap(), 1);
        assert_eq!(entry_term(&raw(&storage, "new").await).unwrap(), 2);
        assert_eq!(
            b.get("old").await.unwrap().as_deref(),
            Some(&b"written under term 1"[..])
        );
        assert_eq!(
            b.get("new").await.unwrap().as_deref(),
            Some(&b"written under term 2"[..])
        );
        let status = b.key_status().await.unwrap();
        assert_eq!(status.term, 3);
        assert!(status.install_time >= before.install_time);
        assert!(
            status.encryptions <= 1,
            "new term starts near zero: {status:?}"
        );
        b.put("newest", b"3").await.unwrap();
        assert_eq!(entry_term(&raw(&storage, "newest").await).unwrap(), 3);
    }

    pub(crate) async fn reopen_after_restart(backend: AeadBackend) {
        let (storage, b, root) = unsealed(backend).await;
        b.put("a", b"1").await.unwrap();
        b.rotate().await.unwrap();
        b.put("b", b"2").await.unwrap();
        let cfg = RotationConfig {
            enabled: true,
            max_operations: 2_000_000,
            interval: Some(Duration::from_secs(7 * 24 * 3600)),
        };
        b.set_rotation_config(cfg).await.unwrap();
        let status = b.key_status().await.unwrap();
        drop(b);

        let restarted = Barrier::with_backend(storage.clone(), backend);
        assert!(restarted.is_sealed());
        assert!(restarted.is_initialized().await.unwrap());
        restarted.unseal(&root).await.unwrap();
        assert_eq!(
            restarted.get("a").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            restarted.get("b").await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
        let again = restarted.key_status().await.unwrap();
        assert_eq!(again.term, 2);
        assert_eq!(again.install_time, status.install_time);
        assert_eq!(restarted.rotation_config().await.unwrap(), cfg);
        restarted.put("c", b"3").await.unwrap();
        assert_eq!(entry_term(&raw(&storage, "c").await).unwrap(), 2);
    }

    async fn assert_every_operation_sealed(b: &Barrier) {
        let root = RootKey::generate().unwrap();
        assert!(b.is_sealed());
        assert_sealed(b.get("k").await, "get");
        assert_sealed(b.put("k", b"v").await, "put");
        assert_sealed(b.delete("k").await, "delete");
        assert_sealed(b.list("").await, "list");
        assert_sealed(
            b.transaction(vec![TxnOp::put("k", b"v".to_vec())]).await,
            "transaction",
        );
        assert_sealed(b.encrypt("k", b"v"), "encrypt");
        assert_sealed(b.decrypt("k", &[0u8; 64]), "decrypt");
        assert_sealed(b.rotate().await, "rotate");
        assert_sealed(b.key_status().await, "key_status");
        assert_sealed(b.rotation_config().await, "rotation_config");
        assert_sealed(
            b.set_rotation_config(RotationConfig::default()).await,
            "set_rotation_config",
        );
        assert_sealed(b.reload_keyring().await, "reload_keyring");
        assert_sealed(b.rekey_root(&root).await, "rekey_root");
        assert_sealed(b.check_auto_rotate().await, "check_auto_rotate");
    }

    pub(crate) async fn sealed_refuses_every_operation(backend: AeadBackend) {
        let (storage, b, _) = unsealed(backend).await;
        b.put("k", b"v").await.unwrap();
        let keyring = raw(&storage, KEYRING_PATH).await;
        b.seal();
        assert_every_operation_sealed(&b).await;
        assert_eq!(
            raw(&storage, "k").await.len(),
            OVERHEAD + 1,
            "sealing keeps data"
        );
        assert_eq!(
            raw(&storage, KEYRING_PATH).await,
            keyring,
            "sealed ops wrote nothing"
        );
        let message = BarrierError::Sealed.to_string();
        assert!(message.contains("Vault is sealed"), "{message}");
    }

    pub(crate) async fn never_unsealed_refuses_every_operation(backend: AeadBackend) {
        let storage = Arc::new(MemoryStorage::new());
        let b = Barrier::with_backend(storage.clone(), backend);
        assert_every_operation_sealed(&b).await;
        b.initialize(&RootKey::generate().unwrap()).await.unwrap();
        assert_every_operation_sealed(&b).await;
    }

    pub(crate) async fn storage_view_reports_sealed(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        b.seal();
        let view: Arc<dyn Storage> = Arc::new(b);
        let results = [
            ("get", view.get("k").await.map(|_| ())),
            ("put", view.put("k", b"v").await),
            ("delete", view.delete("k").await),
            ("list", view.list("").await.map(|_| ())),
            (
                "transaction",
                view.transaction(vec![TxnOp::delete("k")]).await,
            ),
        ];
        for (op, result) in results {
            match result {
                Err(err @ StorageError::Backend { .. }) => {
                    let source = std::error::Error::source(&err).expect("source");
                    assert!(
                        matches!(
                            source.downcast_ref::<BarrierError>(),
                            Some(BarrierError::Sealed)
                        ),
                        "{op}: source is {source:?}"
                    );
                    assert!(err.to_string().contains("Vault is sealed"), "{op}: {err}");
                }
                other => panic!("{op}: expected Backend(Sealed), got {other:?}"),
            }
        }
    }

    pub(crate) async fn seal_then_unseal_again(backend: AeadBackend) {
        let (_, b, root) = unsealed(backend).await;
        b.put("k", b"v").await.unwrap();
        b.rotate().await.unwrap();
        b.seal();
        b.seal();
        b.unseal(&root).await.unwrap();
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(b.key_status().await.unwrap().term, 2);
    }

    pub(crate) async fn unseal_twice_checks_the_key(backend: AeadBackend) {
        let (_, b, root) = unsealed(backend).await;
        b.unseal(&root).await.unwrap();
        let wrong = RootKey::generate().unwrap();
        assert!(matches!(
            b.unseal(&wrong).await,
            Err(BarrierError::InvalidRootKey)
        ));
        assert!(
            !b.is_sealed(),
            "a wrong key does not seal an unsealed barrier"
        );
    }

    pub(crate) async fn reload_follows_rotation_by_another_node(backend: AeadBackend) {
        let (storage, active, root) = unsealed(backend).await;
        let standby = reopen(&storage, backend, &root).await;
        active.rotate().await.unwrap();
        active.put("after", b"rotation").await.unwrap();
        let cfg = RotationConfig {
            enabled: false,
            ..RotationConfig::default()
        };
        active.set_rotation_config(cfg).await.unwrap();

        match standby.get("after").await {
            Err(BarrierError::UnknownTerm { term: 2 }) => {}
            other => panic!("before reload: expected UnknownTerm 2, got {other:?}"),
        }
        standby.reload_keyring().await.unwrap();
        assert_eq!(
            standby.get("after").await.unwrap().as_deref(),
            Some(&b"rotation"[..])
        );
        assert_eq!(standby.key_status().await.unwrap().term, 2);
        assert_eq!(standby.rotation_config().await.unwrap(), cfg);
        // Both now write term 2, and read each other.
        standby.put("from-standby", b"x").await.unwrap();
        assert_eq!(entry_term(&raw(&storage, "from-standby").await).unwrap(), 2);
        assert_eq!(
            active.get("from-standby").await.unwrap().as_deref(),
            Some(&b"x"[..])
        );
    }

    pub(crate) async fn reload_follows_rekey_by_another_node(backend: AeadBackend) {
        let (storage, active, root) = unsealed(backend).await;
        let standby = reopen(&storage, backend, &root).await;
        let new_root = RootKey::generate().unwrap();
        active.rekey_root(&new_root).await.unwrap();
        standby.reload_keyring().await.unwrap();
        // The standby now holds the new root: unseal with it is a no-op,
        // the old one is refused.
        standby.unseal(&new_root).await.unwrap();
        assert!(matches!(
            standby.unseal(&root).await,
            Err(BarrierError::InvalidRootKey)
        ));
        // And it can persist keyring changes under the new root.
        standby.rotate().await.unwrap();
        let fresh = reopen(&storage, backend, &new_root).await;
        assert_eq!(fresh.key_status().await.unwrap().term, 2);
    }

    pub(crate) async fn reload_when_nothing_changed(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        b.put("k", b"v").await.unwrap();
        let before = b.key_status().await.unwrap();
        b.reload_keyring().await.unwrap();
        let after = b.key_status().await.unwrap();
        assert_eq!(before.term, after.term);
        assert!(
            after.encryptions >= before.encryptions,
            "reload lost counts"
        );
    }

    pub(crate) async fn rekey_root(backend: AeadBackend) {
        let (storage, b, old_root) = unsealed(backend).await;
        b.put("data", b"survives rekey").await.unwrap();
        let new_root = RootKey::generate().unwrap();
        b.rekey_root(&new_root).await.unwrap();
        assert_eq!(
            b.get("data").await.unwrap().as_deref(),
            Some(&b"survives rekey"[..])
        );

        let with_old = Barrier::with_backend(storage.clone(), backend);
        assert!(matches!(
            with_old.unseal(&old_root).await,
            Err(BarrierError::InvalidRootKey)
        ));
        let with_new = reopen(&storage, backend, &copy(&new_root)).await;
        assert_eq!(
            with_new.get("data").await.unwrap().as_deref(),
            Some(&b"survives rekey"[..])
        );
    }

    pub(crate) async fn rekey_root_with_the_same_key_rewrites_the_keyring(backend: AeadBackend) {
        let (storage, b, root) = unsealed(backend).await;
        let before = raw(&storage, KEYRING_PATH).await;
        b.rekey_root(&copy(&root)).await.unwrap();
        let after = raw(&storage, KEYRING_PATH).await;
        assert_ne!(before, after, "keyring re-encrypted with a fresh nonce");
        reopen(&storage, backend, &root).await;
    }

    pub(crate) async fn rotation_config_is_sanitized_and_persisted(backend: AeadBackend) {
        let (storage, b, root) = unsealed(backend).await;
        assert_eq!(
            b.rotation_config().await.unwrap(),
            RotationConfig::default()
        );
        let asked = RotationConfig {
            enabled: true,
            max_operations: 10,
            interval: Some(Duration::from_secs(60)),
        };
        b.set_rotation_config(asked).await.unwrap();
        let stored = b.rotation_config().await.unwrap();
        assert_eq!(stored.max_operations, 1_000_000);
        assert_eq!(stored.interval, Some(Duration::from_secs(86_400)));
        let again = reopen(&storage, backend, &root).await;
        assert_eq!(again.rotation_config().await.unwrap(), stored);
    }

    pub(crate) async fn encryptions_are_counted_and_persisted(backend: AeadBackend) {
        let (storage, b, root) = unsealed(backend).await;
        let start = b.key_status().await.unwrap().encryptions;
        for i in 0..10 {
            b.put(&format!("k/{i}"), b"v").await.unwrap();
        }
        b.encrypt("x", b"y").unwrap();
        let counted = b.key_status().await.unwrap().encryptions;
        assert_eq!(counted - start, 11);
        // Decryption does not count.
        b.get("k/0").await.unwrap();
        assert_eq!(b.key_status().await.unwrap().encryptions, counted);
        // check_auto_rotate persists the count; a restart sees it.
        assert_eq!(b.check_auto_rotate().await.unwrap(), None);
        let after_check = b.key_status().await.unwrap().encryptions;
        let again = reopen(&storage, backend, &root).await;
        assert_eq!(again.key_status().await.unwrap().encryptions, after_check);
        assert!(after_check >= counted);
    }

    pub(crate) async fn check_auto_rotate_by_operations(backend: AeadBackend) {
        let (storage, b, root) = unsealed(backend).await;
        b.set_rotation_config(RotationConfig {
            enabled: true,
            max_operations: 1_000_000,
            interval: None,
        })
        .await
        .unwrap();
        assert_eq!(b.check_auto_rotate().await.unwrap(), None);
        // A million encryptions of an empty value with an empty path: the
        // real counter, no shortcut.
        let status = b.key_status().await.unwrap();
        for _ in status.encryptions..=1_000_000 {
            b.encrypt("", b"").unwrap();
        }
        assert_eq!(b.check_auto_rotate().await.unwrap(), Some(2));
        assert_eq!(b.key_status().await.unwrap().term, 2);
        assert_eq!(b.check_auto_rotate().await.unwrap(), None);
        let again = reopen(&storage, backend, &root).await;
        assert_eq!(again.key_status().await.unwrap().term, 2);
    }

    pub(crate) async fn reserved_paths_are_refused_and_hidden(backend: AeadBackend) {
        let (storage, b, root) = unsealed(backend).await;
        for path in [KEYRING_PATH, ROOT_KEY_PATH] {
            for result in [
                b.put(path, b"overwrite").await,
                b.delete(path).await,
                b.transaction(vec![TxnOp::put(path, b"x".to_vec())]).await,
                b.get(path).await.map(|_| ()),
            ] {
                assert!(
                    matches!(result, Err(BarrierError::ReservedPath { .. })),
                    "{path}: {result:?}"
                );
            }
        }
        assert!(b.list("").await.unwrap().is_empty());
        assert!(b.list("core/").await.unwrap().is_empty());
        assert!(b.list("co").await.unwrap().is_empty());
        assert_eq!(
            Storage::list(storage.as_ref(), "core/").await.unwrap(),
            ["keyring", "master"]
        );
        reopen(&storage, backend, &root).await;
    }

    pub(crate) async fn core_folder_with_other_entries_stays_listed(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        b.put("core/mounts", b"{}").await.unwrap();
        b.put("core/leader/abc", b"x").await.unwrap();
        b.put("logical/x", b"y").await.unwrap();
        assert_eq!(b.list("").await.unwrap(), ["core/", "logical/"]);
        assert_eq!(b.list("core/").await.unwrap(), ["leader/", "mounts"]);
        assert_eq!(b.list("core/m").await.unwrap(), ["ounts"]);
        assert_eq!(b.list("c").await.unwrap(), ["ore/"]);
    }

    pub(crate) async fn transaction_encrypts_every_put(backend: AeadBackend) {
        let (storage, b, _) = unsealed(backend).await;
        b.put("t/old", b"gone").await.unwrap();
        b.transaction(vec![
            TxnOp::put("t/a", b"alpha".to_vec()),
            TxnOp::delete("t/old"),
            TxnOp::put("t/b", b"beta".to_vec()),
        ])
        .await
        .unwrap();
        assert_eq!(b.list("t/").await.unwrap(), ["a", "b"]);
        assert_eq!(raw(&storage, "t/a").await.len(), OVERHEAD + 5);
        assert_eq!(b.get("t/a").await.unwrap().as_deref(), Some(&b"alpha"[..]));
        assert_eq!(b.get("t/b").await.unwrap().as_deref(), Some(&b"beta"[..]));
        // Each value is bound to its own path.
        let a = raw(&storage, "t/a").await;
        assert_decrypt_error(b.decrypt("t/b", &a), "transaction entry under another path");
    }

    pub(crate) async fn concurrent_encryptions_are_all_counted(backend: AeadBackend) {
        let (_, b, _) = unsealed(backend).await;
        let b = Arc::new(b);
        let round = |b: Arc<Barrier>| async move {
            let mut tasks = Vec::new();
            for t in 0..8 {
                let b = b.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..250 {
                        let path = format!("c/{t}/{i}");
                        let ct = b.encrypt(&path, path.as_bytes()).unwrap();
                        assert_eq!(&*b.decrypt(&path, &ct).unwrap(), path.as_bytes());
                    }
                }));
            }
            tasks
        };
        let start = b.key_status().await.unwrap().encryptions;
        for task in round(b.clone()).await {
            task.await.unwrap();
        }
        assert_eq!(b.key_status().await.unwrap().encryptions - start, 2000);

        // A rotation in the middle of the traffic loses nothing and breaks
        // nothing; the new term counts only what it encrypted.
        let tasks = round(b.clone()).await;
        b.rotate().await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        let end = b.key_status().await.unwrap();
        assert_eq!(end.term, 2);
        assert!(end.encryptions <= 2001, "{end:?}");
    }

    pub(crate) async fn debug_prints_no_key(backend: AeadBackend) {
        let root = RootKey::from_bytes(&[0xAB; 32]).unwrap();
        let storage = Arc::new(MemoryStorage::new());
        let b = Barrier::with_backend(storage, backend);
        b.initialize(&root).await.unwrap();
        b.unseal(&root).await.unwrap();
        let printed = format!("{b:?}");
        assert!(printed.contains("sealed: false"), "{printed}");
        assert!(!printed.to_lowercase().contains("abab"), "{printed}");
        assert!(!printed.contains("q6ur"), "base64 of the key: {printed}");
    }

    pub(crate) async fn every_data_operation_is_observed(backend: AeadBackend) {
        #[derive(Debug, Default)]
        struct Seen(std::sync::Mutex<Vec<barrier::BarrierOp>>);
        impl barrier::OpObserver for Seen {
            fn observed(&self, op: barrier::BarrierOp, _elapsed: Duration) {
                self.0.lock().unwrap().push(op);
            }
        }
        let root = RootKey::from_bytes(&[7; 32]).unwrap();
        let b = Barrier::with_backend(Arc::new(MemoryStorage::new()), backend);
        let seen = Arc::new(Seen::default());
        assert!(b.set_observer(seen.clone()));
        assert!(
            !b.set_observer(Arc::new(Seen::default())),
            "the first observer stays"
        );
        b.initialize(&root).await.unwrap();
        // Sealed: refused, and still observed.
        assert!(b.get("a").await.is_err());
        b.unseal(&root).await.unwrap();
        b.put("a", b"1").await.unwrap();
        b.get("a").await.unwrap();
        b.list("").await.unwrap();
        b.transaction(vec![TxnOp::put("b", b"2".to_vec())])
            .await
            .unwrap();
        b.delete("a").await.unwrap();
        use barrier::BarrierOp::*;
        assert_eq!(
            *seen.0.lock().unwrap(),
            [Get, Put, Get, List, Transaction, Delete]
        );
    }
}
