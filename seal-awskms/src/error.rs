//! [`AwsKmsError`] and the classification of KMS failures into
//! [`SealError`] variants the core can act on.

use std::fmt;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use seal_core::SealError;

/// Why the AWS KMS seal could not be configured or built.
///
/// Failures of KMS calls are [`SealError`]s (the [`seal_core::Seal`]
/// contract); this enum covers what happens before any call is made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsKmsError {
    /// The `seal "awskms"` configuration is invalid; the message names the
    /// setting and what is expected.
    #[error("invalid AWS KMS seal configuration: {0}")]
    Config(String),
}

/// The KMS operation that failed, named as in IAM actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KmsOp {
    Encrypt,
    Decrypt,
}

impl fmt::Display for KmsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
        })
    }
}

/// Where a call went, for messages: the key, the region, the endpoint, and
/// the bounds the call ran under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallContext<'a> {
    pub(crate) op: KmsOp,
    /// The key the call was about: the configured key for Encrypt, the key
    /// recorded in the blob for Decrypt.
    pub(crate) key_id: &'a str,
    pub(crate) region: &'a str,
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) operation_timeout: Duration,
    pub(crate) max_attempts: u32,
}

impl CallContext<'_> {
    fn place(&self) -> String {
        match self.endpoint {
            Some(ep) => format!("key {}, region {}, endpoint {ep}", self.key_id, self.region),
            None => format!("key {}, region {}", self.key_id, self.region),
        }
    }

    fn endpoint_name(&self) -> String {
        match self.endpoint {
            Some(ep) => ep.to_owned(),
            None => format!("the KMS endpoint of region {}", self.region),
        }
    }
}

/// Error codes KMS (and the IAM layer in front of it) uses for refused
/// credentials or permissions.
const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "ExpiredTokenException",
    "ExpiredToken",
    "MissingAuthenticationToken",
];

const KEY_DISABLED_CODES: &[&str] = &["DisabledException", "KMSInvalidStateException"];

const KEY_NOT_FOUND_CODES: &[&str] = &["NotFoundException", "InvalidArnException"];

const INVALID_CIPHERTEXT_CODES: &[&str] = &["InvalidCiphertextException", "IncorrectKeyException"];

const THROTTLED_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "LimitExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
];

/// Server-side conditions that are transient: the service, not the request,
/// is at fault.
const UNAVAILABLE_CODES: &[&str] = &[
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "ServiceUnavailable",
    "InternalFailure",
];

/// Classifies a failed KMS call from the service's error code, message and
/// HTTP status. Pure, so each classification is unit-tested.
pub(crate) fn classify_service(
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
    ctx: &CallContext<'_>,
) -> SealError {
    let op = ctx.op;
    let place = ctx.place();
    let said = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        (None, Some(m)) => m.to_owned(),
        (None, None) => match status {
            Some(s) => format!("HTTP status {s} with no error code"),
            None => "no error code".to_owned(),
        },
    };
    let is = |codes: &[&str]| code.is_some_and(|c| codes.contains(&c));

    if is(INVALID_CIPHERTEXT_CODES) {
        // The one opaque decrypt error: the blob is corrupt or was sealed
        // under a key this KMS cannot use for it.
        return SealError::Decrypt;
    }
    if is(ACCESS_DENIED_CODES) || (code.is_none() && matches!(status, Some(401 | 403))) {
        let hint = match op {
            KmsOp::Encrypt => {
                "check the node's kms:Encrypt permission on the key (IAM policy and key policy) and its AWS credentials"
            }
            KmsOp::Decrypt => {
                "check the node's kms:Decrypt permission on the key (IAM policy and key policy) and its AWS credentials; \
                 KMS also answers this way when the stored blob names a key that does not exist in this account and region"
            }
        };
        return SealError::AccessDenied(format!("KMS {op} was denied ({place}): {said}; {hint}"));
    }
    if is(KEY_DISABLED_CODES) {
        return SealError::KeyDisabled(format!(
            "KMS {op} refused because the key is disabled or pending deletion ({place}): {said}; \
             enable the key (kms:EnableKey) or cancel its scheduled deletion"
        ));
    }
    if is(KEY_NOT_FOUND_CODES) {
        return SealError::KeyNotFound(format!(
            "KMS {op} could not find the key ({place}): {said}; check kms_key_id and that the key exists \
             in region {} of the account the credentials belong to",
            ctx.region
        ));
    }
    if is(THROTTLED_CODES) || (code.is_none() && status == Some(429)) {
        return SealError::Throttled(format!(
            "KMS throttled {op} ({place}): {said}; gave up after up to {} attempts with backoff; \
             lower the request rate or raise the account's KMS request quota",
            ctx.max_attempts
        ));
    }
    if is(UNAVAILABLE_CODES) || status.is_some_and(|s| s >= 500) {
        return SealError::Unreachable(format!(
            "KMS {op} failed on the service side ({place}): {said}; gave up after up to {} attempts with backoff; \
             KMS or the endpoint {} is having trouble, retry later",
            ctx.max_attempts,
            ctx.endpoint_name()
        ));
    }
    let hint = if code == Some("InvalidKeyUsageException") {
        "; the seal needs a symmetric key with key usage ENCRYPT_DECRYPT"
    } else {
        ""
    };
    SealError::Backend(format!("KMS {op} failed ({place}): {said}{hint}"))
}

/// Classifies any failure of an SDK call.
pub(crate) fn classify<E>(err: &SdkError<E, HttpResponse>, ctx: &CallContext<'_>) -> SealError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let op = ctx.op;
    let place = ctx.place();
    let endpoint = ctx.endpoint_name();
    let bounds = format!(
        "gave up after up to {} attempts with backoff within {}",
        ctx.max_attempts,
        humantime::format_duration(ctx.operation_timeout)
    );
    let network_hint =
        "check network access to KMS (DNS, routes, security groups, VPC endpoint, proxy)";
    match err {
        SdkError::ServiceError(service) => {
            let (code, message) = match service.err().code() {
                Some(code) => (
                    Some(code.to_owned()),
                    service.err().message().map(str::to_owned),
                ),
                // An IAM layer in front of KMS (moto's, some proxies) may
                // answer in XML, which the JSON protocol cannot read.
                None => {
                    let body = service.raw().body().bytes().unwrap_or_default();
                    let text = String::from_utf8_lossy(body);
                    (xml_field(&text, "Code"), xml_field(&text, "Message"))
                }
            };
            classify_service(
                code.as_deref(),
                message.as_deref(),
                Some(service.raw().status().as_u16()),
                ctx,
            )
        }
        SdkError::TimeoutError(_) => SealError::Unreachable(format!(
            "KMS {op} timed out talking to {endpoint} ({place}); {bounds}; {network_hint}"
        )),
        SdkError::DispatchFailure(failure) => {
            let detail = ErrorChain(err);
            if let Some(creds) = credentials_error(err) {
                return classify_credentials(creds, &detail.to_string(), ctx);
            }
            if failure.is_timeout() || failure.is_io() || failure.is_other() {
                SealError::Unreachable(format!(
                    "KMS {op} could not reach {endpoint} ({place}): {detail}; {bounds}; {network_hint}"
                ))
            } else {
                SealError::Backend(format!(
                    "KMS {op} request could not be sent to {endpoint} ({place}): {detail}; check the endpoint setting"
                ))
            }
        }
        SdkError::ResponseError(_) => SealError::Unreachable(format!(
            "KMS {op} got an unreadable response from {endpoint} ({place}): {}; {bounds}; \
             check that the endpoint is a KMS endpoint and that nothing in between cuts responses",
            ErrorChain(err)
        )),
        SdkError::ConstructionFailure(_) => SealError::Backend(format!(
            "KMS {op} request could not be prepared ({place}): {}; check the seal's region and endpoint settings",
            ErrorChain(err)
        )),
        _ => SealError::Backend(format!("KMS {op} failed ({place}): {}", ErrorChain(err))),
    }
}

/// The text of the first `<tag>…</tag>` in an XML error body, if short.
fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let (_, rest) = xml.split_once(&format!("<{tag}>"))?;
    let (value, _) = rest.split_once(&format!("</{tag}>"))?;
    let value = value.trim();
    (!value.is_empty() && value.len() <= 512).then(|| value.to_owned())
}

/// Displays an error and its sources as `outer: inner: innermost`,
/// skipping repeats (the SDK's wrappers often repeat their source).
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = String::new();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(self.0);
        let mut first = true;
        while let Some(e) = current {
            let text = e.to_string();
            if !text.is_empty() && !last.contains(&text) {
                if !first {
                    f.write_str(": ")?;
                }
                f.write_str(&text)?;
                first = false;
                last = text;
            }
            current = e.source();
        }
        Ok(())
    }
}

/// The credentials failure somewhere in an error's source chain, if any:
/// the SDK reports a credentials provider that failed as a dispatch failure.
fn credentials_error<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e CredentialsError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(creds) = e.downcast_ref::<CredentialsError>() {
            return Some(creds);
        }
        current = e.source();
    }
    None
}

fn classify_credentials(
    creds: &CredentialsError,
    detail: &str,
    ctx: &CallContext<'_>,
) -> SealError {
    let op = ctx.op;
    let place = ctx.place();
    let where_to_look = "check access_key/secret_key in the seal stanza, the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \
                         environment, the shared credentials file and profile, and role_arn/web_identity_token_file";
    match creds {
        CredentialsError::CredentialsNotLoaded(_) => SealError::AccessDenied(format!(
            "KMS {op} has no AWS credentials to sign with ({place}): {detail}; {where_to_look}"
        )),
        CredentialsError::ProviderTimedOut(_) => SealError::Unreachable(format!(
            "KMS {op} could not fetch AWS credentials in time ({place}): {detail}; check that the credentials \
             source (instance metadata, container credentials, STS) is reachable"
        )),
        _ => SealError::AccessDenied(format!(
            "KMS {op} could not obtain AWS credentials ({place}): {detail}; {where_to_look}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(op: KmsOp) -> CallContext<'static> {
        CallContext {
            op,
            key_id: "alias/strongroom",
            region: "eu-west-1",
            endpoint: None,
            operation_timeout: Duration::from_secs(30),
            max_attempts: 3,
        }
    }

    #[test]
    fn key_disabled_is_classified_from_its_code() {
        // moto does not enforce DisableKey, so this is tested from the code
        // real KMS sends (DisabledException) and for pending deletion
        // (KMSInvalidStateException).
        let err = classify_service(
            Some("DisabledException"),
            Some("arn:aws:kms:eu-west-1:111122223333:key/abc is disabled."),
            Some(400),
            &ctx(KmsOp::Decrypt),
        );
        let SealError::KeyDisabled(msg) = err else {
            panic!("expected KeyDisabled, got {err:?}");
        };
        assert!(msg.contains("alias/strongroom"), "{msg}");
        assert!(msg.contains("region eu-west-1"), "{msg}");
        assert!(msg.contains("enable the key"), "{msg}");
        assert!(matches!(
            classify_service(
                Some("KMSInvalidStateException"),
                None,
                Some(400),
                &ctx(KmsOp::Encrypt)
            ),
            SealError::KeyDisabled(_)
        ));
    }

    #[test]
    fn access_denied_names_the_permission() {
        for (op, permission) in [
            (KmsOp::Encrypt, "kms:Encrypt"),
            (KmsOp::Decrypt, "kms:Decrypt"),
        ] {
            let err = classify_service(
                Some("AccessDeniedException"),
                Some("User is not authorized"),
                Some(400),
                &ctx(op),
            );
            let SealError::AccessDenied(msg) = err else {
                panic!("expected AccessDenied, got {err:?}");
            };
            assert!(msg.contains(permission), "{msg}");
            assert!(
                msg.contains("alias/strongroom") && msg.contains("eu-west-1"),
                "{msg}"
            );
        }
        // Without a code, 403 still reads as denied.
        assert!(matches!(
            classify_service(None, None, Some(403), &ctx(KmsOp::Encrypt)),
            SealError::AccessDenied(_)
        ));
        assert!(matches!(
            classify_service(
                Some("UnrecognizedClientException"),
                None,
                Some(400),
                &ctx(KmsOp::Encrypt)
            ),
            SealError::AccessDenied(_)
        ));
    }

    #[test]
    fn xml_error_bodies_are_read() {
        let body = "<ErrorResponse><Error><Code>AccessDenied</Code><Message>User: u is not authorized to perform: kms:Encrypt</Message></Error></ErrorResponse>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("AccessDenied"));
        assert!(xml_field(body, "Message").unwrap().contains("kms:Encrypt"));
        assert_eq!(xml_field("{}", "Code"), None);
        assert_eq!(xml_field("<Code></Code>", "Code"), None);
    }

    #[test]
    fn error_chain_joins_sources_without_repeats() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl fmt::Display for E {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let err = E(
            "dispatch failure",
            Some(Box::new(E(
                "io error",
                Some(Box::new(E(
                    "io error",
                    Some(Box::new(E("connection refused", None))),
                ))),
            ))),
        );
        assert_eq!(
            ErrorChain(&err).to_string(),
            "dispatch failure: io error: connection refused"
        );
    }

    #[test]
    fn other_codes() {
        let c = ctx(KmsOp::Encrypt);
        let not_found = classify_service(
            Some("NotFoundException"),
            Some("Key 'x' does not exist"),
            Some(400),
            &c,
        );
        assert!(
            matches!(&not_found, SealError::KeyNotFound(m) if m.contains("check kms_key_id")),
            "{not_found:?}"
        );
        assert!(matches!(
            classify_service(
                Some("InvalidCiphertextException"),
                None,
                Some(400),
                &ctx(KmsOp::Decrypt)
            ),
            SealError::Decrypt
        ));
        assert!(matches!(
            classify_service(
                Some("IncorrectKeyException"),
                None,
                Some(400),
                &ctx(KmsOp::Decrypt)
            ),
            SealError::Decrypt
        ));
        let throttled = classify_service(
            Some("ThrottlingException"),
            Some("Rate exceeded"),
            Some(400),
            &c,
        );
        assert!(throttled.is_transient());
        assert!(matches!(throttled, SealError::Throttled(_)));
        assert!(matches!(
            classify_service(None, None, Some(429), &c),
            SealError::Throttled(_)
        ));
        let internal = classify_service(Some("KMSInternalException"), None, Some(500), &c);
        assert!(matches!(internal, SealError::Unreachable(_)));
        assert!(matches!(
            classify_service(None, None, Some(503), &c),
            SealError::Unreachable(_)
        ));
        let usage = classify_service(Some("InvalidKeyUsageException"), None, Some(400), &c);
        assert!(
            matches!(&usage, SealError::Backend(m) if m.contains("ENCRYPT_DECRYPT")),
            "{usage:?}"
        );
        assert!(matches!(
            classify_service(Some("ValidationException"), Some("bad"), Some(400), &c),
            SealError::Backend(_)
        ));
    }
}
