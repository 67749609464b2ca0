//! The seal-core storage conformance suite, run against a fresh redb file
//! per case, plus the behaviours specific to this backend: restart
//! persistence, locking, refusing files that are not databases, group
//! commit isolation, and a model check against `MemoryStorage`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use seal_core::{MemoryStorage, Storage, StorageError, TxnOp};
use storage_redb::{RedbOptions, RedbStorage, RedbStorageError};
use tempfile::TempDir;

async fn build() -> (Arc<dyn Storage>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let storage = RedbStorage::open(dir.path().join("suite.redb")).unwrap();
    (Arc::new(storage), dir)
}

seal_core::storage_suite!(build);

fn db_path(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("strongroom.redb")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = RedbStorage::open(db_path(&dir)).unwrap();
        storage.put("core/keyring", b"ring").await.unwrap();
        storage.put("logical/a/b", b"ab").await.unwrap();
        storage.put("logical/gone", b"x").await.unwrap();
        storage
            .transaction(vec![
                TxnOp::delete("logical/gone"),
                TxnOp::put("logical/c", b"c".to_vec()),
            ])
            .await
            .unwrap();
    }
    // Dropping released the lock: the same path opens again at once.
    let storage = RedbStorage::open(db_path(&dir)).unwrap();
    assert_eq!(
        storage.get("core/keyring").await.unwrap().as_deref(),
        Some(&b"ring"[..])
    );
    assert_eq!(storage.list("logical/").await.unwrap(), ["a/", "c"]);
    assert_eq!(storage.get("logical/gone").await.unwrap(), None);
}

#[tokio::test]
async fn second_open_of_same_file_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RedbStorage::open(db_path(&dir)).unwrap();
    match RedbStorage::open(db_path(&dir)) {
        Err(err @ RedbStorageError::Locked { .. }) => {
            let message = err.to_string();
            assert!(message.contains("locked"), "{message}");
            assert!(message.contains("strongroom.redb"), "{message}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn garbage_file_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = RedbStorage::open(&path).expect_err("a garbage file must not open");
    assert!(
        matches!(
            err,
            RedbStorageError::NotADatabase { .. } | RedbStorageError::Corrupt { .. }
        ),
        "expected NotADatabase or Corrupt, got {err:?}"
    );
    assert!(err.to_string().contains("strongroom.redb"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "a refused file is left untouched"
    );
}

#[test]
fn missing_directory_is_an_io_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/db.redb");
    match RedbStorage::open(&path) {
        Err(err @ RedbStorageError::Io { .. }) => {
            assert!(err.to_string().contains("no/such/dir/db.redb"), "{err}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_value_is_refused_before_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let storage =
        RedbStorage::open_with(db_path(&dir), RedbOptions::default().max_value_size(8)).unwrap();
    storage.put("ok", &[1; 8]).await.unwrap();
    match storage.put("big", &[1; 9]).await {
        Err(StorageError::ValueTooLarge {
            op,
            key,
            size,
            limit,
        }) => {
            assert_eq!((op, key.as_str(), size, limit), ("put", "big", 9, 8));
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(storage.list("").await.unwrap(), ["ok"]);
}

/// Many concurrent writers, some of which send invalid transactions: every
/// valid write lands, every invalid one fails alone and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_transactions_do_not_leak_into_other_writes() {
    let dir = tempfile::tempdir().unwrap();
    let redb = Arc::new(RedbStorage::open(db_path(&dir)).unwrap());
    let storage: Arc<dyn Storage> = redb.clone();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let storage = Arc::clone(&storage);
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let good = format!("good/{t}/{i}");
                if (t + i) % 3 == 0 {
                    let result = storage
                        .transaction(vec![
                            TxnOp::put(format!("bad/{t}/{i}"), b"x".to_vec()),
                            TxnOp::put("bad//key", b"x".to_vec()),
                        ])
                        .await;
                    assert!(matches!(result, Err(StorageError::InvalidKey { .. })));
                }
                storage
                    .transaction(vec![
                        TxnOp::put(good.clone(), good.clone().into_bytes()),
                        TxnOp::put(format!("{good}-twin"), b"twin".to_vec()),
                    ])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(storage.list("bad/").await.unwrap().is_empty());
    // Invalid transactions were refused before reaching the writer: it saw
    // exactly the 160 good ones and no batch failed.
    let stats = redb.stats();
    assert_eq!((stats.writes, stats.failed_batches), (160, 0));
    assert!(stats.commits <= 160);
    for t in 0..16 {
        assert_eq!(storage.list(&format!("good/{t}/")).await.unwrap().len(), 20);
        for i in 0..10 {
            let good = format!("good/{t}/{i}");
            assert_eq!(
                storage.get(&good).await.unwrap(),
                Some(good.clone().into_bytes())
            );
        }
    }
}

/// With group commit off (one commit per write) the contract still holds;
/// this pins the `max_batch_writes(1)` path the benches compare against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbatched_writer_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(
        RedbStorage::open_with(
            db_path(&dir),
            RedbOptions::default()
                .max_batch_writes(1)
                .two_phase_commit(false),
        )
        .unwrap(),
    );
    seal_core::testing::storage_cases::concurrent_writers(Arc::clone(&storage)).await;
    seal_core::testing::storage_cases::transaction_later_op_wins(storage).await;
}

/// `list` skips over a folder's contents with a new range seek; names
/// sorting around `/` (`.` before it, `0` after it) must still appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_skips_large_folders_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let storage = RedbStorage::open(db_path(&dir)).unwrap();
    let ops: Vec<TxnOp> = (0..2000)
        .map(|i| TxnOp::put(format!("big/{i:05}/leaf"), vec![1]))
        .chain([TxnOp::put("big0", vec![1])])
        .collect();
    storage.transaction(ops).await.unwrap();
    storage.put("bi", b"v").await.unwrap();
    storage.put("big.txt", b"v").await.unwrap();
    assert_eq!(
        storage.list("").await.unwrap(),
        ["bi", "big.txt", "big/", "big0"]
    );
    assert_eq!(storage.list("big").await.unwrap(), [".txt", "/", "0"]);
    assert_eq!(storage.list("big/").await.unwrap().len(), 2000);
    assert_eq!(storage.list("big/00042/").await.unwrap(), ["leaf"]);
}

mod model {
    //! Random operation sequences give the same answers on redb as on
    //! `MemoryStorage`, the reference implementation of the contract.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(String, Vec<u8>),
        Delete(String),
        Txn(Vec<(String, Option<Vec<u8>>)>),
        List(String),
        Get(String),
    }

    fn key() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "ab", "a0", "é", "z z"]),
            1..4,
        )
        .prop_map(|segments| segments.join("/"))
    }

    fn prefix() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            key().prop_map(|k| format!("{k}/")),
            key(),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let value = prop::collection::vec(any::<u8>(), 0..16);
        prop_oneof![
            (key(), value.clone()).prop_map(|(k, v)| Op::Put(k, v)),
            key().prop_map(Op::Delete),
            prop::collection::vec((key(), prop::option::of(value)), 0..5).prop_map(Op::Txn),
            prefix().prop_map(Op::List),
            key().prop_map(Op::Get),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn redb_matches_memory(ops in prop::collection::vec(op(), 1..40)) {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let redb = RedbStorage::open_with(
                    db_path(&dir),
                    RedbOptions::default().two_phase_commit(false),
                )
                .unwrap();
                let memory = MemoryStorage::new();
                for op in ops {
                    match op {
                        Op::Put(k, v) => {
                            redb.put(&k, &v).await.unwrap();
                            memory.put(&k, &v).await.unwrap();
                        }
                        Op::Delete(k) => {
                            redb.delete(&k).await.unwrap();
                            memory.delete(&k).await.unwrap();
                        }
                        Op::Txn(items) => {
                            let ops: Vec<TxnOp> = items
                                .into_iter()
                                .map(|(k, v)| match v {
                                    Some(v) => TxnOp::put(k, v),
                                    None => TxnOp::delete(k),
                                })
                                .collect();
                            redb.transaction(ops.clone()).await.unwrap();
                            memory.transaction(ops).await.unwrap();
                        }
                        Op::List(p) => {
                            assert_eq!(redb.list(&p).await.unwrap(), memory.list(&p).await.unwrap(), "list {p:?}");
                        }
                        Op::Get(k) => {
                            assert_eq!(redb.get(&k).await.unwrap(), memory.get(&k).await.unwrap(), "get {k:?}");
                        }
                    }
                }
                assert_eq!(redb.list("").await.unwrap(), memory.list("").await.unwrap());
            });
        }
    }
}
