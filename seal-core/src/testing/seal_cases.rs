//! The seal conformance cases, one function each, run through
//! [`seal_suite!`](crate::seal_suite). Each case receives a seal ready to
//! encrypt. They panic (fail) on any departure from the [`Seal`] contract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::{Seal, SealError, SealType, blob};

type S = Arc<dyn Seal>;

const AAD: &[u8] = b"core/hsm/barrier-unseal-keys";

async fn seal_blob(s: &S, plaintext: &[u8]) -> Vec<u8> {
    s.encrypt(plaintext, AAD)
        .await
        .unwrap_or_else(|e| panic!("encrypt: {e}"))
}

/// An error that says "these bytes are not a valid blob for this seal", as
/// opposed to a remote failure.
fn is_refusal(err: &SealError) -> bool {
    matches!(
        err,
        SealError::Decrypt | SealError::Malformed(_) | SealError::WrongSealType { .. }
    )
}

pub async fn round_trip(s: S) {
    let blob = seal_blob(&s, b"the root key").await;
    assert_eq!(
        s.decrypt(&blob, AAD).await.unwrap().as_slice(),
        b"the root key"
    );
}

pub async fn round_trip_sizes(s: S) {
    for size in [0usize, 1, 16, 32, 33, 1000, 64 * 1024] {
        let plaintext: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        let blob = seal_blob(&s, &plaintext).await;
        assert_eq!(
            s.decrypt(&blob, AAD).await.unwrap().as_slice(),
            plaintext,
            "size {size}"
        );
    }
}

pub async fn encryption_is_randomized(s: S) {
    let a = seal_blob(&s, b"same").await;
    let b = seal_blob(&s, b"same").await;
    assert_ne!(a, b, "two encryptions of one value must differ");
}

pub async fn blob_has_seal_header(s: S) {
    let b = seal_blob(&s, b"x").await;
    blob::decode(s.seal_type(), &b).expect("blob starts with this seal's header");
}

pub async fn wrong_aad_is_decrypt_error(s: S) {
    let blob = seal_blob(&s, b"bound to a path").await;
    match s.decrypt(&blob, b"core/recovery-key").await {
        Err(SealError::Decrypt) => {}
        other => panic!("wrong AAD: expected Decrypt, got {other:?}"),
    }
}

/// Changing the final byte (part of the authentication tag of the payload)
/// gives the one opaque decrypt error.
pub async fn tampered_tag_is_decrypt_error(s: S) {
    let mut blob = seal_blob(&s, b"secret").await;
    let last = blob.len() - 1;
    blob[last] ^= 0x01;
    match s.decrypt(&blob, AAD).await {
        Err(SealError::Decrypt) => {}
        other => panic!("tampered tag: expected Decrypt, got {other:?}"),
    }
}

/// Flipping any single bit of any byte is refused, never accepted and never
/// reported as a remote outage.
pub async fn every_byte_flip_refused(s: S) {
    let blob = seal_blob(&s, b"secret value").await;
    for i in 0..blob.len() {
        let mut tampered = blob.clone();
        tampered[i] ^= 0x80;
        match s.decrypt(&tampered, AAD).await {
            Err(e) if is_refusal(&e) => {}
            other => panic!(
                "byte {i} of {} flipped: expected a refusal, got {other:?}",
                blob.len()
            ),
        }
    }
}

pub async fn truncated_refused(s: S) {
    let blob = seal_blob(&s, b"secret value").await;
    let mut lengths = vec![
        0,
        1,
        2,
        blob::HEADER_LEN,
        blob::HEADER_LEN + 1,
        blob.len() / 2,
    ];
    lengths.extend([blob.len() - 17, blob.len() - 16, blob.len() - 1]);
    for len in lengths {
        match s.decrypt(&blob[..len], AAD).await {
            Err(e) if is_refusal(&e) => {}
            other => panic!("truncated to {len}: expected a refusal, got {other:?}"),
        }
    }
}

/// The same body under another seal type's header is refused with
/// `WrongSealType`.
pub async fn foreign_seal_type_refused(s: S) {
    let own = seal_blob(&s, b"secret").await;
    let body = blob::decode(s.seal_type(), &own).unwrap();
    for other in [SealType::Shamir, SealType::AwsKms, SealType::Test] {
        if other == s.seal_type() {
            continue;
        }
        let foreign = blob::encode(other, body);
        match s.decrypt(&foreign, AAD).await {
            Err(SealError::WrongSealType { expected, .. }) => assert_eq!(expected, s.seal_type()),
            other_result => panic!("{other} blob: expected WrongSealType, got {other_result:?}"),
        }
    }
}

/// Arbitrary bytes, with and without a valid header, never panic and never
/// decrypt.
pub async fn arbitrary_bytes_never_panic(s: S) {
    let handle = tokio::runtime::Handle::current();
    let seal_type = s.seal_type();
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..600),
        );
        runner
            .run(&strategy, |(with_header, bytes)| {
                let input = if with_header {
                    blob::encode(seal_type, &bytes)
                } else {
                    bytes
                };
                let result = handle.block_on(s.decrypt(&input, AAD));
                prop_assert!(result.is_err(), "random bytes decrypted");
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
}

pub async fn health_check_passes(s: S) {
    s.health_check().await.unwrap();
}

pub async fn concurrent_round_trips(s: S) {
    let mut tasks = Vec::new();
    for t in 0..16u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let plaintext = [t; 32];
            let blob = s.encrypt(&plaintext, AAD).await.unwrap();
            assert_eq!(s.decrypt(&blob, AAD).await.unwrap().as_slice(), plaintext);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
