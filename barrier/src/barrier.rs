//! [`Barrier`]: the keyring barrier over any [`Storage`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use seal_core::{RootKey, Storage, StorageError, StorageLimits, TxnOp, validate_key};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::BarrierError;
use crate::cipher::{AeadBackend, KeyCipher, OVERHEAD, parse};
use crate::keyring::{
    EncodedKeyring, KeyStatus, Keyring, RootKeyEntry, RootKeyEntryRef, RotationConfig, TermKey,
    to_zeroizing_json,
};
use crate::observer::{BarrierOp, OpObserver};

/// Where the keyring lives: a barrier entry of term 1, encrypted with the
/// root key, AAD = this path.
pub const KEYRING_PATH: &str = "core/keyring";
/// Where the root key lives encrypted with the active term key (Vault's
/// `core/master`), so a node that follows a rekey can learn the new root key
/// from the term keys it already holds.
pub const ROOT_KEY_PATH: &str = "core/master";
/// The barrier's own entries, hidden from and refused by the encrypted view.
/// Both sit directly in one folder, which `list` relies on.
const RESERVED_PATHS: [&str; 2] = [KEYRING_PATH, ROOT_KEY_PATH];
/// The term `core/keyring` is always written under.
const KEYRING_TERM: u32 = 1;
/// Bytes of a freshly generated term key (AES-256).
const TERM_KEY_LEN: usize = 32;

/// The AES-256-GCM keyring barrier: an encrypted view of a [`Storage`].
///
/// Everything written through it is encrypted with the active term key in
/// Vault's layout (see [`crate::cipher`]) with the path as AAD; reads pick
/// the key by the term in the entry, so entries written before a
/// [`rotate`](Self::rotate) stay readable.
///
/// Cheap to share as `Arc<Barrier>`; it also implements [`Storage`] so it
/// can be handed to anything that takes `Arc<dyn Storage>`.
///
/// # Concurrency
/// Encrypt and decrypt take a read lock only long enough to clone an `Arc`
/// of the in-memory keyring and count encryptions with a relaxed atomic, so
/// they never wait on each other nor re-read storage. Keyring changes
/// (initialize, unseal, rotate, config, reload, rekey) are serialized by an
/// async mutex and swap in a new keyring when persisted.
pub struct Barrier {
    storage: Arc<dyn Storage>,
    backend: AeadBackend,
    state: RwLock<Option<Arc<Keyring>>>,
    admin: tokio::sync::Mutex<()>,
    observer: OnceLock<Arc<dyn OpObserver>>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("backend", &self.backend)
            .field("sealed", &self.is_sealed())
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl Barrier {
    /// A sealed barrier over `storage`, using the default AEAD backend
    /// (aws-lc-rs when its feature is on, RustCrypto otherwise).
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self::with_backend(storage, AeadBackend::default())
    }

    /// A sealed barrier over `storage` using `backend` for AES-GCM.
    pub fn with_backend(storage: Arc<dyn Storage>, backend: AeadBackend) -> Self {
        Self {
            storage,
            backend,
            state: RwLock::new(None),
            admin: tokio::sync::Mutex::new(()),
            observer: OnceLock::new(),
        }
    }

    /// Has `observer` told how long every data operation (get, put,
    /// delete, list, transaction) takes, successes and failures alike: the
    /// source of Vault's `vault.barrier.*` timings. The first observer set
    /// stays; returns whether this one was.
    pub fn set_observer(&self, observer: Arc<dyn OpObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    fn observed(&self, op: BarrierOp, start: Instant) {
        if let Some(observer) = self.observer.get() {
            observer.observed(op, start.elapsed());
        }
    }

    /// The AEAD backend in use.
    pub fn backend(&self) -> AeadBackend {
        self.backend
    }

    /// The storage underneath (ciphertext, plus the plain entries such as
    /// `core/seal-config` that the core keeps outside the barrier).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Whether `core/keyring` exists.
    ///
    /// # Errors
    /// [`BarrierError::Storage`] when the storage cannot be read.
    pub async fn is_initialized(&self) -> Result<bool, BarrierError> {
        Ok(self.storage.get(KEYRING_PATH).await?.is_some())
    }

    /// Creates the keyring: a fresh random term-1 key, encrypted with `root`
    /// and written to `core/keyring` (with `core/master`) in one
    /// transaction. The barrier stays sealed afterwards, as in Vault; call
    /// [`unseal`](Self::unseal) with the same root key.
    ///
    /// # Errors
    /// [`BarrierError::AlreadyInitialized`] when a keyring exists;
    /// [`BarrierError::Random`]; [`BarrierError::Storage`].
    pub async fn initialize(&self, root: &RootKey) -> Result<(), BarrierError> {
        let _admin = self.admin.lock().await;
        if self.is_initialized().await? {
            return Err(BarrierError::AlreadyInitialized);
        }
        let root_cipher = Arc::new(KeyCipher::new(
            self.backend,
            root.expose_secret(),
            "the root key",
        )?);
        let term = self.generate_term_key(KEYRING_TERM)?;
        let keyring = Keyring::new(
            Arc::new(copy_root(root)?),
            root_cipher,
            BTreeMap::from([(KEYRING_TERM, Arc::new(term))]),
            RotationConfig::default(),
        )?;
        self.persist(&keyring).await?;
        tracing::info!(backend = %self.backend, "barrier initialized: term 1 key installed");
        Ok(())
    }

    /// Opens `core/keyring` with `root` and loads every term key into
    /// memory. Unsealing an unsealed barrier with its own root key is a
    /// no-op.
    ///
    /// # Errors
    /// [`BarrierError::NotInitialized`]; [`BarrierError::InvalidRootKey`]
    /// when `root` does not open the keyring (or differs from the root key of
    /// an already unsealed barrier); [`BarrierError::CorruptKeyring`];
    /// [`BarrierError::Storage`].
    pub async fn unseal(&self, root: &RootKey) -> Result<(), BarrierError> {
        let _admin = self.admin.lock().await;
        if let Some(current) = self.current() {
            return if current.root.as_ref() == root {
                Ok(())
            } else {
                Err(BarrierError::InvalidRootKey)
            };
        }
        let (encoded, root_cipher) = self.open_keyring_with(root).await?;
        let keyring = self.build_keyring(encoded, Some(root), root_cipher, None)?;
        let active = keyring.active.term;
        self.install(Arc::new(keyring));
        tracing::info!(active_term = active, backend = %self.backend, "barrier unsealed");
        Ok(())
    }

    /// Forgets every key: the root key and all term keys are zeroized as
    /// soon as no in-flight operation holds them. Afterwards every operation
    /// returns [`BarrierError::Sealed`] until the next
    /// [`unseal`](Self::unseal).
    pub fn seal(&self) {
        let previous = self
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if previous.is_some() {
            tracing::info!("barrier sealed: keys dropped from memory");
        }
        // Dropping the last `Arc` runs the zeroizing destructors.
        drop(previous);
    }

    /// Whether the barrier holds no keys.
    pub fn is_sealed(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// Installs a new random key as term N+1, persists the keyring, and
    /// encrypts new entries with it from then on. Old terms stay so old
    /// entries stay readable. Returns the new term.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::TermExhausted`];
    /// [`BarrierError::Random`]; [`BarrierError::Storage`] (then the old key
    /// stays active).
    pub async fn rotate(&self) -> Result<u32, BarrierError> {
        let _admin = self.admin.lock().await;
        self.rotate_locked().await
    }

    async fn rotate_locked(&self) -> Result<u32, BarrierError> {
        let current = self.keyring()?;
        let old = current.active.term;
        let term = old
            .checked_add(1)
            .ok_or(BarrierError::TermExhausted { term: old })?;
        let mut terms = current.terms.clone();
        terms.insert(term, Arc::new(self.generate_term_key(term)?));
        let keyring = Keyring::new(
            current.root.clone(),
            current.root_cipher.clone(),
            terms,
            current.rotation,
        )?;
        self.persist(&keyring).await?;
        self.replace(keyring)?;
        tracing::info!(term, "barrier key rotated");
        Ok(term)
    }

    /// The active key's term, install time and encryption count.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`].
    pub async fn key_status(&self) -> Result<KeyStatus, BarrierError> {
        let keyring = self.keyring()?;
        Ok(KeyStatus {
            term: keyring.active.term,
            install_time: keyring.active.install_time,
            encryptions: keyring.active.encryptions.load(Ordering::Relaxed),
        })
    }

    /// The automatic rotation policy stored in the keyring.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`].
    pub async fn rotation_config(&self) -> Result<RotationConfig, BarrierError> {
        Ok(self.keyring()?.rotation)
    }

    /// Stores a new rotation policy, after [`RotationConfig::sanitized`]
    /// brings its values into range (as Vault does).
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::Storage`] (then the old
    /// policy stays).
    pub async fn set_rotation_config(&self, cfg: RotationConfig) -> Result<(), BarrierError> {
        let _admin = self.admin.lock().await;
        let current = self.keyring()?;
        let keyring = Keyring::new(
            current.root.clone(),
            current.root_cipher.clone(),
            current.terms.clone(),
            cfg.sanitized(),
        )?;
        self.persist(&keyring).await?;
        self.replace(keyring)
    }

    /// Re-reads `core/keyring` with the root key held in memory and adopts
    /// it: how a standby follows a rotation (or a rotation-config change)
    /// made by the active node. After a rekey on another node the keyring no
    /// longer opens with the old root key; the new root key is then read
    /// from `core/master` with the term keys already held.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::NotInitialized`];
    /// [`BarrierError::InvalidRootKey`] when neither the held root key nor
    /// `core/master` opens the keyring (unseal again);
    /// [`BarrierError::CorruptKeyring`] when a stored term key conflicts with
    /// a held one; [`BarrierError::Storage`].
    pub async fn reload_keyring(&self) -> Result<(), BarrierError> {
        let _admin = self.admin.lock().await;
        let current = self.keyring()?;
        let (encoded, root, root_cipher) = match self.read_keyring(&current.root_cipher).await? {
            Some(encoded) => (encoded, None, current.root_cipher.clone()),
            None => {
                let root = self.read_root_key(&current).await?;
                let (encoded, root_cipher) = self.open_keyring_with(&root).await?;
                (encoded, Some(root), root_cipher)
            }
        };
        let keyring = self.build_keyring(encoded, root.as_ref(), root_cipher, Some(&current))?;
        let (old, new) = (current.active.term, keyring.active.term);
        self.replace(keyring)?;
        if old != new {
            tracing::info!(old_term = old, new_term = new, "barrier keyring reloaded");
        }
        Ok(())
    }

    /// Re-encrypts the keyring under `new_root` (and rewrites
    /// `core/master`), for `rekey`. Data entries are untouched: they are
    /// encrypted with term keys, not the root key.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::InvalidKeyLength`];
    /// [`BarrierError::Storage`] (then the old root key stays valid).
    pub async fn rekey_root(&self, new_root: &RootKey) -> Result<(), BarrierError> {
        let _admin = self.admin.lock().await;
        let current = self.keyring()?;
        let root_cipher = Arc::new(KeyCipher::new(
            self.backend,
            new_root.expose_secret(),
            "the new root key",
        )?);
        let keyring = Keyring::new(
            Arc::new(copy_root(new_root)?),
            root_cipher,
            current.terms.clone(),
            current.rotation,
        )?;
        self.persist(&keyring).await?;
        self.replace(keyring)?;
        tracing::info!("barrier root key replaced (rekey)");
        Ok(())
    }

    /// Rotates when the policy says so: more encryptions than
    /// `max_operations`, the interval elapsed, or (as Vault) a key with no
    /// recorded encryptions older than a year. Otherwise persists the
    /// encryption count if it changed, so the estimate survives restarts.
    /// Meant to be called periodically (Vault: every 5 minutes) by the
    /// active node. Returns the new term when it rotated.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::Storage`];
    /// [`BarrierError::Random`].
    pub async fn check_auto_rotate(&self) -> Result<Option<u32>, BarrierError> {
        let _admin = self.admin.lock().await;
        let keyring = self.keyring()?;
        let cfg = keyring.rotation;
        if cfg.enabled {
            let active = &keyring.active;
            let ops = active.encryptions.load(Ordering::Relaxed);
            let age = OffsetDateTime::now_utc() - active.install_time;
            let reason = if ops > cfg.max_operations {
                Some("the active key reached the maximum number of encryptions")
            } else if cfg.interval.is_some_and(|i| age > i) {
                Some("the active key is older than the rotation interval")
            } else if ops == 0 && age > time::Duration::days(365) {
                Some("the active key is over a year old and has no encryption count")
            } else {
                None
            };
            if let Some(reason) = reason {
                tracing::info!(
                    term = active.term,
                    encryptions = ops,
                    reason,
                    "rotating the barrier key"
                );
                return self.rotate_locked().await.map(Some);
            }
        }
        let active = &keyring.active;
        if active.encryptions.load(Ordering::Relaxed) != active.persisted.load(Ordering::Relaxed) {
            self.persist(&keyring).await?;
        }
        Ok(None)
    }

    /// Reads and decrypts `key`; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::ReservedPath`] for the
    /// barrier's own entries; [`BarrierError::Decrypt`] and the other
    /// decrypt errors of [`decrypt`](Self::decrypt); [`BarrierError::Storage`]
    /// (including an invalid key).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BarrierError> {
        let start = Instant::now();
        let result = self.get_untimed(key).await;
        self.observed(BarrierOp::Get, start);
        result
    }

    async fn get_untimed(&self, key: &str) -> Result<Option<Vec<u8>>, BarrierError> {
        let keyring = self.keyring()?;
        self.check_reserved("get", key)?;
        let Some(ciphertext) = self.storage.get(key).await? else {
            return Ok(None);
        };
        let mut plaintext = decrypt_with(&keyring, key, &ciphertext)?;
        Ok(Some(std::mem::take(&mut *plaintext)))
    }

    /// Encrypts `value` with the active key and writes it at `key`.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::ReservedPath`] for the
    /// barrier's own entries; [`BarrierError::Storage`] (including an invalid
    /// key or a value too large).
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), BarrierError> {
        let start = Instant::now();
        let result = self.put_untimed(key, value).await;
        self.observed(BarrierOp::Put, start);
        result
    }

    async fn put_untimed(&self, key: &str, value: &[u8]) -> Result<(), BarrierError> {
        let keyring = self.keyring()?;
        validate_key(key)?;
        self.check_reserved("put", key)?;
        self.check_size("put", key, value.len())?;
        let ciphertext = encrypt_with(&keyring, key, value)?;
        self.storage.put(key, &ciphertext).await?;
        Ok(())
    }

    /// Removes `key`; a missing key is not an error.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::ReservedPath`];
    /// [`BarrierError::Storage`].
    pub async fn delete(&self, key: &str) -> Result<(), BarrierError> {
        let start = Instant::now();
        let result = self.delete_untimed(key).await;
        self.observed(BarrierOp::Delete, start);
        result
    }

    async fn delete_untimed(&self, key: &str) -> Result<(), BarrierError> {
        self.keyring()?;
        self.check_reserved("delete", key)?;
        self.storage.delete(key).await?;
        Ok(())
    }

    /// Lists the immediate children of `prefix` (names are not encrypted,
    /// as in Vault). The barrier's own entries (`core/keyring`,
    /// `core/master`) are left out, and so is a `core/` folder that holds
    /// nothing else: the view shows exactly what was written through it.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::Storage`].
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        let start = Instant::now();
        let result = self.list_untimed(prefix).await;
        self.observed(BarrierOp::List, start);
        result
    }

    async fn list_untimed(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        self.keyring()?;
        let mut names = self.storage.list(prefix).await?;
        let mut folder_has_others = None;
        for reserved in RESERVED_PATHS {
            let Some(rest) = reserved.strip_prefix(prefix) else {
                continue;
            };
            match rest.find('/') {
                _ if rest.is_empty() => {}
                None => names.retain(|n| n != rest),
                Some(slash) => {
                    let child = &rest[..=slash];
                    let others = match folder_has_others {
                        Some(others) => others,
                        None => {
                            let others =
                                self.folder_has_others(&format!("{prefix}{child}")).await?;
                            folder_has_others = Some(others);
                            others
                        }
                    };
                    if !others {
                        names.retain(|n| n != child);
                    }
                }
            }
        }
        Ok(names)
    }

    /// Whether `folder` (the folder holding the reserved entries) contains
    /// anything besides them.
    async fn folder_has_others(&self, folder: &str) -> Result<bool, BarrierError> {
        let children = self.storage.list(folder).await?;
        Ok(children.iter().any(|child| {
            !RESERVED_PATHS
                .iter()
                .any(|r| r.strip_prefix(folder) == Some(child.as_str()))
        }))
    }

    /// Encrypts every put and applies `ops` atomically.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::ReservedPath`];
    /// [`BarrierError::Storage`]. On error nothing is written.
    pub async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), BarrierError> {
        let start = Instant::now();
        let result = self.transaction_untimed(ops).await;
        self.observed(BarrierOp::Transaction, start);
        result
    }

    async fn transaction_untimed(&self, ops: Vec<TxnOp>) -> Result<(), BarrierError> {
        let keyring = self.keyring()?;
        for op in &ops {
            validate_key(op.key())?;
            self.check_reserved("transaction", op.key())?;
            if let TxnOp::Put { key, value } = op {
                self.check_size("transaction", key, value.len())?;
            }
        }
        let mut encrypted = Vec::with_capacity(ops.len());
        for op in ops {
            encrypted.push(match op {
                TxnOp::Put { key, value } => {
                    let value = Zeroizing::new(value);
                    let ciphertext = encrypt_with(&keyring, &key, &value)?;
                    TxnOp::Put {
                        key,
                        value: ciphertext,
                    }
                }
                delete @ TxnOp::Delete { .. } => delete,
            });
        }
        self.storage.transaction(encrypted).await?;
        Ok(())
    }

    /// Encrypts `plaintext` for storage at `path` with the active term key.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::Random`] if no nonce could
    /// be drawn.
    pub fn encrypt(&self, path: &str, plaintext: &[u8]) -> Result<Vec<u8>, BarrierError> {
        encrypt_with(&*self.keyring()?, path, plaintext)
    }

    /// Decrypts a barrier entry that was stored at `path`. Safe on arbitrary
    /// input: it never panics.
    ///
    /// # Errors
    /// [`BarrierError::Sealed`]; [`BarrierError::TooShort`];
    /// [`BarrierError::UnknownVersion`]; [`BarrierError::UnknownTerm`]
    /// naming the term; [`BarrierError::Decrypt`] for every authentication
    /// failure (tampered bytes, another path, another key).
    pub fn decrypt(
        &self,
        path: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
        decrypt_with(&*self.keyring()?, path, ciphertext)
    }

    // ---- internals -------------------------------------------------------

    fn check_reserved(&self, op: &'static str, key: &str) -> Result<(), BarrierError> {
        if RESERVED_PATHS.contains(&key) {
            return Err(BarrierError::ReservedPath {
                op,
                path: key.to_owned(),
            });
        }
        Ok(())
    }

    fn current(&self) -> Option<Arc<Keyring>> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn keyring(&self) -> Result<Arc<Keyring>, BarrierError> {
        self.current().ok_or(BarrierError::Sealed)
    }

    fn install(&self, keyring: Arc<Keyring>) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Some(keyring);
    }

    /// Swaps in `keyring` unless the barrier was sealed meanwhile: a seal
    /// always wins over a concurrent keyring change.
    fn replace(&self, keyring: Keyring) -> Result<(), BarrierError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.is_none() {
            return Err(BarrierError::Sealed);
        }
        *state = Some(Arc::new(keyring));
        Ok(())
    }

    fn check_size(&self, op: &'static str, key: &str, size: usize) -> Result<(), BarrierError> {
        if let Some(limit) = self.limits_for_plaintext().max_value_size
            && size > limit
        {
            return Err(StorageError::ValueTooLarge {
                op,
                key: key.to_owned(),
                size,
                limit,
            }
            .into());
        }
        Ok(())
    }

    fn limits_for_plaintext(&self) -> StorageLimits {
        let inner = self.storage.limits();
        StorageLimits {
            max_value_size: inner.max_value_size.map(|n| n.saturating_sub(OVERHEAD)),
            ..inner
        }
    }

    fn generate_term_key(&self, term: u32) -> Result<TermKey, BarrierError> {
        let value = seal_core::random_bytes(TERM_KEY_LEN)?;
        TermKey::new(self.backend, term, value, OffsetDateTime::now_utc(), 0)
    }

    /// Reads `core/keyring` and opens it with `root`; a keyring that does
    /// not open is [`BarrierError::InvalidRootKey`].
    async fn open_keyring_with(
        &self,
        root: &RootKey,
    ) -> Result<(EncodedKeyring, Arc<KeyCipher>), BarrierError> {
        let root_cipher = Arc::new(KeyCipher::new(
            self.backend,
            root.expose_secret(),
            "the root key",
        )?);
        let encoded = self
            .read_keyring(&root_cipher)
            .await?
            .ok_or(BarrierError::InvalidRootKey)?;
        Ok((encoded, root_cipher))
    }

    /// Reads `core/keyring` and opens it with `root_cipher`. `Ok(None)` when
    /// the root key does not authenticate it.
    async fn read_keyring(
        &self,
        root_cipher: &KeyCipher,
    ) -> Result<Option<EncodedKeyring>, BarrierError> {
        let stored = self
            .storage
            .get(KEYRING_PATH)
            .await?
            .ok_or(BarrierError::NotInitialized)?;
        let parsed = parse(&stored).map_err(|e| BarrierError::CorruptKeyring {
            reason: e.to_string(),
        })?;
        if parsed.term != KEYRING_TERM {
            return Err(BarrierError::CorruptKeyring {
                reason: format!(
                    "it is stored under term {} but the keyring is always term 1",
                    parsed.term
                ),
            });
        }
        let json = match root_cipher.open(KEYRING_PATH.as_bytes(), &parsed) {
            Ok(json) => json,
            Err(BarrierError::Decrypt) => return Ok(None),
            Err(other) => return Err(other),
        };
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|e| BarrierError::CorruptKeyring {
                reason: format!("its JSON does not parse ({})", json_error(&e)),
            })
    }

    /// Opens `core/master` with the term keys of `keyring`.
    async fn read_root_key(&self, keyring: &Keyring) -> Result<RootKey, BarrierError> {
        let stored = self
            .storage
            .get(ROOT_KEY_PATH)
            .await?
            .ok_or(BarrierError::InvalidRootKey)?;
        let json = match decrypt_with(keyring, ROOT_KEY_PATH, &stored) {
            Ok(json) => json,
            Err(BarrierError::UnknownTerm { .. } | BarrierError::Decrypt) => {
                return Err(BarrierError::InvalidRootKey);
            }
            Err(other) => return Err(other),
        };
        let entry: RootKeyEntry =
            serde_json::from_slice(&json).map_err(|e| BarrierError::CorruptKeyring {
                reason: format!("core/master does not parse ({})", json_error(&e)),
            })?;
        RootKey::from_bytes(&entry.value.0).map_err(|_| BarrierError::CorruptKeyring {
            reason: "core/master holds a root key of an invalid length".to_owned(),
        })
    }

    /// Turns a decoded keyring into the in-memory one. `expected_root` is
    /// checked against the stored root key when given; `previous` lends its
    /// term keys (and their live counters) to terms that did not change.
    fn build_keyring(
        &self,
        encoded: EncodedKeyring,
        expected_root: Option<&RootKey>,
        root_cipher: Arc<KeyCipher>,
        previous: Option<&Keyring>,
    ) -> Result<Keyring, BarrierError> {
        let stored_root =
            RootKey::from_bytes(&encoded.root_key.0).map_err(|_| BarrierError::CorruptKeyring {
                reason: format!(
                    "its root key is {} bytes, not 16 or 32",
                    encoded.root_key.0.len()
                ),
            })?;
        let root = match (expected_root, previous) {
            (Some(expected), _) => {
                if *expected != stored_root {
                    return Err(BarrierError::CorruptKeyring {
                        reason: "the root key inside it differs from the key that encrypts it"
                            .to_owned(),
                    });
                }
                Arc::new(stored_root)
            }
            (None, Some(prev)) => {
                if *prev.root != stored_root {
                    return Err(BarrierError::CorruptKeyring {
                        reason: "the root key inside it differs from the key that encrypts it"
                            .to_owned(),
                    });
                }
                prev.root.clone()
            }
            (None, None) => Arc::new(stored_root),
        };
        let mut terms = BTreeMap::new();
        for key in encoded.keys {
            if terms.contains_key(&key.term) {
                return Err(BarrierError::CorruptKeyring {
                    reason: format!("term {} appears twice", key.term),
                });
            }
            let held = previous.and_then(|p| p.terms.get(&key.term));
            let entry = match held {
                Some(held) => {
                    if !constant_time_eq(held.value(), &key.value.0) {
                        return Err(BarrierError::CorruptKeyring {
                            reason: format!(
                                "conflicting key for term {} already installed",
                                key.term
                            ),
                        });
                    }
                    held.encryptions
                        .fetch_max(key.encryptions, Ordering::Relaxed);
                    held.clone()
                }
                None => Arc::new(TermKey::new(
                    self.backend,
                    key.term,
                    key.value.0,
                    key.install_time,
                    key.encryptions,
                )?),
            };
            terms.insert(key.term, entry);
        }
        Keyring::new(
            root,
            root_cipher,
            terms,
            RotationConfig::from(&encoded.rotation_config),
        )
    }

    /// Writes `core/keyring` (term 1, root key) and `core/master` (active
    /// term) in one transaction, then records the persisted count.
    async fn persist(&self, keyring: &Keyring) -> Result<(), BarrierError> {
        // core/master first: its encryption is counted, and the count
        // written into the keyring below should include it.
        let root_json = to_zeroizing_json(&RootKeyEntryRef::new(
            &keyring.root,
            OffsetDateTime::now_utc(),
        ))?;
        let sealed_root = encrypt_with(keyring, ROOT_KEY_PATH, &root_json)?;
        let count = keyring.active.encryptions.load(Ordering::Relaxed);
        let json = keyring.to_json()?;
        let sealed_keyring =
            keyring
                .root_cipher
                .seal(KEYRING_TERM, KEYRING_PATH.as_bytes(), &json)?;
        self.storage
            .transaction(vec![
                TxnOp::put(KEYRING_PATH, sealed_keyring),
                TxnOp::put(ROOT_KEY_PATH, sealed_root),
            ])
            .await?;
        keyring.active.persisted.store(count, Ordering::Relaxed);
        Ok(())
    }
}

/// The encrypted view as a plain [`Storage`]: barrier errors other than
/// storage ones become [`StorageError::Backend`] with the [`BarrierError`] as
/// source (so a sealed barrier answers `Backend { source: Sealed }`).
#[async_trait]
impl Storage for Barrier {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Barrier::get(self, key)
            .await
            .map_err(|e| to_storage("get", key, e))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        Barrier::put(self, key, value)
            .await
            .map_err(|e| to_storage("put", key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        Barrier::delete(self, key)
            .await
            .map_err(|e| to_storage("delete", key, e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        Barrier::list(self, prefix)
            .await
            .map_err(|e| to_storage("list", prefix, e))
    }

    async fn transaction(&self, ops: Vec<TxnOp>) -> Result<(), StorageError> {
        let first = ops
            .first()
            .map(|op| op.key().to_owned())
            .unwrap_or_default();
        Barrier::transaction(self, ops)
            .await
            .map_err(|e| to_storage("transaction", &first, e))
    }

    fn limits(&self) -> StorageLimits {
        self.limits_for_plaintext()
    }
}

fn to_storage(op: &'static str, key: &str, err: BarrierError) -> StorageError {
    match err {
        BarrierError::Storage(inner) => inner,
        other => StorageError::backend(op, key, other),
    }
}

fn encrypt_with(keyring: &Keyring, path: &str, plaintext: &[u8]) -> Result<Vec<u8>, BarrierError> {
    let active = &keyring.active;
    let out = active
        .cipher
        .seal(active.term, path.as_bytes(), plaintext)?;
    active.encryptions.fetch_add(1, Ordering::Relaxed);
    Ok(out)
}

fn decrypt_with(
    keyring: &Keyring,
    path: &str,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
    let parsed = parse(ciphertext)?;
    let key = keyring
        .terms
        .get(&parsed.term)
        .ok_or(BarrierError::UnknownTerm { term: parsed.term })?;
    key.cipher.open(path.as_bytes(), &parsed)
}

fn copy_root(root: &RootKey) -> Result<RootKey, BarrierError> {
    Ok(RootKey::from_bytes(root.expose_secret())?)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Describes a JSON error by kind and position only: serde_json's messages
/// can quote the input, which here is key material.
fn json_error(err: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {}, column {}",
        err.classify(),
        err.line(),
        err.column()
    )
}
