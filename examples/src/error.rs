//! The binary's one error type.
//!
//! Every message is written for the operator who reads it in a terminal or a
//! log at 3 a.m.: what failed, where (file and line, address, URL) and what to
//! check. Tokens and key material never appear in these messages.

use std::path::PathBuf;

/// Everything that can go wrong in the `strongroom` binary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// The command line does not make sense.
    #[error("{0}")]
    Usage(String),

    /// A config file could not be read.
    #[error("reading config file {}: {source}; check the path and its permissions", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },

    /// A config file is not valid HCL.
    #[error("config file {}, line {line}: HCL syntax error:\n{message}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the error.
        line: usize,
        /// The parser's message with the offending line and column.
        message: String,
    },

    /// A config file is valid HCL but a setting is wrong.
    #[error("config file {}, line {line}: {message}", path.display())]
    ConfigInvalid {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the stanza or attribute.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A config file lacks a required stanza.
    #[error("config file {}: {message}", path.display())]
    ConfigMissing {
        /// The file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },

    /// A backend named in the config could not be set up.
    #[error("setting up {what}: {message}")]
    Backend {
        /// Which backend, with the config line where known.
        what: String,
        /// The backend's own message.
        message: String,
    },

    /// TLS material for a listener could not be loaded.
    #[error("TLS for listener {address}: {message}")]
    Tls {
        /// The listener address.
        address: String,
        /// What is wrong with the certificate or key.
        message: String,
    },

    /// A listener could not bind its address.
    #[error(
        "listening on {address}: {source}; is another process using the port, or is the address not on this machine?"
    )]
    Bind {
        /// The address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },

    /// The core refused or failed an operation during server start.
    #[error("{what}: {message}")]
    Core {
        /// The operation (for example "initializing the dev server").
        what: String,
        /// The core's message.
        message: String,
    },

    /// The server answered a client request with an error status.
    #[error("{0}")]
    Api(#[from] ApiError),

    /// The server could not be reached or its answer could not be read.
    #[error(
        "{method} {url}: {message}; is the server running and STRONGROOM_ADDR (or VAULT_ADDR) right?"
    )]
    Transport {
        /// HTTP method.
        method: String,
        /// Full request URL.
        url: String,
        /// The transport failure.
        message: String,
    },

    /// A local I/O failure (terminal prompt, signal handler).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A non-success answer from the server, printed the way Vault's CLI does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP method.
    pub(crate) method: String,
    /// Full request URL.
    pub(crate) url: String,
    /// HTTP status code.
    pub(crate) status: u16,
    /// The server's `errors` array.
    pub(crate) errors: Vec<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Error making API request.\n\nURL: {} {}\nCode: {}. Errors:\n",
            self.method, self.url, self.status
        )?;
        for error in &self.errors {
            write!(f, "\n* {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_print_like_vaults_cli() {
        let err = ApiError {
            method: "PUT".into(),
            url: "http://127.0.0.1:8200/v1/sys/unseal".into(),
            status: 400,
            errors: vec!["'key' must be a valid hex or base64 string".into()],
        };
        assert_eq!(
            err.to_string(),
            "Error making API request.\n\nURL: PUT http://127.0.0.1:8200/v1/sys/unseal\nCode: 400. Errors:\n\n* 'key' must be a valid hex or base64 string"
        );
    }
}
