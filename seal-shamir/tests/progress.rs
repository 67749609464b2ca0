//! The unseal-progress state machine: nonce, duplicates, threshold, wrong
//! sets, reset, nonce-protected operations, and concurrent submitters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use seal_core::UnsealShare;
use seal_shamir::{ProgressStatus, ShamirError, Submit, UnsealProgress, split};

fn copy(s: &UnsealShare) -> UnsealShare {
    UnsealShare::from_bytes(s.expose_secret()).unwrap()
}

fn pending(r: Result<Submit, ShamirError>) -> ProgressStatus {
    match r.unwrap() {
        Submit::Pending(s) => s,
        Submit::Complete(_) => panic!("completed before the threshold"),
    }
}

fn complete(r: Result<Submit, ShamirError>) -> Vec<u8> {
    match r.unwrap() {
        Submit::Complete(secret) => secret.to_vec(),
        Submit::Pending(s) => panic!("still pending: {s:?}"),
    }
}

const KEK: [u8; 32] = [0x11; 32];

#[test]
fn starts_empty() {
    let p = UnsealProgress::new();
    assert_eq!(
        p.status(),
        ProgressStatus {
            progress: 0,
            nonce: None
        }
    );
}

#[test]
fn first_share_creates_a_uuid_nonce_kept_until_completion() {
    let shares = split(&KEK, 5, 3).unwrap();
    let p = UnsealProgress::new();
    let s1 = pending(p.submit(copy(&shares[0]), 3));
    assert_eq!(s1.progress, 1);
    let nonce = s1.nonce.clone().expect("nonce after the first share");
    assert_eq!(nonce.len(), 36, "UUID text form");
    assert_eq!(nonce.matches('-').count(), 4);
    let s2 = pending(p.submit(copy(&shares[1]), 3));
    assert_eq!(s2.progress, 2);
    assert_eq!(s2.nonce, Some(nonce));
    assert_eq!(complete(p.submit(copy(&shares[2]), 3)), KEK);
    assert_eq!(
        p.status(),
        ProgressStatus::default(),
        "cleared at the threshold"
    );
}

#[test]
fn duplicate_share_is_ignored_without_error() {
    let shares = split(&KEK, 5, 3).unwrap();
    let p = UnsealProgress::new();
    let first = pending(p.submit(copy(&shares[0]), 3));
    let again = pending(p.submit(copy(&shares[0]), 3));
    assert_eq!(again, first, "progress and nonce unchanged");
    pending(p.submit(copy(&shares[1]), 3));
    let again = pending(p.submit(copy(&shares[1]), 3));
    assert_eq!(again.progress, 2);
    assert_eq!(complete(p.submit(copy(&shares[4]), 3)), KEK);
}

#[test]
fn threshold_one_returns_the_share_itself() {
    let shares = split(&KEK, 1, 1).unwrap();
    let p = UnsealProgress::new();
    assert_eq!(complete(p.submit(copy(&shares[0]), 1)), KEK);
    assert_eq!(p.status(), ProgressStatus::default());
}

/// Shares held from an earlier configuration do not leak into a
/// single-share unseal: the submitted share is the secret.
#[test]
fn threshold_one_ignores_stale_shares() {
    let old = split(&[0x33; 32], 5, 3).unwrap();
    let single = split(&KEK, 1, 1).unwrap();
    let p = UnsealProgress::new();
    pending(p.submit(copy(&old[0]), 3));
    assert_eq!(complete(p.submit(copy(&single[0]), 1)), KEK);
    assert_eq!(p.status(), ProgressStatus::default());
}

/// A wrong set (shares of two different splits) still combines to some
/// value; the caller detects it by using the value. Progress is cleared so
/// the operators start again with a new nonce.
#[test]
fn wrong_set_combines_to_another_value_and_resets() {
    let right = split(&KEK, 5, 3).unwrap();
    let other = split(&[0x22; 32], 5, 3).unwrap();
    let p = UnsealProgress::new();
    let nonce = pending(p.submit(copy(&right[0]), 3)).nonce;
    pending(p.submit(copy(&right[1]), 3));
    // A share from the other split, with an x not already used.
    let foreign = other
        .iter()
        .find(|s| {
            let x = s.expose_secret()[32];
            x != right[0].expose_secret()[32] && x != right[1].expose_secret()[32]
        })
        .unwrap();
    let value = complete(p.submit(copy(foreign), 3));
    assert_ne!(value, KEK);
    assert_eq!(p.status(), ProgressStatus::default());
    let next = pending(p.submit(copy(&right[2]), 3));
    assert_eq!(next.progress, 1);
    assert_ne!(next.nonce, nonce, "a new operation, a new nonce");
}

/// A failing combine (shares of different lengths) is an error, and
/// progress is cleared as on success.
#[test]
fn combine_failure_at_threshold_is_an_error_and_resets() {
    let long = split(&KEK, 3, 2).unwrap();
    let short = split(&[5u8; 16], 3, 2).unwrap();
    let p = UnsealProgress::new();
    pending(p.submit(copy(&long[0]), 2));
    let err = p.submit(copy(&short[0]), 2).unwrap_err();
    assert!(matches!(err, ShamirError::LengthMismatch { .. }), "{err}");
    assert_eq!(p.status(), ProgressStatus::default());

    // Same x twice with different y: duplicate part at the threshold.
    let mut twin = long[1].expose_secret().to_vec();
    twin[32] = long[0].expose_secret()[32];
    pending(p.submit(copy(&long[0]), 2));
    let err = p
        .submit(UnsealShare::from_bytes(&twin).unwrap(), 2)
        .unwrap_err();
    assert_eq!(err, ShamirError::DuplicateShare);
    assert_eq!(p.status().progress, 0);
}

#[test]
fn reset_clears_progress_and_nonce() {
    let shares = split(&KEK, 5, 3).unwrap();
    let p = UnsealProgress::new();
    let before = pending(p.submit(copy(&shares[0]), 3));
    pending(p.submit(copy(&shares[1]), 3));
    p.reset();
    assert_eq!(p.status(), ProgressStatus::default());
    // The shares held before the reset are gone: two more are needed.
    let after = pending(p.submit(copy(&shares[1]), 3));
    assert_eq!(after.progress, 1);
    assert_ne!(after.nonce, before.nonce);
    pending(p.submit(copy(&shares[2]), 3));
    assert_eq!(complete(p.submit(copy(&shares[3]), 3)), KEK);
}

#[test]
fn nonce_changes_after_each_completion() {
    let shares = split(&KEK, 3, 2).unwrap();
    let p = UnsealProgress::new();
    let mut nonces = HashSet::new();
    for _ in 0..5 {
        let s = pending(p.submit(copy(&shares[0]), 2));
        assert!(nonces.insert(s.nonce.unwrap()), "nonce reused");
        assert_eq!(complete(p.submit(copy(&shares[2]), 2)), KEK);
    }
}

#[test]
fn invalid_threshold_is_refused_and_changes_nothing() {
    let shares = split(&KEK, 3, 2).unwrap();
    let p = UnsealProgress::new();
    let s = pending(p.submit(copy(&shares[0]), 2));
    for t in [0, 256, usize::MAX] {
        assert_eq!(
            p.submit(copy(&shares[1]), t).unwrap_err(),
            ShamirError::InvalidThreshold { threshold: t }
        );
    }
    assert_eq!(p.status(), s);
}

/// A threshold lowered mid-operation (the seal configuration changed)
/// completes as soon as enough shares are held.
#[test]
fn reaching_a_lower_threshold_completes() {
    let shares = split(&KEK, 5, 2).unwrap();
    let p = UnsealProgress::new();
    pending(p.submit(copy(&shares[0]), 3));
    assert_eq!(complete(p.submit(copy(&shares[1]), 2)), KEK);
}

#[test]
fn nonce_protected_operation_refuses_other_nonces() {
    let shares = split(&KEK, 5, 3).unwrap();
    let p = UnsealProgress::new();
    let nonce = p.start_with_nonce();
    assert_eq!(
        p.status(),
        ProgressStatus {
            progress: 0,
            nonce: Some(nonce.clone())
        }
    );

    let err = p
        .submit_with_nonce(copy(&shares[0]), 3, "not-the-nonce")
        .unwrap_err();
    assert_eq!(
        err,
        ShamirError::NonceMismatch {
            expected: nonce.clone()
        }
    );
    assert!(err.to_string().starts_with("incorrect nonce supplied"));
    // A plain submit is refused too: the operation needs its nonce.
    assert_eq!(
        p.submit(copy(&shares[0]), 3).unwrap_err(),
        ShamirError::NonceRequired {
            expected: nonce.clone()
        }
    );
    assert_eq!(p.status().progress, 0, "refused shares are not counted");

    let s = pending(p.submit_with_nonce(copy(&shares[0]), 3, &nonce));
    assert_eq!(
        s.nonce.as_deref(),
        Some(nonce.as_str()),
        "the fixed nonce is kept"
    );
    pending(p.submit_with_nonce(copy(&shares[0]), 3, &nonce));
    pending(p.submit_with_nonce(copy(&shares[3]), 3, &nonce));
    assert_eq!(
        complete(p.submit_with_nonce(copy(&shares[4]), 3, &nonce)),
        KEK
    );

    // The operation is over: its nonce no longer works.
    assert_eq!(
        p.submit_with_nonce(copy(&shares[0]), 3, &nonce)
            .unwrap_err(),
        ShamirError::NoOperation
    );
}

#[test]
fn submit_with_nonce_needs_an_operation() {
    let shares = split(&KEK, 5, 3).unwrap();
    let p = UnsealProgress::new();
    assert_eq!(
        p.submit_with_nonce(copy(&shares[0]), 3, "anything")
            .unwrap_err(),
        ShamirError::NoOperation
    );
    // An operation begun without a fixed nonce can be continued with the
    // nonce read from the status.
    let nonce = pending(p.submit(copy(&shares[0]), 3)).nonce.unwrap();
    pending(p.submit_with_nonce(copy(&shares[1]), 3, &nonce));
    assert!(p.submit_with_nonce(copy(&shares[2]), 3, "stale").is_err());
    assert_eq!(
        complete(p.submit_with_nonce(copy(&shares[2]), 3, &nonce)),
        KEK
    );
}

#[test]
fn starting_again_replaces_the_operation() {
    let shares = split(&KEK, 5, 3).unwrap();
    let p = UnsealProgress::new();
    let first = p.start_with_nonce();
    pending(p.submit_with_nonce(copy(&shares[0]), 3, &first));
    let second = p.start_with_nonce();
    assert_ne!(first, second);
    assert_eq!(p.status().progress, 0);
    assert!(p.submit_with_nonce(copy(&shares[1]), 3, &first).is_err());
    p.reset();
    assert_eq!(p.status(), ProgressStatus::default());
    // After reset, plain unseal submissions work again.
    pending(p.submit(copy(&shares[1]), 3));
}

#[test]
fn debug_shows_status_but_no_share_bytes() {
    let p = UnsealProgress::new();
    p.submit(UnsealShare::from_bytes(&[0xee; 33]).unwrap(), 3)
        .unwrap();
    let text = format!("{p:?}");
    assert!(text.contains("progress: 1"), "{text}");
    assert!(!text.to_lowercase().contains("ee, ") && !text.contains("238"));
    let done = Submit::Complete(zeroize::Zeroizing::new(vec![0xee; 32]));
    assert_eq!(format!("{done:?}"), "Complete(..)");
}

/// Many tasks submit distinct shares of one split at once: the submissions
/// are serialized, so each sees a different progress (1, 2, …, threshold-1)
/// and exactly one completes, with the secret. No share is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_never_lose_a_share() {
    for round in 0..20 {
        let threshold = 40;
        let shares = Arc::new(split(&KEK, threshold, threshold).unwrap());
        let p = Arc::new(UnsealProgress::new());
        let mut tasks = Vec::new();
        for i in 0..threshold {
            let (p, shares) = (p.clone(), shares.clone());
            tasks.push(tokio::spawn(async move {
                tokio::task::yield_now().await;
                p.submit(copy(&shares[i]), threshold).unwrap()
            }));
        }
        let mut completions = Vec::new();
        let mut seen_progress = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Submit::Complete(secret) => completions.push(secret.to_vec()),
                Submit::Pending(s) => seen_progress.push(s.progress),
            }
        }
        assert_eq!(completions, vec![KEK.to_vec()], "round {round}");
        seen_progress.sort_unstable();
        assert_eq!(
            seen_progress,
            (1..threshold).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(p.status(), ProgressStatus::default());
    }
}

/// Many tasks submit the same few shares over and over at once: duplicates
/// are ignored, every distinct share is counted exactly once, and the
/// operation keeps one nonce throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_are_counted_once() {
    let threshold = 30;
    let shares = Arc::new(split(&KEK, 50, threshold).unwrap());
    let p = Arc::new(UnsealProgress::new());
    let mut tasks = Vec::new();
    for t in 0..(4 * (threshold - 1)) {
        let (p, shares) = (p.clone(), shares.clone());
        tasks.push(tokio::spawn(async move {
            tokio::task::yield_now().await;
            match p
                .submit(copy(&shares[t % (threshold - 1)]), threshold)
                .unwrap()
            {
                Submit::Pending(s) => s,
                Submit::Complete(_) => panic!("completed with too few distinct shares"),
            }
        }));
    }
    let mut nonces = HashSet::new();
    for t in tasks {
        nonces.insert(t.await.unwrap().nonce.unwrap());
    }
    assert_eq!(nonces.len(), 1, "one operation, one nonce");
    assert_eq!(p.status().progress, threshold - 1);
    assert_eq!(complete(p.submit(copy(&shares[45]), threshold)), KEK);
}

/// Several operators each submit all shares of their own split: with one
/// progress per split, every split completes with its own secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_progresses_are_independent() {
    let mut tasks = Vec::new();
    for op in 0..16u8 {
        tasks.push(tokio::spawn(async move {
            let secret = [op; 32];
            let shares = split(&secret, 5, 3).unwrap();
            let p = UnsealProgress::new();
            let mut out = None;
            for s in &shares[1..4] {
                tokio::task::yield_now().await;
                if let Submit::Complete(v) = p.submit(copy(s), 3).unwrap() {
                    out = Some(v.to_vec());
                }
            }
            assert_eq!(out.as_deref(), Some(&secret[..]));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
