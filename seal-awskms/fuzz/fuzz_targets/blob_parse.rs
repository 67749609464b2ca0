//! Stored seal blobs are attacker-controlled: parsing any bytes, with or
//! without a valid awskms header, must return a value or an error, never
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seal_awskms::AwsKmsSeal;
use seal_core::{SealType, blob};

fuzz_target!(|data: &[u8]| {
    let _ = AwsKmsSeal::blob_key_id(data);
    let _ = AwsKmsSeal::blob_key_id(&blob::encode(SealType::AwsKms, data));
});
