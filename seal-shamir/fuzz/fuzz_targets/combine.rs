//! Shares are attacker-controlled bytes: any set of parts combines to a
//! value one byte shorter than the parts or errors, and feeding the parts to
//! `UnsealProgress` never panics. Input layout: threshold byte, part-length
//! byte, then the parts back to back (a short last part tests mismatched
//! lengths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use seal_core::UnsealShare;
use seal_shamir::UnsealProgress;

fuzz_target!(|data: &[u8]| {
    let [threshold, part_len, rest @ ..] = data else {
        return;
    };
    let parts: Vec<&[u8]> = rest.chunks(usize::from(*part_len).max(1)).collect();
    if let Ok(secret) = seal_shamir::combine_bytes(&parts) {
        assert_eq!(secret.len() + 1, parts[0].len());
    }
    let progress = UnsealProgress::new();
    for part in &parts {
        if let Ok(share) = UnsealShare::from_bytes(part) {
            let _ = progress.submit(share, usize::from(*threshold));
        }
    }
});
