//! Router tests over `MemoryStorage`: tokens, mounts, KV v1 and v2.
