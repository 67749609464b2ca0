//! The storage conformance suite against a real Consul dev agent.
//!
//! All cases share one agent; each gets its own key prefix, deleted again
//! by the guard when the case ends.

use std::sync::Arc;

use seal_core::Storage;
use storage_consul::ConsistencyMode;
use testkit::consul::{PrefixGuard, isolated, shared_dev};

async fn consul_storage() -> (Arc<dyn Storage>, PrefixGuard) {
    let (storage, guard) = isolated(shared_dev(), |_| {});
    (Arc::new(storage), guard)
}

seal_core::storage_suite!(consul_storage);

/// The same suite with `consistency_mode = "strong"` (`?consistent` reads).
mod strong {
    use super::*;

    async fn strong_storage() -> (Arc<dyn Storage>, PrefixGuard) {
        let (storage, guard) = isolated(shared_dev(), |c| {
            c.consistency_mode = ConsistencyMode::Strong;
        });
        (Arc::new(storage), guard)
    }

    seal_core::storage_suite!(strong_storage);
}
