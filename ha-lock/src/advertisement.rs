//! [`Advertisement`]: what the lock holder tells everyone else about itself.

use serde::{Deserialize, Serialize};

/// Where the lock holder can be reached, stored as the lock's value (JSON)
/// so that every standby learns the active node's address from the same
/// read that tells it the lock is held.
///
/// Vault stores only a UUID in the lock and the addresses in a separate
/// barrier entry; one value means one read, and no window in which the
/// lock is held but the address unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertisement {
    /// The address clients use (Vault's `api_addr`), e.g.
    /// `https://10.0.0.5:8200`. Standbys forward requests here.
    pub api_addr: String,
    /// The address for node-to-node traffic (Vault's `cluster_addr`), shown
    /// as `leader_cluster_address`; may be empty.
    #[serde(default)]
    pub cluster_addr: String,
    /// An identifier unique to this node for the life of its process, so
    /// a node can tell its own advertisement from another's even when two
    /// nodes are configured with the same address by mistake.
    pub node_id: String,
}

/// Why a lock value could not be read as an [`Advertisement`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertisementError {
    /// The value is not the JSON this crate writes.
    #[error("the HA lock value is not an advertisement (JSON with api_addr and node_id): {0}")]
    Malformed(String),
}

impl Advertisement {
    /// An advertisement for a node reachable at `api_addr`.
    pub fn new(
        api_addr: impl Into<String>,
        cluster_addr: impl Into<String>,
        node_id: impl Into<String>,
    ) -> Self {
        Self {
            api_addr: api_addr.into(),
            cluster_addr: cluster_addr.into(),
            node_id: node_id.into(),
        }
    }

    /// The lock value: compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing three strings cannot fail; an empty value would only
        // make the holder anonymous, never unsafe.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a lock value. The value comes from the lock service and is not
    /// trusted: any bytes give an error, never a panic.
    ///
    /// # Errors
    /// [`AdvertisementError::Malformed`] when the bytes are not the JSON
    /// [`to_json`](Self::to_json) writes.
    pub fn from_json(raw: &[u8]) -> Result<Self, AdvertisementError> {
        serde_json::from_slice(raw).map_err(|e| AdvertisementError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_json_with_vault_style_field_names() {
        let ad = Advertisement::new("https://10.0.0.5:8200", "https://10.0.0.5:8201", "n1");
        let raw = ad.to_json();
        let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(value["api_addr"], "https://10.0.0.5:8200");
        assert_eq!(value["cluster_addr"], "https://10.0.0.5:8201");
        assert_eq!(value["node_id"], "n1");
        assert_eq!(Advertisement::from_json(&raw).unwrap(), ad);
    }

    #[test]
    fn cluster_addr_may_be_absent() {
        let ad = Advertisement::from_json(br#"{"api_addr":"http://a:1","node_id":"x"}"#).unwrap();
        assert_eq!(ad.cluster_addr, "");
    }

    #[test]
    fn foreign_values_are_errors() {
        for raw in [&b""[..], b"not json", b"{}", b"\"uuid\"", &[0xff, 0x00]] {
            assert!(Advertisement::from_json(raw).is_err(), "{raw:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = Advertisement::from_json(&raw);
        }
    }
}
