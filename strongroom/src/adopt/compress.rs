//! Vault's compressed storage values (`helper/compressutil`): one canary
//! byte names the algorithm, the compressed bytes follow; a value without a
//! canary is stored as it is. Vault writes its mount tables (`core/mounts`,
//! `core/auth`, `core/local-*`) as gzip with the canary `G`.

use std::borrow::Cow;
use std::io::Read;

/// Canary bytes Vault puts in front of a compressed value.
const CANARY_GZIP: u8 = b'G';
const CANARY_LZW: u8 = b'L';
const CANARY_SNAPPY: u8 = b'S';
const CANARY_LZ4: u8 = b'4';

/// Largest decompressed value accepted: a mount table is kilobytes; this
/// bounds what a corrupt or hostile value can make us allocate.
const MAX_DECOMPRESSED: u64 = 64 * 1024 * 1024;

/// The stored bytes, decompressed when they carry one of Vault's canaries.
/// JSON starts with `{` or `[`, so plain JSON is never mistaken for a
/// compressed value.
///
/// # Errors
/// A message for a gzip stream that does not decode, one that is larger
/// than 64 MiB, or an algorithm Vault never uses for these values (LZW,
/// Snappy, LZ4).
pub(crate) fn decompress(raw: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    match raw.split_first() {
        Some((&CANARY_GZIP, body)) => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(MAX_DECOMPRESSED + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip-compressed value does not decompress: {e}"))?;
            if out.len() as u64 > MAX_DECOMPRESSED {
                return Err("decompressed value is larger than 64 MiB".to_owned());
            }
            Ok(Cow::Owned(out))
        }
        Some((&c @ (CANARY_LZW | CANARY_SNAPPY | CANARY_LZ4), _)) => Err(format!(
            "value compressed with Vault's {} canary ({:?}), which Strongroom does not read \
             (Vault writes mount tables with gzip)",
            match c {
                CANARY_LZW => "LZW",
                CANARY_SNAPPY => "Snappy",
                _ => "LZ4",
            },
            char::from(c)
        )),
        _ => Ok(Cow::Borrowed(raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(vec![CANARY_GZIP], flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_canary_is_decompressed_and_plain_json_passes() {
        let json = br#"{"type":"mounts","entries":[]}"#;
        assert_eq!(&*decompress(&gzip(json)).unwrap(), json);
        assert_eq!(&*decompress(json).unwrap(), json);
        assert_eq!(&*decompress(b"").unwrap(), b"");
    }

    #[test]
    fn other_canaries_and_broken_streams_are_errors() {
        for raw in [&b"Sabc"[..], b"Labc", b"4abc", b"Gnot gzip"] {
            assert!(decompress(raw).is_err(), "{raw:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decompress(&raw);
            let mut g = vec![CANARY_GZIP];
            g.extend_from_slice(&raw);
            let _ = decompress(&g);
        }
    }
}
