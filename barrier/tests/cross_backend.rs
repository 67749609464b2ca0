//! aws-lc-rs and RustCrypto write the same format: each reads what the
//! other wrote, keyring included.
#![cfg(all(feature = "aws-lc", feature = "rustcrypto"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use barrier::{AeadBackend, Barrier};
use common::{reopen, unsealed};

#[tokio::test]
async fn each_backend_reads_the_others_entries_and_keyring() {
    for (writer, reader) in [
        (AeadBackend::AwsLc, AeadBackend::RustCrypto),
        (AeadBackend::RustCrypto, AeadBackend::AwsLc),
    ] {
        // The keyring written by `writer` unseals with `reader`.
        let (storage, w, root) = unsealed(writer).await;
        w.put("a/before-rotate", b"one").await.unwrap();
        w.rotate().await.unwrap();
        w.put("a/after-rotate", b"two").await.unwrap();
        let empty = w.encrypt("", b"").unwrap();

        let r: Barrier = reopen(&storage, reader, &root).await;
        assert_eq!(
            r.get("a/before-rotate").await.unwrap().as_deref(),
            Some(&b"one"[..]),
            "{writer}->{reader}"
        );
        assert_eq!(
            r.get("a/after-rotate").await.unwrap().as_deref(),
            Some(&b"two"[..]),
            "{writer}->{reader}"
        );
        assert!(r.decrypt("", &empty).unwrap().is_empty());

        // And back: the reader's writes (and its keyring update) open with
        // the writer's backend.
        r.put("b/from-reader", b"three").await.unwrap();
        r.rotate().await.unwrap();
        r.put("b/after-reader-rotate", &vec![7u8; 70_000])
            .await
            .unwrap();
        w.reload_keyring().await.unwrap();
        assert_eq!(
            w.get("b/from-reader").await.unwrap().as_deref(),
            Some(&b"three"[..])
        );
        assert_eq!(
            w.get("b/after-reader-rotate").await.unwrap(),
            Some(vec![7u8; 70_000])
        );
        for size in [0usize, 1, 15, 16, 17, 4096, 65_536] {
            let value: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let ct = w.encrypt("k", &value).unwrap();
            assert_eq!(
                &*r.decrypt("k", &ct).unwrap(),
                &value[..],
                "{writer}->{reader} {size}"
            );
            let ct = r.encrypt("k", &value).unwrap();
            assert_eq!(
                &*w.decrypt("k", &ct).unwrap(),
                &value[..],
                "{reader}->{writer} {size}"
            );
        }
    }
}

#[tokio::test]
async fn tampering_is_refused_the_same_way_by_both() {
    let (storage, w, root) = unsealed(AeadBackend::AwsLc).await;
    let r = reopen(&storage, AeadBackend::RustCrypto, &root).await;
    let ct = w.encrypt("p", b"payload").unwrap();
    for i in 0..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 0x04;
        let (a, b) = (w.decrypt("p", &bad), r.decrypt("p", &bad));
        assert_eq!(
            a.map(|p| p.to_vec()).map_err(|e| e.to_string()),
            b.map(|p| p.to_vec()).map_err(|e| e.to_string()),
            "byte {i}"
        );
    }
}
