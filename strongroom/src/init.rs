//! `init`: creating the keys of a new store.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use seal_core::{Kek, RecoveryKey, RootKey, SealType, TxnOp, UnsealShare};
use zeroize::Zeroizing;

use crate::config::{
    CLUSTER_INFO_PATH, ClusterInfo, RECOVERY_CONFIG_PATH, RECOVERY_KEY_PATH, SEAL_CONFIG_PATH,
    STORED_KEYS_PATH, SealConfig,
};
use crate::core::SealKind;
use crate::logical::Logical;
use crate::types::{InitParams, InitResult};
use crate::unseal::encode_stored_keys;
use crate::{Core, CoreError};

/// Checks the init parameters against the seal type, with Vault's messages.
/// Returns the (shares, threshold) pair that applies.
pub(crate) fn validate_init(
    seal_type: SealType,
    params: &InitParams,
) -> Result<(usize, usize), CoreError> {
    let pgp_given = |keys: &Option<Vec<String>>| keys.as_ref().is_some_and(|k| !k.is_empty());
    let mut barrier_flags = Vec::new();
    if params.secret_shares > 0 {
        barrier_flags.push("secret_shares");
    }
    if params.secret_threshold > 0 {
        barrier_flags.push("secret_threshold");
    }
    if pgp_given(&params.pgp_keys) {
        barrier_flags.push("pgp_keys");
    }
    let mut recovery_flags = Vec::new();
    if params.recovery_shares > 0 {
        recovery_flags.push("recovery_shares");
    }
    if params.recovery_threshold > 0 {
        recovery_flags.push("recovery_threshold");
    }
    if pgp_given(&params.recovery_pgp_keys) {
        recovery_flags.push("recovery_pgp_keys");
    }
    let not_applicable = |flags: &[&str]| {
        CoreError::InvalidRequest(format!(
            "parameters {} not applicable to seal type {}",
            flags.join(","),
            seal_type.as_str()
        ))
    };
    let (shares, threshold, what) = if seal_type.is_auto() {
        if !barrier_flags.is_empty() {
            return Err(not_applicable(&barrier_flags));
        }
        if pgp_given(&params.recovery_pgp_keys) {
            return Err(pgp_unsupported("recovery_pgp_keys"));
        }
        (
            params.recovery_shares,
            params.recovery_threshold,
            "invalid recovery configuration",
        )
    } else {
        if !recovery_flags.is_empty() {
            return Err(not_applicable(&recovery_flags));
        }
        if pgp_given(&params.pgp_keys) {
            return Err(pgp_unsupported("pgp_keys"));
        }
        (
            params.secret_shares,
            params.secret_threshold,
            "invalid seal configuration",
        )
    };
    if params
        .root_token_pgp_key
        .as_ref()
        .is_some_and(|k| !k.is_empty())
    {
        return Err(pgp_unsupported("root_token_pgp_key"));
    }
    if params.stored_shares > 1 {
        return Err(CoreError::InvalidRequest(format!(
            "{what}: stored_shares must be 0 or 1: the root key is always stored wrapped by the \
             seal, and key shares are never stored"
        )));
    }
    seal_shamir::validate_config(shares, threshold)
        .map_err(|e| CoreError::InvalidRequest(format!("{what}: {e}")))?;
    if let Some(id) = &params.root_token_id
        && (id.is_empty() || id.len() > 256 || id.chars().any(char::is_whitespace))
    {
        return Err(CoreError::InvalidRequest(
            "root_token_id must be 1 to 256 characters without whitespace".into(),
        ));
    }
    Ok((shares, threshold))
}

fn pgp_unsupported(field: &str) -> CoreError {
    CoreError::InvalidRequest(format!(
        "{field} is not supported: strongroom does not PGP-encrypt keys or tokens; omit \
         {field} and distribute the keys over a secure channel"
    ))
}

/// Splits `secret` into `shares` shares (the raw secret when there is one).
pub(crate) fn make_shares(
    secret: &[u8],
    shares: usize,
    threshold: usize,
) -> Result<Vec<UnsealShare>, CoreError> {
    if shares == 1 {
        return Ok(vec![UnsealShare::from_bytes(secret)?]);
    }
    seal_shamir::split(secret, shares, threshold).map_err(|e| match e {
        seal_shamir::ShamirError::Random(msg) => CoreError::Random(msg),
        other => CoreError::InvalidRequest(other.to_string()),
    })
}

/// Hex and base64 renderings of shares, for the response only.
pub(crate) fn render_shares(shares: &[UnsealShare]) -> (Vec<String>, Vec<String>) {
    shares
        .iter()
        .map(|s| {
            (
                hex::encode(s.expose_secret()),
                B64.encode(s.expose_secret()),
            )
        })
        .unzip()
}

impl Core {
    /// Initializes a new store (`sys/init`): creates the root key and the
    /// barrier keyring, protects the root key with the seal, and returns the
    /// keys and the root token — the only time they are shown.
    ///
    /// * Shamir: a key-encryption key (KEK) is split into `secret_shares`
    ///   shares (the raw KEK when there is one); the node stays sealed.
    /// * Auto seal: a recovery key is split into `recovery_shares` shares
    ///   and stored wrapped by the seal; the node unseals itself.
    ///
    /// The wrapped keys and `core/seal-config` are written last, in one
    /// transaction, so an interrupted init leaves the store uninitialized.
    ///
    /// # Errors
    /// [`CoreError::AlreadyInitialized`]; [`CoreError::InvalidRequest`] for
    /// parameters that do not fit the seal type or Vault's limits (Vault's
    /// messages); [`CoreError::Seal`] when the seal cannot wrap the keys;
    /// storage and barrier errors.
    pub async fn init(&self, params: InitParams) -> Result<InitResult, CoreError> {
        let (shares, threshold) = validate_init(self.inner.seal.seal_type(), &params)?;
        let _op = self.inner.op_lock.lock().await;
        if self.is_initialized().await? {
            return Err(CoreError::AlreadyInitialized);
        }
        if self.inner.barrier.is_initialized().await? {
            return Err(CoreError::Config(
                "the storage holds a barrier keyring (core/keyring) but no core/seal-config: an \
                 earlier init was interrupted; wipe this storage (or point the node at an empty \
                 path) and run init again"
                    .into(),
            ));
        }
        let seal_type = self.inner.seal.seal_type();
        let root = RootKey::generate()?;
        let stored_keys = encode_stored_keys(&root);
        let seal = self.inner.seal.seal();
        let mut result = InitResult {
            keys: Vec::new(),
            keys_base64: Vec::new(),
            recovery_keys: Vec::new(),
            recovery_keys_base64: Vec::new(),
            root_token: String::new(),
        };
        let mut plain_writes = Vec::new();
        let cluster = self.new_cluster_info()?;
        let mut recovery_key = None;
        match &self.inner.seal {
            SealKind::Shamir(shamir) => {
                let kek = Kek::generate()?;
                let key_shares = make_shares(kek.expose_secret(), shares, threshold)?;
                (result.keys, result.keys_base64) = render_shares(&key_shares);
                shamir.set_kek(kek);
            }
            SealKind::Auto(_) => {
                let recovery = RecoveryKey::generate()?;
                let key_shares = make_shares(recovery.expose_secret(), shares, threshold)?;
                let blob = seal
                    .encrypt(recovery.expose_secret(), RECOVERY_KEY_PATH.as_bytes())
                    .await
                    .map_err(|e| {
                        CoreError::seal("wrapping the recovery key with the seal failed", e)
                    })?;
                (result.recovery_keys, result.recovery_keys_base64) = render_shares(&key_shares);
                plain_writes.push(TxnOp::put(RECOVERY_KEY_PATH, blob));
                recovery_key = Some(recovery);
                plain_writes.push(TxnOp::put(
                    RECOVERY_CONFIG_PATH,
                    SealConfig::new(SealType::Shamir.as_str(), shares, threshold).to_json()?,
                ));
            }
        }
        let wrapped = match &self.inner.seal {
            SealKind::Auto(set) => {
                self.wrap_root_for_store(
                    set,
                    &stored_keys,
                    recovery_key.as_ref().map(RecoveryKey::expose_secret),
                )
                .await
            }
            SealKind::Shamir(_) => seal
                .encrypt(&stored_keys, STORED_KEYS_PATH.as_bytes())
                .await
                .map_err(|e| CoreError::seal("wrapping the root key with the seal failed", e)),
        };
        drop(recovery_key);
        let wrapped = match wrapped {
            Ok(w) => w,
            Err(e) => {
                self.forget_init_keys();
                return Err(e);
            }
        };
        plain_writes.push(TxnOp::put(STORED_KEYS_PATH, wrapped));
        let outcome = self
            .init_barrier(&root, &cluster, params.root_token_id.as_deref())
            .await;
        let root_token = match outcome {
            Ok(token) => token,
            Err(e) => {
                self.seal_barrier_locked();
                return Err(e);
            }
        };
        result.root_token = root_token.to_string();
        let barrier_config = if seal_type.is_auto() {
            SealConfig::new(seal_type.as_str(), 1, 1)
        } else {
            SealConfig::new(seal_type.as_str(), shares, threshold)
        };
        // One transaction: the wrapped keys, the configs, and seal-config,
        // which marks the store initialized. Before it commits, a crash
        // leaves an interrupted init (refused with advice), never a store
        // that looks initialized without its keys.
        // The cluster identity is a barrier entry; encrypting it here lets it
        // ride in the final transaction instead of costing a commit.
        let cluster_entry = serde_json::to_vec(&cluster)
            .map_err(|e| CoreError::Config(format!("serializing cluster info: {e}")))
            .and_then(|raw| Ok(self.inner.barrier.encrypt(CLUSTER_INFO_PATH, &raw)?));
        match cluster_entry {
            Ok(ct) => plain_writes.push(TxnOp::put(CLUSTER_INFO_PATH, ct)),
            Err(e) => {
                self.seal_barrier_locked();
                return Err(e);
            }
        }
        plain_writes.push(TxnOp::put(SEAL_CONFIG_PATH, barrier_config.to_json()?));
        if let Err(e) = self.inner.physical.transaction(plain_writes).await {
            self.seal_barrier_locked();
            return Err(e.into());
        }
        self.inner
            .initialized
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if seal_type.is_auto() {
            self.contend();
        } else {
            // Shamir nodes stay sealed after init, as Vault: operators
            // unseal with the shares they were just given.
            self.seal_barrier_locked();
        }
        tracing::info!(
            seal_type = %seal_type,
            shares,
            threshold,
            "vault initialized"
        );
        Ok(result)
    }

    fn forget_init_keys(&self) {
        if let SealKind::Shamir(shamir) = &self.inner.seal {
            shamir.clear_kek();
        }
    }

    /// Creates the keyring, opens the barrier and creates the root token.
    /// Called with `op_lock` held.
    async fn init_barrier(
        &self,
        root: &RootKey,
        cluster: &ClusterInfo,
        root_token_id: Option<&str>,
    ) -> Result<Zeroizing<String>, CoreError> {
        self.inner.barrier.initialize(root).await?;
        // Auto seals stay unsealed; a Shamir init seals again afterwards.
        self.unseal_barrier(root, self.inner.seal.is_auto(), Some(cluster.clone()))
            .await?;
        // With HA no node serves yet (none contends before init is done);
        // the token store is written through a logical layer of its own,
        // which the first active node then loads from storage.
        let logical = match self.logical() {
            Ok(logical) => logical,
            Err(_) => Arc::new(Logical::new(self.inner.barrier.clone()).await?),
        };
        let token = logical.create_root_token(root_token_id).await?;
        Ok(Zeroizing::new(token))
    }
}
