//! The read cache is a `Storage`: it runs the conformance suite, switched
//! on (answers from the cache) and off (passes through).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use seal_core::{MemoryStorage, Storage};
use strongroom::{CacheConfig, ReadCache};

async fn active() -> (Arc<dyn Storage>, ()) {
    let cache = ReadCache::new(Arc::new(MemoryStorage::new()), CacheConfig::default());
    cache.activate();
    (Arc::new(cache), ())
}

seal_core::storage_suite!(active);

mod inactive {
    use super::*;

    async fn inactive() -> (Arc<dyn Storage>, ()) {
        let cache = ReadCache::new(Arc::new(MemoryStorage::new()), CacheConfig::default());
        (Arc::new(cache), ())
    }

    seal_core::storage_suite!(inactive);
}
