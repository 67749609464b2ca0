//! [`AwsKmsSeal`]: envelope encryption with a KMS-wrapped data key.

use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::web_identity_token::{StaticConfiguration, WebIdentityTokenCredentialsProvider};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_kms::config::Region;
use aws_smithy_types::Blob;
use seal_core::{Seal, SealError, SealType};
use zeroize::Zeroizing;

use crate::error::{CallContext, KmsOp, classify};
use crate::format::{self, NONCE_LEN};
use crate::{AwsKmsConfig, AwsKmsError};

/// Length of the per-blob data key (AES-256).
const DATA_KEY_LEN: usize = 32;
/// First backoff of a retried transient failure; doubles (with jitter) up
/// to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest single backoff between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// What [`AwsKmsSeal::current_key_arn`] encrypts to learn the key's ARN.
const PROBE: &[u8] = b"strongroom awskms key probe";

/// The AWS KMS auto-unseal seal.
///
/// Each [`Seal::encrypt`] draws a fresh 32-byte data key and 12-byte nonce,
/// AES-256-GCM-encrypts the payload with the caller's `aad`, and wraps the
/// data key with KMS `Encrypt` under the configured key. The blob records
/// the key ARN KMS reports, the wrapped key, the nonce and the ciphertext
/// (see the crate docs for the layout). [`Seal::decrypt`] calls KMS
/// `Decrypt` **without** a key id, so blobs written under an earlier key
/// still open after `kms_key_id` changes; [`AwsKmsSeal::rewrap`] then moves
/// them to the configured key.
///
/// Building the seal makes no KMS call: a KMS that is down at start does not
/// stop the process; the first call reports the failure, classified
/// ([`SealError::Unreachable`], [`SealError::AccessDenied`],
/// [`SealError::KeyDisabled`], [`SealError::KeyNotFound`],
/// [`SealError::Throttled`], [`SealError::Decrypt`]) and worded with the key
/// and region, and the caller retries. Every call is bounded by the
/// configured timeouts; transient failures are retried with exponential
/// backoff and jitter, others are not.
///
/// Data keys live in [`Zeroizing`] buffers. The AWS SDK keeps its own
/// transient copies of the request and response bodies, which this crate
/// cannot wipe.
pub struct AwsKmsSeal {
    client: aws_sdk_kms::Client,
    key_id: String,
    region: String,
    endpoint: Option<String>,
    operation_timeout: Duration,
    max_attempts: u32,
    /// The key ARN KMS reported on the latest Encrypt.
    last_key_arn: RwLock<Option<String>>,
}

impl fmt::Debug for AwsKmsSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsSeal")
            .field("key_id", &self.key_id)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsKmsSeal {
    /// KMS `Decrypt` of a wrapped data key. No KeyId is sent: KMS finds the
    /// key from the wrapped key itself, so blobs from an earlier
    /// `kms_key_id` still open.
    async fn unwrap_data_key(
        &self,
        wrapped_key: &[u8],
        recorded_key: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped_key))
            .send()
            .await
            .map_err(|e| {
                let err = classify(&e, &self.context(KmsOp::Decrypt, recorded_key));
                if matches!(err, SealError::Decrypt) {
                    tracing::debug!(
                        recorded_key = %recorded_key,
                        region = %self.region,
                        "KMS Decrypt refused the wrapped data key as invalid ciphertext"
                    );
                }
                err
            })?;
        Ok(Zeroizing::new(
            out.plaintext
                .map(Blob::into_inner)
                .ok_or_else(|| self.missing_field(KmsOp::Decrypt, "Plaintext"))?,
        ))
    }

    /// Opens a Vault `EncryptedBlobInfo` (see [`AwsKmsSeal::decrypt`]).
    async fn decrypt_vault_blob(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let parsed = seal_core::vault_blob::parse(blob)?;
        if parsed.mechanism != 1 {
            return Err(SealError::Malformed(
                "Vault awskms blob without envelope encryption (mechanism is not 1); Strongroom \
                 reads only the envelope blobs Vault's awskms seal writes",
            ));
        }
        if parsed.iv.len() != format::NONCE_LEN || parsed.ciphertext.len() < format::TAG_LEN {
            return Err(SealError::Malformed(
                "Vault awskms blob with a nonce that is not 12 bytes or a short ciphertext",
            ));
        }
        let data_key = self
            .unwrap_data_key(&parsed.wrapped_key, &parsed.key_id)
            .await?;
        let mut buffer = Zeroizing::new(Vec::with_capacity(parsed.ciphertext.len()));
        buffer.extend_from_slice(&parsed.ciphertext);
        cipher(&data_key)?
            .decrypt_in_place(Nonce::from_slice(&parsed.iv), b"", &mut *buffer)
            .map_err(|_| SealError::Decrypt)?;
        Ok(buffer)
    }

    /// Builds the seal from its configuration without contacting KMS.
    ///
    /// Credentials: static `access_key`/`secret_key`(/`session_token`) when
    /// given; `role_arn` with `web_identity_token_file` for web identity
    /// (IRSA); `role_arn` alone assumes the role through STS from the
    /// default credentials; otherwise the AWS default chain (environment,
    /// shared file and profile — `shared_creds_filename`,
    /// `shared_creds_profile` —, web identity from the environment,
    /// container and instance roles). All are resolved lazily, on the first
    /// KMS call.
    ///
    /// # Errors
    /// [`AwsKmsError::Config`] when the configuration is inconsistent or no
    /// key id is configured (neither `kms_key_id` nor the environment).
    pub async fn new(config: AwsKmsConfig) -> Result<Self, AwsKmsError> {
        config.validate()?;
        let key_id = config.kms_key_id.clone().ok_or_else(|| {
            AwsKmsError::Config(
                "no KMS key configured: set kms_key_id in the seal \"awskms\" stanza \
                 or the VAULT_AWSKMS_SEAL_KEY_ID environment variable"
                    .into(),
            )
        })?;
        let region = config.effective_region().to_owned();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.connect_timeout)
            .operation_attempt_timeout(config.attempt_timeout)
            .operation_timeout(config.operation_timeout)
            .build();
        let retry = RetryConfig::standard()
            .with_max_attempts(config.max_attempts)
            .with_initial_backoff(INITIAL_BACKOFF)
            .with_max_backoff(MAX_BACKOFF);

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .timeout_config(timeouts.clone())
            .retry_config(retry.clone());
        if let Some(profile) = &config.shared_creds_profile {
            loader = loader.profile_name(profile);
        }
        if let Some(file) = &config.shared_creds_filename {
            loader = loader.profile_files(
                EnvConfigFiles::builder()
                    .include_default_config_file(true)
                    .with_file(EnvConfigFileKind::Credentials, file)
                    .build(),
            );
        }
        if let (Some(access_key), Some(secret_key)) = (&config.access_key, &config.secret_key) {
            loader = loader.credentials_provider(Credentials::new(
                access_key.clone(),
                secret_key.expose_secret().to_owned(),
                config
                    .session_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
                None,
                "strongroom-seal-awskms-config",
            ));
        }
        let base = loader.load().await;

        let role_provider: Option<SharedCredentialsProvider> =
            match (&config.role_arn, &config.web_identity_token_file) {
                (Some(role_arn), Some(token_file)) => {
                    let provider_config = aws_config::provider_config::ProviderConfig::default()
                        .with_region(Some(Region::new(region.clone())));
                    Some(SharedCredentialsProvider::new(
                        WebIdentityTokenCredentialsProvider::builder()
                            .configure(&provider_config)
                            .static_configuration(StaticConfiguration {
                                web_identity_token_file: token_file.clone(),
                                role_arn: role_arn.clone(),
                                session_name: session_name(&config),
                            })
                            .build(),
                    ))
                }
                (Some(role_arn), None) => {
                    let builder = AssumeRoleProvider::builder(role_arn.clone())
                        .session_name(session_name(&config))
                        .region(Region::new(region.clone()))
                        .configure(&base);
                    let provider = match base.credentials_provider() {
                        Some(source) => builder.build_from_provider(source).await,
                        None => builder.build().await,
                    };
                    Some(SharedCredentialsProvider::new(provider))
                }
                // validate() refuses a token file without a role.
                (None, _) => None,
            };

        let mut kms = aws_sdk_kms::config::Builder::from(&base)
            .timeout_config(timeouts)
            .retry_config(retry);
        if let Some(provider) = role_provider {
            kms = kms.credentials_provider(provider);
        }
        if let Some(endpoint) = &config.endpoint {
            kms = kms.endpoint_url(endpoint.clone());
        }
        Ok(Self {
            client: aws_sdk_kms::Client::from_conf(kms.build()),
            key_id,
            region,
            endpoint: config.endpoint.clone(),
            operation_timeout: config.operation_timeout,
            max_attempts: config.max_attempts,
            last_key_arn: RwLock::new(None),
        })
    }

    /// The key as configured (id, ARN, alias name or alias ARN).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The AWS region the seal talks to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The endpoint override, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The key ARN KMS reported on this seal's latest successful Encrypt,
    /// without contacting KMS (`None` before the first one).
    pub fn last_key_arn(&self) -> Option<String> {
        self.last_key_arn
            .read()
            .map(|guard| guard.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// The key id (ARN) recorded in a blob of this seal: the key its data
    /// key was wrapped under. No KMS call.
    ///
    /// # Errors
    /// [`SealError::Malformed`] / [`SealError::WrongSealType`] when the bytes
    /// are not an awskms blob.
    pub fn blob_key_id(blob: &[u8]) -> Result<String, SealError> {
        Ok(format::parse(blob)?.key_id.to_owned())
    }

    /// Asks KMS for the ARN of the configured key by encrypting a probe
    /// value (needs only `kms:Encrypt`, which the seal needs anyway). Follows
    /// an alias to its current target.
    ///
    /// # Errors
    /// The classified KMS failure.
    pub async fn current_key_arn(&self) -> Result<String, SealError> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(PROBE))
            .send()
            .await
            .map_err(|e| classify(&e, &self.context(KmsOp::Encrypt, &self.key_id)))?;
        let arn = out
            .key_id
            .ok_or_else(|| self.missing_field(KmsOp::Encrypt, "KeyId"))?;
        self.remember_arn(&arn);
        Ok(arn)
    }

    /// Re-encrypts `blob` under the configured key when the key recorded in
    /// it differs from the configured key's current ARN (after `kms_key_id`
    /// was changed). `Ok(None)` means the blob is already under the
    /// configured key and should be kept (it is not opened then, so this
    /// costs one KMS call); `Ok(Some(new))` is the blob to
    /// store instead. Used by the core after unseal on
    /// `core/hsm/barrier-unseal-keys` and `core/recovery-key`, as Vault's
    /// `UpgradeKeys` does.
    ///
    /// # Errors
    /// [`SealError::Malformed`] / [`SealError::WrongSealType`] for bytes
    /// that are not an awskms blob, [`SealError::Decrypt`] when the blob does
    /// not open with `aad`, and the classified KMS failures.
    pub async fn rewrap(&self, blob: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, SealError> {
        let recorded = if seal_core::vault_blob::is_vault_blob(blob) {
            // A blob Vault wrote: always rewritten in this seal's format,
            // which binds it to `aad`.
            String::new()
        } else {
            format::parse(blob)?.key_id.to_owned()
        };
        let current = self.current_key_arn().await?;
        if recorded == current {
            return Ok(None);
        }
        let plaintext = self.decrypt(blob, aad).await?;
        let rewrapped = self.encrypt(&plaintext, aad).await?;
        tracing::info!(
            from_key = %recorded,
            to_key = %current,
            region = %self.region,
            "re-wrapped a seal blob under the configured KMS key"
        );
        Ok(Some(rewrapped))
    }

    fn context<'a>(&'a self, op: KmsOp, key_id: &'a str) -> CallContext<'a> {
        CallContext {
            op,
            key_id,
            region: &self.region,
            endpoint: self.endpoint.as_deref(),
            operation_timeout: self.operation_timeout,
            max_attempts: self.max_attempts,
        }
    }

    fn missing_field(&self, op: KmsOp, field: &str) -> SealError {
        SealError::Backend(format!(
            "KMS {op} answered without {field} (key {}, region {}); is the endpoint a KMS endpoint?",
            self.key_id, self.region
        ))
    }

    fn remember_arn(&self, arn: &str) {
        let mut guard = self
            .last_key_arn
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.as_deref() != Some(arn) {
            *guard = Some(arn.to_owned());
        }
    }
}

fn session_name(config: &AwsKmsConfig) -> String {
    config
        .role_session_name
        .clone()
        .unwrap_or_else(|| "strongroom-seal-awskms".to_owned())
}

fn random(len: usize) -> Result<Zeroizing<Vec<u8>>, SealError> {
    seal_core::random_bytes(len).map_err(|e| SealError::Backend(e.to_string()))
}

fn cipher(data_key: &[u8]) -> Result<Aes256Gcm, SealError> {
    // A KMS that returns a data key of another length did not unwrap one of
    // our keys: treat it as the opaque decrypt failure.
    Aes256Gcm::new_from_slice(data_key).map_err(|_| SealError::Decrypt)
}

#[async_trait]
impl Seal for AwsKmsSeal {
    fn seal_type(&self) -> SealType {
        SealType::AwsKms
    }

    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let data_key = random(DATA_KEY_LEN)?;
        let nonce_bytes = random(NONCE_LEN)?;
        let nonce: [u8; NONCE_LEN] = nonce_bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Backend("nonce of the wrong length".into()))?;

        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(data_key.as_slice()))
            .send()
            .await
            .map_err(|e| classify(&e, &self.context(KmsOp::Encrypt, &self.key_id)))?;
        let arn = out
            .key_id()
            .ok_or_else(|| self.missing_field(KmsOp::Encrypt, "KeyId"))?;
        let wrapped = out
            .ciphertext_blob()
            .ok_or_else(|| self.missing_field(KmsOp::Encrypt, "CiphertextBlob"))?;
        self.remember_arn(arn);

        let prefix = format::encode_prefix(arn, wrapped.as_ref(), &nonce)?;
        let associated = format::associated_data(&prefix, aad);
        let ciphertext = cipher(&data_key)
            .map_err(|_| SealError::Backend("data key of the wrong length".into()))?
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &associated,
                },
            )
            .map_err(|_| SealError::Backend("AES-GCM encryption failed".into()))?;
        format::finish(prefix, &ciphertext)
    }

    async fn rewrap(&self, blob: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, SealError> {
        AwsKmsSeal::rewrap(self, blob, aad).await
    }

    /// Also opens the blob Vault's awskms seal wrote (`EncryptedBlobInfo`,
    /// envelope mechanism: KMS-wrapped data key, AES-GCM with the `iv`
    /// field and no associated data), so a Vault data set auto-unseals with
    /// the same KMS key. `aad` does not apply to those blobs: Vault bound
    /// nothing to them.
    async fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if seal_core::vault_blob::is_vault_blob(blob) {
            return self.decrypt_vault_blob(blob).await;
        }
        let parsed = format::parse(blob)?;
        let data_key = self
            .unwrap_data_key(parsed.wrapped_key, parsed.key_id)
            .await?;
        let associated = format::associated_data(parsed.authenticated_prefix, aad);
        let mut buffer = Zeroizing::new(Vec::with_capacity(parsed.ciphertext.len()));
        buffer.extend_from_slice(parsed.ciphertext);
        cipher(&data_key)?
            .decrypt_in_place(Nonce::from_slice(parsed.nonce), &associated, &mut *buffer)
            .map_err(|_| SealError::Decrypt)?;
        Ok(buffer)
    }
}
