//! Share text comes from any client of `sys/unseal`: whatever the bytes,
//! `parse_share` returns a 16..=33-byte share or an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(share) = seal_shamir::parse_share(&text) {
        assert!((16..=33).contains(&share.len()));
    }
});
