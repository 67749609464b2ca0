//! The AWS KMS seal against a real `moto_server` (KMS JSON protocol through
//! aws-sdk-kms), covering round trips, the seal conformance suite, and the
//! failure cases auto-unseal must survive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use seal_awskms::{AwsKmsConfig, AwsKmsSeal};
use seal_core::{Seal, SealError};
use testkit::MotoServer;

const AAD: &[u8] = b"core/hsm/barrier-unseal-keys";
/// Only keeps a broken test from hanging; the seal's own timeouts are what
/// bound each call.
const NO_HANG: Duration = Duration::from_secs(120);

async fn seal_for(moto: &MotoServer, key_id: &str) -> AwsKmsSeal {
    AwsKmsSeal::new(moto.config_for(key_id)).await.unwrap()
}

/// Builder for the conformance suite: a fresh moto and key per case; the
/// server is the guard.
async fn build_seal() -> (Arc<dyn Seal>, MotoServer) {
    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    let seal = seal_for(&moto, &key.key_id).await;
    (Arc::new(seal), moto)
}

seal_core::seal_suite!(build_seal);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_records_the_key_arn() {
    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    let seal = seal_for(&moto, &key.key_id).await;
    assert_eq!(seal.key_id(), key.key_id);
    assert_eq!(seal.region(), "us-east-1");

    let blob = seal.encrypt(b"root key", AAD).await.unwrap();
    assert_eq!(
        seal.decrypt(&blob, AAD).await.unwrap().as_slice(),
        b"root key"
    );
    // The blob records the ARN KMS reported, not the configured id.
    assert_eq!(AwsKmsSeal::blob_key_id(&blob).unwrap(), key.arn);
    assert_eq!(seal.last_key_arn().as_deref(), Some(key.arn.as_str()));
    assert_eq!(seal.current_key_arn().await.unwrap(), key.arn);
    seal.health_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_and_arn_key_ids_work() {
    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    moto.set_alias("alias/strongroom", &key.key_id).await;
    for configured in ["alias/strongroom", key.arn.as_str()] {
        let seal = seal_for(&moto, configured).await;
        let blob = seal.encrypt(b"v", AAD).await.unwrap();
        assert_eq!(
            AwsKmsSeal::blob_key_id(&blob).unwrap(),
            key.arn,
            "{configured}"
        );
        assert_eq!(seal.decrypt(&blob, AAD).await.unwrap().as_slice(), b"v");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn construction_needs_no_kms() {
    // A KMS that is down at start does not stop the process: building the
    // seal makes no call; the first call reports the outage.
    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    moto.stop().await;
    let seal = seal_for(&moto, &key.key_id).await;
    let err = tokio::time::timeout(NO_HANG, seal.encrypt(b"x", AAD))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(matches!(err, SealError::Unreachable(_)), "{err:?}");
    // When KMS comes back the same seal works without being rebuilt.
    moto.restart().await;
    let blob = seal.encrypt(b"x", AAD).await.unwrap();
    assert_eq!(seal.decrypt(&blob, AAD).await.unwrap().as_slice(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_id_is_a_config_error() {
    let moto = MotoServer::start().await;
    let mut config = moto.config_for("x");
    config.kms_key_id = None;
    let err = AwsKmsSeal::new(config).await.unwrap_err();
    assert!(
        err.to_string().contains("VAULT_AWSKMS_SEAL_KEY_ID"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_permissions_are_access_denied() {
    let moto = MotoServer::start_with_iam().await;
    let key = moto.create_key().await;
    let user = moto.create_kms_user("strongroom-node").await;
    let seal = AwsKmsSeal::new(moto.config_for_user(&user, &key.key_id))
        .await
        .unwrap();

    let blob = seal.encrypt(b"root key", AAD).await.unwrap();
    assert_eq!(
        seal.decrypt(&blob, AAD).await.unwrap().as_slice(),
        b"root key"
    );

    moto.revoke_kms_access(&user).await;
    for (op, result) in [
        ("Encrypt", seal.encrypt(b"root key", AAD).await.map(|_| ())),
        ("Decrypt", seal.decrypt(&blob, AAD).await.map(|_| ())),
        ("health check", seal.health_check().await),
    ] {
        let err = result.unwrap_err();
        let SealError::AccessDenied(msg) = &err else {
            panic!("{op} after revoking: expected AccessDenied, got {err:?}");
        };
        assert!(msg.contains("us-east-1"), "{msg}");
        assert!(msg.contains("permission"), "{msg}");
        assert!(!err.is_transient());
    }
    let SealError::AccessDenied(msg) = seal.decrypt(&blob, AAD).await.unwrap_err() else {
        panic!("expected AccessDenied");
    };
    assert!(msg.contains("kms:Decrypt"), "{msg}");
    assert!(
        msg.contains(&key.arn),
        "Decrypt names the blob's key: {msg}"
    );

    // Unknown credentials are refused the same way.
    let mut stranger = moto.config_for(&key.key_id);
    stranger.access_key = Some("AKIANOBODY".into());
    let stranger = AwsKmsSeal::new(stranger).await.unwrap();
    let err = stranger.encrypt(b"x", AAD).await.unwrap_err();
    assert!(matches!(err, SealError::AccessDenied(_)), "{err:?}");

    // Restoring the permission restores the seal, blobs included.
    moto.grant_kms_access(&user).await;
    assert_eq!(
        seal.decrypt(&blob, AAD).await.unwrap().as_slice(),
        b"root key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_not_found() {
    let moto = MotoServer::start().await;
    let missing = "11111111-2222-3333-4444-555555555555";
    let seal = seal_for(&moto, missing).await;
    let err = seal.encrypt(b"x", AAD).await.unwrap_err();
    let SealError::KeyNotFound(msg) = &err else {
        panic!("expected KeyNotFound, got {err:?}");
    };
    assert!(msg.contains(missing), "{msg}");
    assert!(msg.contains("region us-east-1"), "{msg}");
    assert!(msg.contains("check kms_key_id"), "{msg}");
    assert!(!err.is_transient());

    let alias = seal_for(&moto, "alias/does-not-exist").await;
    let err = alias.encrypt(b"x", AAD).await.unwrap_err();
    assert!(matches!(err, SealError::KeyNotFound(_)), "{err:?}");
}

/// Offset and length of the wrapped data key inside a blob (see the layout
/// in the crate docs).
fn wrapped_key_range(blob: &[u8]) -> std::ops::Range<usize> {
    let key_len = usize::from(u16::from_be_bytes([blob[4], blob[5]]));
    let at = 6 + key_len;
    let wrapped_len = usize::from(u16::from_be_bytes([blob[at], blob[at + 1]]));
    at + 2..at + 2 + wrapped_len
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_wrapped_key_is_refused() {
    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    let seal = seal_for(&moto, &key.key_id).await;
    let blob = seal.encrypt(b"root key", AAD).await.unwrap();
    let range = wrapped_key_range(&blob);
    // KMS refuses a damaged ciphertext as invalid, or (when the damage
    // lands on the key reference inside it) as naming a key this caller
    // cannot use; either way nothing decrypts and nothing is "unreachable".
    let mut seen_decrypt = false;
    for i in [
        range.start,
        range.start + 3,
        range.start + 40,
        range.end - 1,
    ] {
        for flip in [0x01u8, 0x80] {
            let mut bad = blob.clone();
            bad[i] ^= flip;
            match seal.decrypt(&bad, AAD).await {
                Err(SealError::Decrypt) => seen_decrypt = true,
                Err(SealError::AccessDenied(msg)) => assert!(msg.contains("kms:Decrypt"), "{msg}"),
                other => panic!("wrapped key byte {i} ^ {flip:#x}: got {other:?}"),
            }
        }
    }
    assert!(
        seen_decrypt,
        "damaged ciphertext must read as invalid ciphertext"
    );
    // The wrapped key of a different blob fails the local authentication.
    let other = seal.encrypt(b"root key", AAD).await.unwrap();
    let mut swapped = blob[..range.start].to_vec();
    swapped.extend_from_slice(&other[wrapped_key_range(&other)]);
    swapped.extend_from_slice(&blob[range.end..]);
    assert!(matches!(
        seal.decrypt(&swapped, AAD).await,
        Err(SealError::Decrypt)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_is_unreachable_and_recovers() {
    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    let seal = seal_for(&moto, &key.key_id).await;
    let blob = seal.encrypt(b"root key", AAD).await.unwrap();

    moto.stop().await;
    for result in [
        tokio::time::timeout(NO_HANG, seal.decrypt(&blob, AAD))
            .await
            .expect("bounded")
            .map(|_| ()),
        tokio::time::timeout(NO_HANG, seal.encrypt(b"x", AAD))
            .await
            .expect("bounded")
            .map(|_| ()),
        tokio::time::timeout(NO_HANG, seal.health_check())
            .await
            .expect("bounded"),
    ] {
        let err = result.unwrap_err();
        let SealError::Unreachable(msg) = &err else {
            panic!("expected Unreachable, got {err:?}");
        };
        assert!(msg.contains(&moto.endpoint()), "{msg}");
        assert!(msg.contains("us-east-1"), "{msg}");
        assert!(msg.contains("check network access"), "{msg}");
        assert!(err.is_transient());
    }

    moto.restart().await;
    assert_eq!(
        seal.decrypt(&blob, AAD).await.unwrap().as_slice(),
        b"root key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_times_out_as_unreachable() {
    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    let config = AwsKmsConfig {
        attempt_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(3),
        max_attempts: 2,
        ..moto.config_for(&key.key_id)
    };
    let seal = AwsKmsSeal::new(config).await.unwrap();
    let blob = seal.encrypt(b"root key", AAD).await.unwrap();

    moto.pause();
    let result = tokio::time::timeout(NO_HANG, seal.decrypt(&blob, AAD))
        .await
        .expect("bounded");
    moto.resume();
    let err = result.unwrap_err();
    assert!(
        matches!(&err, SealError::Unreachable(m) if m.contains("timed out")),
        "{err:?}"
    );

    assert_eq!(
        seal.decrypt(&blob, AAD).await.unwrap().as_slice(),
        b"root key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_change_and_rewrap() {
    let moto = MotoServer::start().await;
    let key_a = moto.create_key().await;
    let key_b = moto.create_key().await;
    let seal_a = seal_for(&moto, &key_a.key_id).await;
    let blob_a = seal_a.encrypt(b"root key", AAD).await.unwrap();

    // Nothing to do while the configured key is the recorded one.
    assert_eq!(seal_a.rewrap(&blob_a, AAD).await.unwrap(), None);

    // The operator changes kms_key_id to key B.
    let seal_b = seal_for(&moto, &key_b.key_id).await;
    let blob_b = seal_b
        .rewrap(&blob_a, AAD)
        .await
        .unwrap()
        .expect("a blob under key A is rewrapped under key B");
    assert_eq!(AwsKmsSeal::blob_key_id(&blob_b).unwrap(), key_b.arn);
    assert_eq!(
        seal_b.decrypt(&blob_b, AAD).await.unwrap().as_slice(),
        b"root key"
    );
    assert_eq!(seal_b.rewrap(&blob_b, AAD).await.unwrap(), None);
    // The aad still binds: rewrap with another aad refuses.
    assert!(matches!(
        seal_b.rewrap(&blob_a, b"core/recovery-key").await,
        Err(SealError::Decrypt)
    ));

    // Moving an alias is a key change too.
    moto.set_alias("alias/unseal", &key_a.key_id).await;
    let seal_alias = seal_for(&moto, "alias/unseal").await;
    let blob = seal_alias.encrypt(b"root key", AAD).await.unwrap();
    moto.set_alias("alias/unseal", &key_b.key_id).await;
    let moved = seal_alias
        .rewrap(&blob, AAD)
        .await
        .unwrap()
        .expect("rewrapped");
    assert_eq!(AwsKmsSeal::blob_key_id(&moved).unwrap(), key_b.arn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_from_key_a_open_after_switching_to_key_b() {
    let moto = MotoServer::start().await;
    let key_a = moto.create_key().await;
    let key_b = moto.create_key().await;
    let blob_a = seal_for(&moto, &key_a.key_id)
        .await
        .encrypt(b"sealed under A", AAD)
        .await
        .unwrap();

    let seal_b = seal_for(&moto, &key_b.key_id).await;
    assert_eq!(
        seal_b.decrypt(&blob_a, AAD).await.unwrap().as_slice(),
        b"sealed under A"
    );
    let blob_b = seal_b.encrypt(b"sealed under B", AAD).await.unwrap();
    assert_eq!(AwsKmsSeal::blob_key_id(&blob_a).unwrap(), key_a.arn);
    assert_eq!(AwsKmsSeal::blob_key_id(&blob_b).unwrap(), key_b.arn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls() {
    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    let seal = Arc::new(seal_for(&moto, &key.key_id).await);
    let mut tasks = Vec::new();
    for t in 0..64u32 {
        let seal = seal.clone();
        tasks.push(tokio::spawn(async move {
            let plaintext = t.to_be_bytes().repeat(8);
            let aad = format!("path/{t}");
            let blob = seal.encrypt(&plaintext, aad.as_bytes()).await.unwrap();
            assert_eq!(
                seal.decrypt(&blob, aad.as_bytes())
                    .await
                    .unwrap()
                    .as_slice(),
                plaintext
            );
            blob
        }));
    }
    let mut blobs = Vec::new();
    for task in tasks {
        blobs.push(
            tokio::time::timeout(NO_HANG, task)
                .await
                .expect("bounded")
                .unwrap(),
        );
    }
    blobs.sort();
    blobs.dedup();
    assert_eq!(blobs.len(), 64, "every blob is distinct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_shows_no_secrets() {
    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    let config = moto.config_for(&key.key_id);
    let secret = config
        .secret_key
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    let seal = AwsKmsSeal::new(config.clone()).await.unwrap();
    for printed in [format!("{config:?}"), format!("{seal:?}")] {
        assert!(!printed.contains(&secret), "{printed}");
    }
    assert!(format!("{seal:?}").contains(&key.key_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stanza_and_environment_configure_a_working_seal() {
    use std::collections::BTreeMap;

    let moto = MotoServer::start().await;
    let key = moto.create_key().await;
    let harness = moto.config_for("unused");
    // The server hands the stanza over as strings; the key id and endpoint
    // come from the environment, as in a Vault deployment that sets
    // VAULT_AWSKMS_SEAL_KEY_ID and AWS_KMS_ENDPOINT.
    let stanza: BTreeMap<String, String> = [
        ("kms_key_id", "alias/overridden-by-env"),
        ("access_key", harness.access_key.as_deref().unwrap()),
        (
            "secret_key",
            harness.secret_key.as_ref().unwrap().expose_secret(),
        ),
        ("connect_timeout", "2s"),
        ("operation_timeout", "20s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut config = AwsKmsConfig::from_map(&stanza).unwrap();
    let endpoint = moto.endpoint();
    let key_id = key.key_id.clone();
    config.apply_env_with(|name| match name {
        "VAULT_AWSKMS_SEAL_KEY_ID" => Some(key_id.clone()),
        "AWS_KMS_ENDPOINT" => Some(endpoint.clone()),
        "AWS_REGION" => Some("us-east-1".to_owned()),
        _ => None,
    });
    let seal = AwsKmsSeal::new(config).await.unwrap();
    assert_eq!(seal.key_id(), key.key_id);
    assert_eq!(seal.endpoint(), Some(moto.endpoint().as_str()));
    seal.health_check().await.unwrap();
}
