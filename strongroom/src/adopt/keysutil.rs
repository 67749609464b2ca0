//! The one piece of Vault's `helper/keysutil` that KV v2 storage needs to be
//! read: KV v2 hides its key names by encrypting each path segment with a
//! derived, convergent AES-256-GCM key kept at `<mount>/policy/metadata`.
//!
//! A stored name is `base62(bigint(ciphertext string))`, where the
//! ciphertext string is `"<key version>:" + base64(nonce(12) ‖ ct ‖ tag)`
//! and the plaintext is the segment (the wrapper hands keysutil its base64,
//! which keysutil decodes before encrypting). The AES key is
//! HKDF-SHA256(policy key, no salt, info = context), 32 bytes; the context
//! is `<backend uuid>/metadata` followed by the decrypted parent segments
//! (`<backend uuid>/metadata/<a>/<b>`). Only decryption is implemented: Strongroom walks
//! the tree once and never writes this format.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Go's `big.Int.Text(62)` digits.
const BASE62: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Vault's keysutil policy JSON, only the fields decryption reads.
#[derive(Deserialize)]
struct PolicyJson {
    #[serde(default)]
    keys: BTreeMap<String, KeyEntryJson>,
    #[serde(default)]
    derived: bool,
    #[serde(default)]
    kdf: u8,
    #[serde(default)]
    version_template: String,
    #[serde(default, rename = "type")]
    key_type: u8,
}

#[derive(Deserialize)]
struct KeyEntryJson {
    /// Go `[]byte`, base64 in JSON.
    key: Zeroizing<String>,
}

/// The decrypting half of a KV v2 mount's metadata-name policy.
pub(crate) struct NamePolicy {
    keys: BTreeMap<u32, Zeroizing<Vec<u8>>>,
    prefix: String,
    separator: String,
}

impl std::fmt::Debug for NamePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamePolicy")
            .field("versions", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// HKDF output length for aws-lc-rs.
struct Len(usize);

impl aws_lc_rs::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl NamePolicy {
    /// Parses the policy JSON stored at `<mount>/policy/metadata`.
    ///
    /// # Errors
    /// A message when the JSON does not decode or the policy is not the
    /// derived AES-256-GCM (HKDF) policy KV v2 creates.
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, String> {
        let json: PolicyJson = serde_json::from_slice(raw)
            .map_err(|e| format!("not a keysutil policy JSON document: {e}"))?;
        // Type 0 = aes256-gcm96; KDF 1 = hkdf_sha256.
        if !json.derived || json.kdf != 1 || json.key_type != 0 {
            return Err(
                "the metadata key policy is not a derived AES-256-GCM HKDF-SHA256 policy".into(),
            );
        }
        let template = if json.version_template.is_empty() {
            "vault:v{{version}}:".to_owned()
        } else {
            json.version_template
        };
        let (prefix, separator) = template
            .split_once("{{version}}")
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
            .ok_or("the policy's version template has no {{version}}")?;
        let mut keys = BTreeMap::new();
        for (version, entry) in json.keys {
            let version: u32 = version
                .parse()
                .map_err(|_| format!("key version {version:?} is not a number"))?;
            let key = Zeroizing::new(
                B64.decode(entry.key.as_bytes())
                    .map_err(|_| format!("key version {version} is not base64"))?,
            );
            keys.insert(version, key);
        }
        Ok(Self {
            keys,
            prefix,
            separator,
        })
    }

    /// Decrypts one stored name segment found below the folder whose
    /// context is `context` (`metadata`, `metadata/<parent>`...).
    ///
    /// # Errors
    /// A message for a name that does not decode or decrypt.
    pub(crate) fn decrypt_name(&self, context: &str, stored: &str) -> Result<String, String> {
        let bytes = base62_decode(stored).ok_or("not a base62 name")?;
        let text = std::str::from_utf8(&bytes).map_err(|_| "ciphertext is not text")?;
        let rest = text
            .strip_prefix(self.prefix.as_str())
            .ok_or("ciphertext has no version prefix")?;
        let (version, b64) = rest
            .split_once(self.separator.as_str())
            .ok_or("ciphertext has no version separator")?;
        let mut version: u32 = version.parse().map_err(|_| "bad key version")?;
        if version == 0 {
            version = 1;
        }
        let key = self.keys.get(&version).ok_or("unknown key version")?;
        let raw = B64.decode(b64).map_err(|_| "ciphertext is not base64")?;
        if raw.len() < 12 + 16 {
            return Err("ciphertext shorter than nonce and tag".into());
        }
        let mut derived = Zeroizing::new([0u8; 32]);
        aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[])
            .extract(key)
            .expand(&[context.as_bytes()], Len(32))
            .and_then(|okm| okm.fill(&mut *derived))
            .map_err(|_| "key derivation failed")?;
        let cipher = Aes256Gcm::new_from_slice(&*derived).map_err(|_| "bad derived key")?;
        let (nonce, ct) = raw.split_at(12);
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(nonce), ct)
                .map_err(|_| "name does not decrypt under the metadata key")?,
        );
        // keysutil's Encrypt takes base64 text and encrypts the decoded
        // bytes, so what decrypts is the segment itself.
        String::from_utf8(plain.to_vec()).map_err(|_| "decrypted name is not UTF-8".into())
    }
}

/// Decodes Go's `big.Int.SetString(s, 62)` into big-endian bytes (no
/// leading zeros). `None` for an empty string or a non-base62 character.
fn base62_decode(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || text.len() > 4096 {
        return None;
    }
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    for c in text.bytes() {
        let digit = BASE62.iter().position(|d| *d == c)?;
        let mut carry = u32::try_from(digit).ok()?;
        for byte in out.iter_mut().rev() {
            let v = u32::from(*byte) * 62 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            out.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base62_encode(bytes: &[u8]) -> String {
        // Test-only inverse, by repeated division.
        let mut num = bytes.to_vec();
        let mut digits = Vec::new();
        while num.iter().any(|b| *b != 0) {
            let mut rem = 0u32;
            for byte in &mut num {
                let v = (rem << 8) | u32::from(*byte);
                *byte = (v / 62) as u8;
                rem = v % 62;
            }
            digits.push(BASE62[rem as usize]);
        }
        digits.reverse();
        String::from_utf8(digits).unwrap()
    }

    #[test]
    fn base62_matches_go_big_int() {
        // big.NewInt(61).Text(62) == "Z", 62 == "10", 255 == "47".
        assert_eq!(base62_decode("Z").unwrap(), vec![61]);
        assert_eq!(base62_decode("10").unwrap(), vec![62]);
        assert_eq!(base62_decode("47").unwrap(), vec![255]);
        assert!(base62_decode("a-b").is_none());
        let raw = b"1:c29tZSBjaXBoZXJ0ZXh0".to_vec();
        assert_eq!(base62_decode(&base62_encode(&raw)).unwrap(), raw);
    }

    #[test]
    fn decrypts_a_name_encrypted_the_keysutil_way() {
        let key = [7u8; 32];
        let policy_json = serde_json::json!({
            "name": "metadata", "type": 0, "derived": true, "kdf": 1,
            "convergent_encryption": true, "version_template": "{{version}}:",
            "keys": {"1": {"key": B64.encode(key), "hmac_key": null}}
        });
        let policy = NamePolicy::parse(policy_json.to_string().as_bytes()).unwrap();
        // Encrypt "app" under context "metadata/team" as keysutil would.
        let mut derived = [0u8; 32];
        aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[])
            .extract(&key)
            .expand(&[b"metadata/team"], Len(32))
            .unwrap()
            .fill(&mut derived)
            .unwrap();
        let nonce = [9u8; 12];
        let ct = Aes256Gcm::new_from_slice(&derived)
            .unwrap()
            .encrypt(Nonce::from_slice(&nonce), &b"app"[..])
            .unwrap();
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&ct);
        let stored = base62_encode(format!("1:{}", B64.encode(raw)).as_bytes());
        assert_eq!(
            policy.decrypt_name("metadata/team", &stored).unwrap(),
            "app"
        );
        assert!(policy.decrypt_name("metadata", &stored).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_names_never_panic(name in "[0-9a-zA-Z]{0,200}", raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let key = B64.encode([1u8; 32]);
            let json = format!(r#"{{"type":0,"derived":true,"kdf":1,"version_template":"{{{{version}}}}:","keys":{{"1":{{"key":"{key}"}}}}}}"#);
            let policy = NamePolicy::parse(json.as_bytes()).unwrap();
            let _ = policy.decrypt_name("metadata", &name);
            let _ = NamePolicy::parse(&raw);
        }
    }
}
