//! [`ConsulError`]: everything that can go wrong talking to Consul.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use seal_core::StorageError;

/// Why a Consul configuration or request failed.
///
/// Storage calls surface these as the `source` of a [`StorageError`]
/// (see [`ConsulError::into_storage`]): the transient faults inside
/// [`StorageError::Unavailable`], ACL refusals as
/// [`StorageError::PermissionDenied`], a failed write fence
/// ([`ConsulError::Fenced`]) inside [`StorageError::Fenced`], everything
/// else inside [`StorageError::Backend`]. No variant ever carries the ACL token.
///
/// It is `Clone` because one failed `/v1/txn` can carry the writes of
/// several callers (group commit), and each gets the error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConsulError {
    /// A `storage "consul"` setting is missing, unknown or malformed.
    #[error("consul storage config: {key}: {message}")]
    Config {
        /// The setting (`address`, `max_parallel`, …).
        key: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// A TLS file named in the configuration could not be read or parsed.
    #[error("consul storage config: cannot use {setting} {path:?}: {message}")]
    TlsFile {
        /// The setting (`tls_ca_file`, `tls_cert_file`, `tls_key_file`).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed (I/O error or PEM parse error).
        message: String,
    },
    /// The HTTP client could not be built from the configuration.
    #[error("consul storage: cannot build the HTTP client: {0}")]
    Client(#[source] Arc<reqwest::Error>),
    /// Nothing listens at the Consul address: the agent is down or the
    /// address is wrong.
    #[error(
        "connection to Consul at {address} refused; check that the Consul agent is running and that `address` is right"
    )]
    ConnectionRefused {
        /// `scheme://host:port` that was dialled.
        address: String,
    },
    /// The TLS handshake with Consul failed (untrusted or mismatched
    /// certificate, client certificate refused, protocol version).
    #[error(
        "TLS handshake with Consul at {address} failed: {message}; check tls_ca_file, tls_cert_file/tls_key_file and the agent's certificate"
    )]
    Tls {
        /// `scheme://host:port` that was dialled.
        address: String,
        /// The TLS library's reason.
        message: String,
    },
    /// Connecting to Consul failed for another reason (DNS, reset, …).
    #[error("cannot connect to Consul at {address}: {message}")]
    Connect {
        /// `scheme://host:port` that was dialled.
        address: String,
        /// What the network stack said.
        message: String,
    },
    /// Consul did not answer within the request timeout.
    #[error(
        "Consul at {address} did not answer within {after:?}; check the agent's health and the network (request_timeout)"
    )]
    Timeout {
        /// `scheme://host:port` that was dialled.
        address: String,
        /// The request timeout that expired.
        after: Duration,
    },
    /// Consul has no raft leader (HTTP 500 `No cluster leader`): a quorum of
    /// servers is down or partitioned.
    #[error(
        "Consul reports no cluster leader (HTTP 500); check that a quorum of Consul servers is up (`consul operator raft list-peers`)"
    )]
    NoLeader,
    /// The Consul agent could not complete its RPC to the servers or the
    /// leader (HTTP 500 `rpc error making call: …`, `No known Consul
    /// servers`), or the server stopped or lost leadership before applying
    /// a write (`raft apply failed: raft is already shutdown`): typically
    /// the leader just died and an election is under way.
    #[error(
        "the Consul agent could not reach the Consul servers (HTTP 500: {body}); a leader election may be under way, check the servers"
    )]
    ServerRpc {
        /// Consul's text.
        body: String,
    },
    /// Consul is rate limiting this client (HTTP 429, or 503 "retry later").
    #[error(
        "Consul is rate limiting requests (HTTP {status}): {body}; reduce load or max_parallel"
    )]
    RateLimited {
        /// 429 or 503.
        status: u16,
        /// Consul's text.
        body: String,
    },
    /// Consul's ACL system refused the request (HTTP 403).
    #[error(
        "Consul ACL refused the request (HTTP {status}: {body}); check that `token` (or CONSUL_HTTP_TOKEN) is set and has key_prefix write on the storage path"
    )]
    PermissionDenied {
        /// 403, or 409 when a transaction operation was refused.
        status: u16,
        /// Consul's text (`Permission denied`, `ACL not found`).
        body: String,
    },
    /// Consul refused a request as too large (HTTP 413) although it passed
    /// the client-side limits: the servers' `limits` are lower than
    /// `kv_max_value_size` / `txn_max_req_len` in this configuration.
    #[error(
        "Consul refused the request as too large (HTTP 413: {body}); the servers' kv_max_value_size / txn_max_req_len are lower than configured here"
    )]
    TooLarge {
        /// Consul's text.
        body: String,
    },
    /// The write fence failed: the HA session no longer holds the lock, so
    /// this node must not write (another node may be active).
    #[error(
        "write refused: session {session} no longer holds lock {lock_key}; this node lost leadership and must not write"
    )]
    Fenced {
        /// The lock key (full Consul key).
        lock_key: String,
        /// The session that was expected to hold it.
        session: String,
    },
    /// Consul rolled the transaction back (HTTP 409) for another reason.
    #[error("Consul rolled the transaction back (HTTP 409): {}", errors.join("; "))]
    RolledBack {
        /// One line per failed operation: `op <index>: <what>`.
        errors: Vec<String>,
    },
    /// Consul answered with a status this client does not expect.
    #[error("Consul answered HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Consul's text (truncated).
        body: String,
    },
    /// Consul's answer could not be understood.
    #[error("cannot decode Consul's answer to {what}: {message}")]
    Decode {
        /// Which response (`list`, `txn`).
        what: &'static str,
        /// The parse error.
        message: String,
    },
    /// Any other HTTP-level failure (body read, redirect, …).
    #[error("HTTP request to Consul at {address} failed: {message}")]
    Http {
        /// `scheme://host:port` that was dialled.
        address: String,
        /// What failed.
        message: String,
    },
}

impl ConsulError {
    /// Whether the same request may succeed if retried (after a backoff):
    /// connection refused, connect failures other than TLS, timeouts, no
    /// leader, rate limiting.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::ConnectionRefused { .. }
                | Self::Connect { .. }
                | Self::Timeout { .. }
                | Self::NoLeader
                | Self::ServerRpc { .. }
                | Self::RateLimited { .. }
        )
    }

    /// Wraps this error into the [`StorageError`] a [`seal_core::Storage`]
    /// call returns for operation `op` on `key`.
    pub fn into_storage(self, op: &'static str, key: &str) -> StorageError {
        if self.is_transient() {
            return StorageError::Unavailable {
                op,
                key: key.to_owned(),
                message: self.to_string(),
                source: Some(Box::new(self)),
            };
        }
        match self {
            Self::PermissionDenied { .. } => StorageError::PermissionDenied {
                op,
                key: key.to_owned(),
                message: self.to_string(),
            },
            Self::Fenced { .. } => StorageError::Fenced {
                op,
                key: key.to_owned(),
                source: Box::new(self),
            },
            other => StorageError::backend(op, key, other),
        }
    }

    pub(crate) fn config(key: &str, message: impl Into<String>) -> Self {
        Self::Config {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Shortens a response body for an error message: Consul's error bodies
/// are short text, but a proxy in between may answer with a whole page.
pub(crate) fn truncate_body(body: &str) -> String {
    const MAX: usize = 300;
    let body = body.trim();
    if body.len() <= MAX {
        return body.to_owned();
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_faults_become_unavailable() {
        for err in [
            ConsulError::ConnectionRefused {
                address: "http://127.0.0.1:1".into(),
            },
            ConsulError::Timeout {
                address: "http://127.0.0.1:1".into(),
                after: Duration::from_secs(1),
            },
            ConsulError::NoLeader,
            ConsulError::RateLimited {
                status: 429,
                body: "slow down".into(),
            },
        ] {
            let text = err.to_string();
            let storage = err.into_storage("put", "core/keyring");
            assert!(storage.is_transient(), "{storage}");
            assert!(storage.to_string().contains("core/keyring"), "{storage}");
            assert!(storage.to_string().contains(&text), "{storage}");
        }
    }

    #[test]
    fn acl_refusal_becomes_permission_denied() {
        let err = ConsulError::PermissionDenied {
            status: 403,
            body: "ACL not found".into(),
        }
        .into_storage("get", "k");
        assert!(
            matches!(err, StorageError::PermissionDenied { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn fence_refusal_becomes_fenced() {
        let err = ConsulError::Fenced {
            lock_key: "vault/core/lock".into(),
            session: "s1".into(),
        }
        .into_storage("put", "k");
        assert!(err.is_fenced(), "{err}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("no longer holds lock"), "{err}");
    }

    #[test]
    fn other_failures_become_backend() {
        let err = ConsulError::Status {
            status: 500,
            body: "boom".into(),
        }
        .into_storage("list", "a/");
        assert!(matches!(err, StorageError::Backend { .. }), "{err}");
        assert!(!err.is_transient());
        let tls = ConsulError::Tls {
            address: "https://127.0.0.1:1".into(),
            message: "UnknownIssuer".into(),
        };
        assert!(
            !tls.is_transient(),
            "a bad certificate does not heal by retrying"
        );
    }

    #[test]
    fn bodies_are_truncated_on_char_boundaries() {
        let long = "é".repeat(400);
        let short = truncate_body(&long);
        assert!(short.len() <= 304);
        assert!(short.ends_with('…'));
        assert_eq!(truncate_body("  No cluster leader\n"), "No cluster leader");
    }
}
