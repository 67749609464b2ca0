//! The storage conformance cases, one function each, run through
//! [`storage_suite!`](crate::storage_suite). Each case receives a fresh,
//! empty backend. They panic (fail) on any departure from the
//! [`Storage`] contract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use crate::{MAX_KEY_LEN, Storage, StorageError, TxnOp};

type S = Arc<dyn Storage>;

async fn get(s: &S, key: &str) -> Option<Vec<u8>> {
    s.get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
}

async fn put(s: &S, key: &str, value: &[u8]) {
    s.put(key, value)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

async fn list(s: &S, prefix: &str) -> Vec<String> {
    s.list(prefix)
        .await
        .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"))
}

fn assert_invalid_key<T: std::fmt::Debug>(result: Result<T, StorageError>, what: &str) {
    match result {
        Err(StorageError::InvalidKey { .. }) => {}
        other => panic!("{what}: expected InvalidKey, got {other:?}"),
    }
}

/// The largest value this backend promises to store, capped at 1 MiB.
fn big_value_size(s: &S) -> usize {
    let mib = 1024 * 1024;
    s.limits()
        .max_value_size
        .map_or(mib, |limit| limit.min(mib))
}

pub async fn round_trip(s: S) {
    put(&s, "foo", b"bar").await;
    assert_eq!(get(&s, "foo").await.as_deref(), Some(&b"bar"[..]));
}

pub async fn overwrite(s: S) {
    put(&s, "foo", b"one").await;
    put(&s, "foo", b"two").await;
    assert_eq!(get(&s, "foo").await.as_deref(), Some(&b"two"[..]));
    assert_eq!(list(&s, "").await, ["foo"]);
}

pub async fn get_missing(s: S) {
    assert_eq!(get(&s, "missing").await, None);
    assert_eq!(get(&s, "missing/nested/key").await, None);
}

pub async fn delete_missing(s: S) {
    s.delete("never/written")
        .await
        .expect("delete of a missing key succeeds");
}

pub async fn delete_then_get(s: S) {
    put(&s, "a/b", b"1").await;
    put(&s, "a/c", b"2").await;
    s.delete("a/b").await.unwrap();
    assert_eq!(get(&s, "a/b").await, None);
    assert_eq!(get(&s, "a/c").await.as_deref(), Some(&b"2"[..]));
}

pub async fn empty_value(s: S) {
    put(&s, "empty", b"").await;
    assert_eq!(get(&s, "empty").await.as_deref(), Some(&b""[..]));
    assert_eq!(list(&s, "").await, ["empty"]);
}

pub async fn binary_value(s: S) {
    let value: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    put(&s, "bin", &value).await;
    assert_eq!(get(&s, "bin").await, Some(value));
}

/// A 1 MiB value round-trips; a backend with a smaller limit stores a value
/// at its limit and refuses one byte more with `ValueTooLarge` naming the key.
pub async fn large_value(s: S) {
    let size = big_value_size(&s);
    let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    put(&s, "big/value", &value).await;
    assert_eq!(get(&s, "big/value").await, Some(value));
    if let Some(limit) = s.limits().max_value_size {
        let over = vec![7u8; limit + 1];
        match s.put("big/over", &over).await {
            Err(StorageError::ValueTooLarge {
                key,
                size,
                limit: l,
                ..
            }) => {
                assert_eq!(key, "big/over");
                assert_eq!(size, limit + 1);
                assert_eq!(l, limit);
            }
            other => panic!("oversized put: expected ValueTooLarge, got {other:?}"),
        }
        assert_eq!(get(&s, "big/over").await, None, "refused put wrote nothing");
    }
}

pub async fn list_empty_storage(s: S) {
    assert!(list(&s, "").await.is_empty());
}

pub async fn list_root(s: S) {
    put(&s, "core/mounts", b"k").await;
    put(&s, "core/seal-config", b"c").await;
    put(&s, "sys/token/id/abc", b"t").await;
    put(&s, "top", b"t").await;
    assert_eq!(list(&s, "").await, ["core/", "sys/", "top"]);
}

pub async fn list_nested_folders(s: S) {
    for key in ["a/b/c/d", "a/b/e", "a/f", "a/g/h", "x/y"] {
        put(&s, key, b"v").await;
    }
    assert_eq!(list(&s, "a/").await, ["b/", "f", "g/"]);
    assert_eq!(list(&s, "a/b/").await, ["c/", "e"]);
    assert_eq!(list(&s, "a/b/c/").await, ["d"]);
    assert_eq!(list(&s, "x/").await, ["y"]);
}

/// A prefix need not be a folder: `"fo"` lists the rest of each key up to
/// its first `/`.
pub async fn list_partial_prefix(s: S) {
    for key in ["foo/bar", "foo/baz/qux", "fob", "other"] {
        put(&s, key, b"v").await;
    }
    assert_eq!(list(&s, "fo").await, ["b", "o/"]);
    assert_eq!(list(&s, "foo/ba").await, ["r", "z/"]);
    assert_eq!(list(&s, "foo").await, ["/"]);
}

pub async fn list_missing_prefix(s: S) {
    put(&s, "a/b", b"v").await;
    assert!(list(&s, "nothing/").await.is_empty());
    assert!(list(&s, "a/b/").await.is_empty(), "a leaf is not a folder");
    assert!(list(&s, "zzz").await.is_empty());
}

pub async fn list_sorted(s: S) {
    let keys = ["m", "b", "z/1", "a", "k/2", "c", "Z", "0", "é", "b0"];
    for key in keys {
        put(&s, key, b"v").await;
    }
    let got = list(&s, "").await;
    let mut want: Vec<String> = ["m", "b", "z/", "a", "k/", "c", "Z", "0", "é", "b0"]
        .into_iter()
        .map(String::from)
        .collect();
    want.sort();
    assert_eq!(got, want, "list must be sorted by byte order");
}

pub async fn list_leaf_and_folder_same_name(s: S) {
    put(&s, "node", b"leaf").await;
    put(&s, "node/child", b"child").await;
    assert_eq!(list(&s, "").await, ["node", "node/"]);
    assert_eq!(get(&s, "node").await.as_deref(), Some(&b"leaf"[..]));
}

pub async fn list_after_delete(s: S) {
    put(&s, "dir/only", b"v").await;
    put(&s, "keep", b"v").await;
    s.delete("dir/only").await.unwrap();
    assert_eq!(list(&s, "").await, ["keep"], "an emptied folder disappears");
    assert!(list(&s, "dir/").await.is_empty());
}

pub async fn unicode_and_space_keys(s: S) {
    let keys = [
        "ünïcödé/ключ",
        "with space/and more",
        "emoji/🔐",
        "a.b/.hidden",
        "pct%20/x",
    ];
    for (i, key) in keys.iter().enumerate() {
        put(&s, key, &[i as u8]).await;
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(get(&s, key).await, Some(vec![i as u8]), "{key}");
    }
    assert_eq!(list(&s, "ünïcödé/").await, ["ключ"]);
    assert_eq!(list(&s, "with space/").await, ["and more"]);
    assert_eq!(list(&s, "pct%20/").await, ["x"]);
}

/// Leading `/`, trailing `/`, `//`, `.` and `..` segments, empty keys and
/// control characters are rejected by every operation, and nothing is
/// written.
pub async fn invalid_keys_rejected(s: S) {
    for key in [
        "", "/lead", "trail/", "a//b", "a/./b", "a/../b", "..", ".", "nul\0x", "nl\nx",
    ] {
        assert_invalid_key(s.put(key, b"v").await, &format!("put {key:?}"));
        assert_invalid_key(s.get(key).await, &format!("get {key:?}"));
        assert_invalid_key(s.delete(key).await, &format!("delete {key:?}"));
    }
    assert!(list(&s, "").await.is_empty(), "rejected keys wrote nothing");
}

pub async fn invalid_prefix_rejected(s: S) {
    for prefix in ["/", "/a", "a//", "a/../", "./"] {
        assert_invalid_key(s.list(prefix).await, &format!("list {prefix:?}"));
    }
}

pub async fn long_keys(s: S) {
    let longest = format!("long/{}", "k".repeat(MAX_KEY_LEN - 5));
    put(&s, &longest, b"v").await;
    assert_eq!(get(&s, &longest).await.as_deref(), Some(&b"v"[..]));
    let too_long = format!("{longest}k");
    assert_invalid_key(s.put(&too_long, b"v").await, "put of an over-long key");
}

pub async fn keys_are_case_sensitive(s: S) {
    put(&s, "Key", b"upper").await;
    put(&s, "key", b"lower").await;
    assert_eq!(get(&s, "Key").await.as_deref(), Some(&b"upper"[..]));
    assert_eq!(get(&s, "key").await.as_deref(), Some(&b"lower"[..]));
}

pub async fn concurrent_writers(s: S) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..16 {
                let key = format!("conc/{t}/{i}");
                s.put(&key, key.as_bytes()).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(list(&s, "conc/").await.len(), 8);
    for t in 0..8 {
        assert_eq!(list(&s, &format!("conc/{t}/")).await.len(), 16);
        for i in 0..16 {
            let key = format!("conc/{t}/{i}");
            assert_eq!(get(&s, &key).await, Some(key.clone().into_bytes()));
        }
    }
}

/// Concurrent writers of one key leave exactly one of their values.
pub async fn concurrent_writers_same_key(s: S) {
    let mut tasks = Vec::new();
    for t in 0..16u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put("same", &[t; 64]).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let value = get(&s, "same").await.expect("one value survives");
    assert_eq!(value.len(), 64);
    assert!(value.iter().all(|b| *b == value[0]), "value is not torn");
}

pub async fn transaction_applies_all(s: S) {
    let ops = (0..10)
        .map(|i| TxnOp::put(format!("txn/{i}"), vec![i as u8]))
        .collect();
    s.transaction(ops).await.unwrap();
    assert_eq!(list(&s, "txn/").await.len(), 10);
    assert_eq!(get(&s, "txn/7").await, Some(vec![7]));
}

pub async fn transaction_put_and_delete(s: S) {
    put(&s, "t/old", b"old").await;
    s.transaction(vec![
        TxnOp::delete("t/old"),
        TxnOp::put("t/new", b"new".to_vec()),
    ])
    .await
    .unwrap();
    assert_eq!(get(&s, "t/old").await, None);
    assert_eq!(get(&s, "t/new").await.as_deref(), Some(&b"new"[..]));
}

pub async fn transaction_later_op_wins(s: S) {
    s.transaction(vec![
        TxnOp::put("t/k", b"first".to_vec()),
        TxnOp::put("t/k", b"second".to_vec()),
        TxnOp::put("t/gone", b"x".to_vec()),
        TxnOp::delete("t/gone"),
    ])
    .await
    .unwrap();
    assert_eq!(get(&s, "t/k").await.as_deref(), Some(&b"second"[..]));
    assert_eq!(get(&s, "t/gone").await, None);
}

pub async fn transaction_empty(s: S) {
    s.transaction(Vec::new())
        .await
        .expect("an empty transaction is a no-op");
    assert!(list(&s, "").await.is_empty());
}

/// One invalid key fails the whole transaction: nothing before or after it
/// is written, and existing data is untouched.
pub async fn transaction_invalid_key_writes_nothing(s: S) {
    put(&s, "t/existing", b"keep").await;
    let result = s
        .transaction(vec![
            TxnOp::put("t/a", b"a".to_vec()),
            TxnOp::delete("t/existing"),
            TxnOp::put("t//bad", b"bad".to_vec()),
            TxnOp::put("t/b", b"b".to_vec()),
        ])
        .await;
    assert_invalid_key(result, "transaction with an invalid key");
    assert_eq!(list(&s, "t/").await, ["existing"]);
    assert_eq!(get(&s, "t/existing").await.as_deref(), Some(&b"keep"[..]));
}

/// A value over the backend's limit fails the whole transaction. Backends
/// without a limit get an invalid key at the end instead, so every backend
/// proves a late failure undoes nothing.
pub async fn transaction_oversized_value_writes_nothing(s: S) {
    put(&s, "t/existing", b"keep").await;
    let failing = match s.limits().max_value_size {
        Some(limit) => TxnOp::put("t/huge", vec![0u8; limit + 1]),
        None => TxnOp::put("/t/late-invalid", b"x".to_vec()),
    };
    let result = s
        .transaction(vec![
            TxnOp::put("t/a", b"a".to_vec()),
            TxnOp::delete("t/existing"),
            failing,
        ])
        .await;
    assert!(
        result.is_err(),
        "transaction with an oversized value must fail"
    );
    assert_eq!(list(&s, "t/").await, ["existing"]);
}

/// A backend with an operation limit accepts a transaction at the limit and
/// refuses one above it with `TransactionTooLarge`, writing nothing.
pub async fn transaction_op_limit(s: S) {
    let n = s.limits().max_transaction_ops.unwrap_or(200);
    let ops = (0..n)
        .map(|i| TxnOp::put(format!("lim/{i:04}"), vec![1]))
        .collect();
    s.transaction(ops).await.unwrap();
    assert_eq!(list(&s, "lim/").await.len(), n);
    if let Some(limit) = s.limits().max_transaction_ops {
        let ops = (0..=limit)
            .map(|i| TxnOp::put(format!("over/{i:04}"), vec![1]))
            .collect();
        match s.transaction(ops).await {
            Err(StorageError::TransactionTooLarge { ops, .. }) => assert_eq!(ops, limit + 1),
            other => panic!("expected TransactionTooLarge, got {other:?}"),
        }
        assert!(list(&s, "over/").await.is_empty());
    }
}
