//! [`RedbOptions`]: tuning knobs for [`RedbStorage`](crate::RedbStorage).

/// Default largest value: 16 MiB. Strongroom stores barrier ciphertext of
/// secrets and keyrings, which are far smaller; the bound keeps one caller
/// from stalling every other writer's commit with a huge value.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// Default most operations in one [`transaction`](seal_core::Storage::transaction).
pub const DEFAULT_MAX_TRANSACTION_OPS: usize = 4096;

/// Default most write requests the writer folds into one commit.
pub const DEFAULT_MAX_BATCH_WRITES: usize = 1024;

/// Default most value bytes the writer folds into one commit (64 MiB).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// How a [`RedbStorage`](crate::RedbStorage) is opened.
///
/// The defaults suit a Strongroom server; change them only with a reason.
/// Build with [`RedbOptions::default`] and the setter methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedbOptions {
    /// Largest value a put accepts, in bytes.
    pub max_value_size: usize,
    /// Most operations one atomic transaction accepts.
    pub max_transaction_ops: usize,
    /// Most write requests (puts, deletes, transactions) committed together.
    pub max_batch_writes: usize,
    /// Most value bytes committed together; a single larger request still
    /// commits, alone.
    pub max_batch_bytes: usize,
    /// Commit with redb's two-phase commit (two fsyncs) instead of its
    /// one-fsync commit whose crash recovery trusts a non-cryptographic
    /// checksum. redb recommends two-phase commit when an attacker may
    /// choose what is written (Strongroom's keys are request paths), so it
    /// is on by default; group commit pays the second fsync once per batch.
    pub two_phase_commit: bool,
    /// redb page cache size in bytes (`None`: redb's default).
    pub cache_size: Option<usize>,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            max_transaction_ops: DEFAULT_MAX_TRANSACTION_OPS,
            max_batch_writes: DEFAULT_MAX_BATCH_WRITES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            two_phase_commit: true,
            cache_size: None,
        }
    }
}

impl RedbOptions {
    /// Sets [`RedbOptions::max_value_size`].
    #[must_use]
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Sets [`RedbOptions::max_transaction_ops`].
    #[must_use]
    pub fn max_transaction_ops(mut self, ops: usize) -> Self {
        self.max_transaction_ops = ops;
        self
    }

    /// Sets [`RedbOptions::max_batch_writes`] (at least 1). `1` turns group
    /// commit off: one fsync'd commit per write, useful only to measure
    /// what group commit buys.
    #[must_use]
    pub fn max_batch_writes(mut self, writes: usize) -> Self {
        self.max_batch_writes = writes.max(1);
        self
    }

    /// Sets [`RedbOptions::max_batch_bytes`].
    #[must_use]
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Sets [`RedbOptions::two_phase_commit`].
    #[must_use]
    pub fn two_phase_commit(mut self, enabled: bool) -> Self {
        self.two_phase_commit = enabled;
        self
    }

    /// Sets [`RedbOptions::cache_size`].
    #[must_use]
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = Some(bytes);
        self
    }
}
