//! [`RedbStorageError`]: everything that can go wrong in this crate.

use std::path::{Path, PathBuf};

/// Why opening or using a [`RedbStorage`](crate::RedbStorage) failed.
///
/// Errors from [`Storage`](seal_core::Storage) calls reach callers wrapped in
/// a [`seal_core::StorageError`] that adds the operation and the key; this
/// enum is its `source`, naming the database file and what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedbStorageError {
    /// Another process (or another handle in this process) holds the file's
    /// lock. redb allows one writer per file.
    #[error(
        "redb database {path} is locked: another process or handle already has it open; \
         stop the other Strongroom server using this file, or give this one its own path"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The file exists but is not a redb database (wrong magic number,
    /// truncated header): most likely the wrong path.
    #[error(
        "{path} is not a redb database (unrecognised or damaged file header): {source}; \
         check the configured storage path, or restore the file from a backup"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What redb found.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// redb found damage it could not repair.
    #[error(
        "redb database {path} is corrupt and could not be repaired: {source}; \
         restore it from a backup (keep the damaged file for analysis)"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// redb's description of the damage.
        #[source]
        source: Box<redb::Error>,
    },
    /// The file was written by an older redb file format that this build
    /// cannot open in place.
    #[error(
        "redb database {path} uses file format {format}, which this build cannot open; \
         upgrade it with the redb version that wrote it, or restore a newer backup"
    )]
    UpgradeRequired {
        /// The database file.
        path: PathBuf,
        /// The file format version found.
        format: u8,
    },
    /// The file is a redb database, but Strongroom's layout version inside
    /// it is one this build does not know (written by a newer Strongroom).
    #[error(
        "redb database {path} holds Strongroom storage layout version {found}, but this build \
         understands only version {expected}; run the Strongroom version that wrote it"
    )]
    UnsupportedLayout {
        /// The database file.
        path: PathBuf,
        /// The layout version stored in the file.
        found: u64,
        /// The layout version this build writes.
        expected: u64,
    },
    /// The file could not be opened or created (missing directory,
    /// permissions, disk full).
    #[error(
        "cannot open redb database {path}: {source}; check that the directory exists, \
         that this user may read and write it, and that the disk has free space"
    )]
    Io {
        /// The database file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A redb operation failed while the database was open.
    #[error("redb {action} failed on {path}: {source}")]
    Redb {
        /// What was being done (`begin write transaction`, `commit`, ...).
        action: &'static str,
        /// The database file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The writer thread that commits every write is gone, so nothing can
    /// be written any more (it panicked, or the store is shutting down).
    #[error(
        "the writer thread of redb database {path} has stopped, so writes cannot be committed; \
         see the earlier log lines for why, and restart the process"
    )]
    WriterStopped {
        /// The database file.
        path: PathBuf,
    },
    /// A blocking read task could not run to completion (it panicked or
    /// the runtime is shutting down).
    #[error("a read task on redb database {path} did not complete: {source}")]
    ReadTask {
        /// The database file.
        path: PathBuf,
        /// Tokio's description of the failure.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl RedbStorageError {
    /// Wraps a redb error raised while the database was open, promoting
    /// corruption to [`RedbStorageError::Corrupt`] so it is never mistaken
    /// for a passing hiccup.
    pub(crate) fn redb(action: &'static str, path: &Path, source: impl Into<redb::Error>) -> Self {
        let source = Box::new(source.into());
        if matches!(*source, redb::Error::Corrupted(_)) {
            return Self::Corrupt {
                path: path.to_owned(),
                source,
            };
        }
        Self::Redb {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// Classifies an error from opening the file.
    pub(crate) fn open(path: &Path, source: redb::DatabaseError) -> Self {
        let path = path.to_owned();
        match source {
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => Self::Locked { path },
            redb::DatabaseError::UpgradeRequired(format) => Self::UpgradeRequired { path, format },
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() == std::io::ErrorKind::InvalidData =>
            {
                Self::NotADatabase {
                    path,
                    source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(io))),
                }
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
                Self::Io { path, source: io }
            }
            other => {
                let source = Box::new(redb::Error::from(other));
                if matches!(
                    *source,
                    redb::Error::Corrupted(_) | redb::Error::RepairAborted
                ) {
                    Self::Corrupt { path, source }
                } else {
                    Self::Redb {
                        action: "open",
                        path,
                        source,
                    }
                }
            }
        }
    }
}
