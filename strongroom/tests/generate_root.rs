//! Root token generation, specified through the core's API: a quorum of
//! unseal keys (Shamir) or recovery keys (auto seal) makes a new root token,
//! handed out XOR-ed with the attempt's OTP; cancel, wrong keys, wrong
//! nonce, duplicates and the sealed case behave as Vault's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use strongroom::{
    Core, CoreError, GenerateRootStatus, InitResult, ROOT_TOKEN_OTP_LENGTH, decode_root_token,
};

async fn shamir(shares: usize, threshold: usize) -> (Core, InitResult) {
    let (_, core, init) = common::init_unsealed_shamir(shares, threshold).await;
    (core, init)
}

async fn auto(shares: usize, threshold: usize) -> (Core, InitResult) {
    let (_, _, core, init) = common::init_auto(shares, threshold).await;
    (core, init)
}

/// Runs a whole attempt with `keys`; returns the decoded new token.
async fn generate(core: &Core, keys: &[String]) -> String {
    let started = core.generate_root_init(None, None).await.unwrap();
    assert!(started.started);
    assert_eq!(started.otp.len(), ROOT_TOKEN_OTP_LENGTH);
    assert_eq!(started.otp_length, ROOT_TOKEN_OTP_LENGTH);
    let mut last = GenerateRootStatus::default();
    for key in keys {
        last = core
            .generate_root_update(key, &started.nonce)
            .await
            .unwrap();
    }
    assert!(last.complete, "{last:?}");
    assert_eq!(last.encoded_token, last.encoded_root_token);
    assert!(!last.encoded_token.contains('='));
    let token = decode_root_token(&last.encoded_token, &started.otp).unwrap();
    // The attempt is over: a new one may start.
    assert!(!core.generate_root_status().await.unwrap().started);
    token.to_string()
}

#[tokio::test]
async fn unseal_keys_make_a_new_root_token_and_the_old_one_keeps_working() {
    let (core, init) = shamir(5, 3).await;
    let status = core.generate_root_status().await.unwrap();
    assert!(!status.started);
    assert_eq!(status.required, 3);
    assert_eq!(status.otp_length, 28);

    let started = core.generate_root_init(None, None).await.unwrap();
    let first = core
        .generate_root_update(&init.keys[0], &started.nonce)
        .await
        .unwrap();
    assert_eq!((first.progress, first.required), (1, 3));
    assert!(!first.complete && first.encoded_token.is_empty());
    // Later reads show progress but never the OTP again.
    let read = core.generate_root_status().await.unwrap();
    assert_eq!(read.progress, 1);
    assert!(read.otp.is_empty());
    core.generate_root_cancel().await.unwrap();

    let token = generate(&core, &init.keys_base64[2..5]).await;
    assert!(token.starts_with("hvs."), "{token}");
    assert_eq!(token.len(), ROOT_TOKEN_OTP_LENGTH);
    assert!(core.check_token(&token).await.unwrap().is_root());
    assert!(core.check_token(&init.root_token).await.unwrap().is_root());
}

#[tokio::test]
async fn recovery_keys_make_a_new_root_token_on_an_auto_seal() {
    let (core, init) = auto(3, 2).await;
    assert_eq!(core.generate_root_status().await.unwrap().required, 2);
    let token = generate(&core, &init.recovery_keys[1..3]).await;
    assert!(core.check_token(&token).await.unwrap().is_root());
    assert!(core.check_token(&init.root_token).await.unwrap().is_root());
}

#[tokio::test]
async fn a_client_otp_must_have_the_token_length() {
    let (core, init) = shamir(1, 1).await;
    let err = core
        .generate_root_init(Some("short"), None)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "OTP string is wrong length");
    assert_eq!(err.status(), 400);
    let otp = "abcdefghijklmnopqrstuvwxyz01";
    let started = core.generate_root_init(Some(otp), None).await.unwrap();
    assert!(started.otp.is_empty(), "a client OTP is not echoed");
    let done = core
        .generate_root_update(&init.keys[0], &started.nonce)
        .await
        .unwrap();
    assert!(done.complete);
    let token = decode_root_token(&done.encoded_token, otp).unwrap();
    assert!(core.check_token(&token).await.unwrap().is_root());
}

#[tokio::test]
async fn wrong_keys_abort_the_round_but_keep_the_attempt() {
    let (core, init) = shamir(3, 2).await;
    let (_, other) = shamir(3, 2).await;
    let started = core.generate_root_init(None, None).await.unwrap();
    core.generate_root_update(&other.keys[0], &started.nonce)
        .await
        .unwrap();
    let err = core
        .generate_root_update(&other.keys[1], &started.nonce)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::InvalidKey(_)), "{err:?}");
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string().starts_with("root generation aborted:"),
        "{err}"
    );
    // Progress was reset; the nonce and OTP stay, so the right keys finish.
    let status = core.generate_root_status().await.unwrap();
    assert!(status.started);
    assert_eq!(status.progress, 0);
    assert_eq!(status.nonce, started.nonce);
    core.generate_root_update(&init.keys[0], &started.nonce)
        .await
        .unwrap();
    let done = core
        .generate_root_update(&init.keys[1], &started.nonce)
        .await
        .unwrap();
    let token = decode_root_token(&done.encoded_token, &started.otp).unwrap();
    assert!(core.check_token(&token).await.unwrap().is_root());
}

#[tokio::test]
async fn wrong_recovery_keys_are_refused_with_vaults_words() {
    let (core, _) = auto(1, 1).await;
    let (_, other) = auto(1, 1).await;
    let started = core.generate_root_init(None, None).await.unwrap();
    let err = core
        .generate_root_update(&other.recovery_keys[0], &started.nonce)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("recovery key verification failed"),
        "{err}"
    );
}

#[tokio::test]
async fn nonce_duplicates_cancel_and_state_errors() {
    let (core, init) = shamir(3, 2).await;
    let err = core
        .generate_root_update(&init.keys[0], "nope")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no root generation in progress");
    let started = core.generate_root_init(None, None).await.unwrap();
    let err = core.generate_root_init(None, None).await.unwrap_err();
    assert_eq!(err.to_string(), "root generation already in progress");
    let err = core
        .generate_root_update(&init.keys[0], "not-the-nonce")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("incorrect nonce supplied; nonce for this root generation operation is"),
        "{err}"
    );
    core.generate_root_update(&init.keys[0], &started.nonce)
        .await
        .unwrap();
    let err = core
        .generate_root_update(&init.keys[0], &started.nonce)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "given key has already been provided during this generation operation"
    );
    let err = core.generate_root_init(None, Some("cGdw")).await;
    assert!(err.is_err());

    // Cancel forgets everything; the old nonce no longer works.
    core.generate_root_cancel().await.unwrap();
    core.generate_root_cancel().await.unwrap();
    let status = core.generate_root_status().await.unwrap();
    assert!(!status.started && status.nonce.is_empty() && status.progress == 0);
    let err = core
        .generate_root_update(&init.keys[1], &started.nonce)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no root generation in progress");

    // Sealing ends an attempt; a sealed node answers 503.
    core.generate_root_init(None, None).await.unwrap();
    core.seal(&init.root_token).await.unwrap();
    let err = core.generate_root_status().await.unwrap_err();
    assert_eq!(err.status(), 503);
    for key in &init.keys[..2] {
        core.unseal(key).await.unwrap();
    }
    assert!(!core.generate_root_status().await.unwrap().started);
}

#[tokio::test]
async fn an_uninitialized_store_says_so() {
    let (_, core) = common::new_shamir().await;
    let err = core.generate_root_status().await.unwrap_err();
    assert_eq!(err.to_string(), "server is not yet initialized");
    assert_eq!(err.status(), 400);
}
