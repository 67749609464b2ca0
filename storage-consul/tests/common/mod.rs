//! What the Consul tests share beyond testkit: finding the Consul error in
//! a storage error.
#![allow(dead_code, unreachable_pub)]

use seal_core::StorageError;
use storage_consul::ConsulError;

/// The [`ConsulError`] inside a storage error, if any.
pub fn consul_source(err: &StorageError) -> Option<&ConsulError> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<ConsulError>() {
            return Some(c);
        }
        source = e.source();
    }
    None
}
