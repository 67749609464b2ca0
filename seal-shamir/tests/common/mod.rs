//! Reading an OpenBao init (its keys) and its storage entries, and checking
//! a combined value against them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use seal_core::UnsealShare;
use seal_shamir::{combine, parse_share};
use serde_json::Value;

/// The output of `make-openbao-fixture.sh`: the init JSON and the storage
/// entries JSON.
pub struct OpenBaoInit {
    pub init: Value,
    pub storage: Value,
}

impl OpenBaoInit {
    pub fn from_strs(init: &str, storage: &str) -> Self {
        Self {
            init: serde_json::from_str(init).unwrap(),
            storage: serde_json::from_str(storage).unwrap(),
        }
    }

    pub fn keys(&self, field: &str) -> Vec<String> {
        self.init[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} missing"))
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }

    /// The shares, parsed from their hex form.
    pub fn shares(&self) -> Vec<UnsealShare> {
        self.keys("unseal_keys_hex")
            .iter()
            .map(|s| parse_share(s).unwrap())
            .collect()
    }

    /// The combination of the shares at `order`, in that order.
    pub fn combined(&self, order: &[usize]) -> Vec<u8> {
        let shares = self.shares();
        let picked: Vec<UnsealShare> = order
            .iter()
            .map(|&i| UnsealShare::from_bytes(shares[i].expose_secret()).unwrap())
            .collect();
        combine(&picked).unwrap().to_vec()
    }

    pub fn entry(&self, path: &str) -> Vec<u8> {
        let b64 = self.storage["entries_base64"][path]
            .as_str()
            .unwrap_or_else(|| panic!("{path} missing from the storage fixture"));
        STANDARD.decode(b64).unwrap()
    }

    /// `BlobInfo.ciphertext` of `core/hsm/barrier-unseal-keys`: OpenBao's
    /// Shamir wrapper output `iv | ct | tag`.
    pub fn wrapped_root_key(&self) -> Vec<u8> {
        let stored = self.entry("core/hsm/barrier-unseal-keys");
        proto_bytes_field(&stored, 1)
            .expect("BlobInfo.ciphertext")
            .to_vec()
    }

    /// Opens the stored root key with a candidate KEK (`None`: wrong KEK).
    pub fn unwrap_stored_root_key(&self, kek: &[u8]) -> Option<Vec<u8>> {
        let json = open(kek, &self.wrapped_root_key(), b"")?;
        let keys: Vec<String> = serde_json::from_slice(&json).unwrap();
        assert_eq!(keys.len(), 1, "one stored root key");
        Some(STANDARD.decode(&keys[0]).unwrap())
    }

    /// Opens a barrier entry (`term u32 BE | 0x02 | nonce | ct | tag`, AAD =
    /// path) with `key`.
    pub fn open_barrier_entry(&self, key: &[u8], path: &str) -> Vec<u8> {
        let value = self.entry(path);
        assert_eq!(&value[..4], &[0, 0, 0, 1], "{path}: term 1");
        assert_eq!(value[4], 2, "{path}: barrier version 2");
        open(key, &value[5..], path.as_bytes()).unwrap_or_else(|| panic!("{path} did not open"))
    }

    /// Proves `kek` is OpenBao's KEK: it opens the stored root key, the root
    /// key opens the keyring, the keyring's term-1 key opens
    /// `core/shamir-kek`, and that entry holds exactly `kek`.
    pub fn assert_is_openbaos_kek(&self, kek: &[u8]) {
        let root_key = self
            .unwrap_stored_root_key(kek)
            .expect("the combined KEK opens the stored root key");
        assert_eq!(root_key.len(), 32);
        let keyring: Value =
            serde_json::from_slice(&self.open_barrier_entry(&root_key, "core/keyring")).unwrap();
        let root_in_keyring = keyring["MasterKey"]
            .as_str()
            .or(keyring["RootKey"].as_str())
            .expect("keyring names its root key");
        assert_eq!(STANDARD.decode(root_in_keyring).unwrap(), root_key);
        let term1 = keyring["Keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["Term"] == 1)
            .expect("term 1 key");
        let term1_key = STANDARD.decode(term1["Value"].as_str().unwrap()).unwrap();
        let stored_kek = self.open_barrier_entry(&term1_key, "core/shamir-kek");
        assert_eq!(stored_kek, kek, "core/shamir-kek holds the combined value");
    }
}

/// All k-subsets of 0..n, as index lists in increasing order.
pub fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    (0u32..(1 << n))
        .filter(|m| m.count_ones() as usize == k)
        .map(|m| (0..n).filter(|i| m & (1 << i) != 0).collect())
        .collect()
}

/// All orderings of `items`.
pub fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for (i, &first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

/// Field `want` (length-delimited) of a protobuf message: enough to read
/// `BlobInfo.ciphertext` (field 1) from OpenBao's wrapper blob.
pub fn proto_bytes_field(msg: &[u8], want: u64) -> Option<&[u8]> {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut r = 0u64;
        for shift in (0..64).step_by(7) {
            let c = *b.get(*i)?;
            *i += 1;
            r |= u64::from(c & 0x7f) << shift;
            if c < 0x80 {
                return Some(r);
            }
        }
        None
    }
    let mut i = 0;
    while i < msg.len() {
        let key = varint(msg, &mut i)?;
        match key & 7 {
            0 => {
                varint(msg, &mut i)?;
            }
            2 => {
                let len = usize::try_from(varint(msg, &mut i)?).ok()?;
                let body = msg.get(i..i.checked_add(len)?)?;
                i += len;
                if key >> 3 == want {
                    return Some(body);
                }
            }
            _ => return None,
        }
    }
    None
}

/// AES-256-GCM open of `nonce (12) | ct | tag`.
pub fn open(key: &[u8], nonce_ct_tag: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if nonce_ct_tag.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = nonce_ct_tag.split_at(12);
    Aes256Gcm::new_from_slice(key)
        .ok()?
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}
