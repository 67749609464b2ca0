//! Crash test: acknowledged writes survive `SIGKILL`.
//!
//! The test re-executes its own binary as a child (selected by an
//! environment variable; a testkit `Process`, so it never outlives the
//! test). The child opens the database and writes from several concurrent
//! tasks — puts, two-key transactions, and deletes — printing each key to
//! stdout (the process's log) only after the call returned `Ok`. The
//! parent waits for those acknowledgements, kills the child with `SIGKILL`
//! in the middle of the stream, reopens the database, and checks that it
//! opens cleanly (and passes redb's integrity check) and that every
//! acknowledged write is there with its exact value. Several rounds run on
//! the same file, each checking all rounds so far. While the child runs,
//! the parent's own open of the file must fail as locked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use seal_core::{Storage, TxnOp};
use storage_redb::{RedbStorage, RedbStorageError};
use testkit::{Process, ProcessSpec, Timeline, wait};

const TEST_NAME: &str = "acknowledged_writes_survive_sigkill";
const CHILD_DB_ENV: &str = "STRONGROOM_REDB_CRASH_CHILD_DB";
const CHILD_ROUND_ENV: &str = "STRONGROOM_REDB_CRASH_CHILD_ROUND";
const WRITERS: usize = 8;
/// The child stops by itself after this long, so an orphan never writes
/// forever; the parent kills it long before.
const CHILD_LIFETIME: Duration = Duration::from_secs(300);
/// How long the child may take to acknowledge what the parent waits for.
const ACK_DEADLINE: Duration = Duration::from_secs(120);

/// The value written for `key`: derived from it, of varying length
/// (1..=3000 bytes), so the parent can check exact bytes.
fn value_for(key: &str) -> Vec<u8> {
    let len = 1 + key.bytes().map(usize::from).sum::<usize>() * 37 % 3000;
    key.bytes().cycle().take(len).collect()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(db) = std::env::var(CHILD_DB_ENV) {
        let round: usize = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
        child_main(Path::new(&db), round);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.redb");
    // What every acknowledged key must look like after the crash.
    let mut acknowledged: BTreeMap<String, Expect> = BTreeMap::new();
    for (round, kill_after) in [150usize, 600, 1500, 40].into_iter().enumerate() {
        let acks = run_child_and_kill(&db, round, kill_after);
        assert!(
            acks.len() >= kill_after,
            "round {round}: child acknowledged only {} writes",
            acks.len()
        );
        for (key, state) in acks {
            acknowledged.insert(key, state);
        }
        verify(&db, &acknowledged, round);
    }
}

/// Starts the child under testkit's watchdog (its stdout goes to a log),
/// waits until `kill_after` acknowledgements are in the log, sends
/// `SIGKILL`, and returns every acknowledgement the log holds.
fn run_child_and_kill(db: &Path, round: usize, kill_after: usize) -> Vec<(String, Expect)> {
    let timeline = Timeline::new();
    let child = Process::start(
        ProcessSpec::new(
            &format!("writer-r{round}"),
            std::env::current_exe().unwrap(),
            db.with_file_name(format!("child-r{round}.log")),
        )
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB_ENV, db)
        .env(CHILD_ROUND_ENV, round.to_string()),
        &timeline,
    );
    let acknowledged = |n: usize| {
        wait::until_blocking(
            &format!("round {round}: the child acknowledged {n} writes"),
            ACK_DEADLINE,
            || {
                let acks = parse_acks(&child.log_since_start(), round);
                if acks.len() >= n {
                    return Ok(());
                }
                if let Some(status) = child.exit_status() {
                    panic!("round {round}: child exited ({status}) before being killed");
                }
                Err(format!("{} so far", acks.len()))
            },
        );
    };
    if round == 0 {
        acknowledged(1);
        // While the child holds the file, this process must be refused
        // with a clear "locked" error rather than open it a second time.
        match RedbStorage::open(db) {
            Err(err @ RedbStorageError::Locked { .. }) => {
                assert!(err.to_string().contains("crash.redb"), "{err}");
            }
            other => panic!("open beside a live writer process: expected Locked, got {other:?}"),
        }
    }
    acknowledged(kill_after);
    child.kill9(); // SIGKILL: no destructors, no flush.
    let status = child.exit_status().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: child was not killed by SIGKILL: {status}"
    );
    parse_acks(&child.log_since_start(), round)
}

/// The acknowledgements in the child's output, in order (a line cut short
/// by the kill was never fully acknowledged); panics on a reported failure.
fn parse_acks(log: &str, round: usize) -> Vec<(String, Expect)> {
    let mut acks = Vec::new();
    for line in log.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            continue;
        };
        if let Some(key) = line.strip_prefix("PUT ") {
            acks.push((key.to_owned(), Expect::Value(value_for(key))));
        } else if let Some(key) = line.strip_prefix("PUT-THEN-DEL ") {
            acks.push((key.to_owned(), Expect::ValueOrGone(value_for(key))));
        } else if let Some(key) = line.strip_prefix("DEL ") {
            acks.push((key.to_owned(), Expect::Gone));
        } else if let Some(message) = line.strip_prefix("FAIL ") {
            panic!("round {round}: child failed: {message}");
        }
    }
    acks
}

fn verify(db: &Path, acknowledged: &BTreeMap<String, Expect>, round: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let storage = RedbStorage::open(db)
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        let mut present = 0;
        for (key, want) in acknowledged {
            let got = storage.get(key).await.unwrap();
            match want {
                Expect::Value(value) => {
                    present += 1;
                    assert!(
                        got.as_ref() == Some(value),
                        "round {round}: acknowledged put of {key} lost or altered \
                         (got {:?} bytes, want {} bytes)",
                        got.as_ref().map(Vec::len),
                        value.len()
                    );
                }
                Expect::ValueOrGone(value) => assert!(
                    got.is_none() || got.as_ref() == Some(value),
                    "round {round}: acknowledged put of {key} altered"
                ),
                Expect::Gone => {
                    assert_eq!(
                        got, None,
                        "round {round}: acknowledged delete of {key} undone"
                    );
                }
            }
        }
        assert!(present > 0);
        // The store still takes writes after recovery.
        storage.put("after/crash", b"ok").await.unwrap();
    });
    // And redb itself finds the recovered file sound.
    let mut raw = redb::Database::open(db).unwrap();
    assert!(
        raw.check_integrity().unwrap(),
        "round {round}: integrity check repaired damage"
    );
}

/// The state an acknowledged key must be in after the crash.
#[derive(Debug)]
enum Expect {
    /// An acknowledged put, with nothing after it.
    Value(Vec<u8>),
    /// An acknowledged put whose delete was sent but not acknowledged when
    /// the child died: the delete may or may not have committed, but the
    /// value must not be anything else.
    ValueOrGone(Vec<u8>),
    /// An acknowledged delete.
    Gone,
}

/// The child: write forever (until killed), acknowledging on stdout.
fn child_main(db: &Path, round: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let storage = Arc::new(RedbStorage::open(db).unwrap());
        let deadline = Instant::now() + CHILD_LIFETIME;
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let storage = Arc::clone(&storage);
            tasks.push(tokio::spawn(async move {
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let key = format!("crash/r{round}/w{writer}/{i:07}");
                    if let Err(e) = write_one(&*storage, &key, i).await {
                        ack(&format!("FAIL {key}: {e}"));
                        return;
                    }
                    i += 1;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// One unit of work; prints an acknowledgement after each call returns Ok.
async fn write_one(
    storage: &dyn Storage,
    key: &str,
    i: usize,
) -> Result<(), seal_core::StorageError> {
    match i % 5 {
        // A two-key transaction: both keys are acknowledged together.
        0 => {
            let pair = format!("{key}-pair");
            storage
                .transaction(vec![
                    TxnOp::put(key, value_for(key)),
                    TxnOp::put(pair.clone(), value_for(&pair)),
                ])
                .await?;
            ack(&format!("PUT {key}\nPUT {pair}"));
        }
        // A put, then a delete of the same key.
        3 => {
            storage.put(key, &value_for(key)).await?;
            ack(&format!("PUT-THEN-DEL {key}"));
            storage.delete(key).await?;
            ack(&format!("DEL {key}"));
        }
        _ => {
            storage.put(key, &value_for(key)).await?;
            ack(&format!("PUT {key}"));
        }
    }
    Ok(())
}

fn ack(lines: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{lines}").unwrap();
    out.flush().unwrap();
}
