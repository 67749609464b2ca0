//! Property tests: decrypt never panics on arbitrary bytes, and every
//! value round-trips under every path, for each backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use barrier::{AeadBackend, Barrier, BarrierError};
use proptest::prelude::*;

fn barrier(backend: AeadBackend) -> Barrier {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (_, b, _) = rt.block_on(common::unsealed(backend));
    rt.block_on(async {
        b.rotate().await.unwrap();
    });
    b
}

fn check_arbitrary(b: &Barrier, path: &str, bytes: &[u8]) {
    match b.decrypt(path, bytes) {
        Err(
            BarrierError::TooShort { .. }
            | BarrierError::UnknownVersion { .. }
            | BarrierError::UnknownTerm { .. }
            | BarrierError::Decrypt,
        ) => {}
        Ok(_) => panic!("random bytes authenticated"),
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

/// Bytes that get past the cheap checks: a valid header for a term the
/// keyring holds (1 or 2), then random nonce, body and tag.
fn plausible_entry() -> impl Strategy<Value = Vec<u8>> {
    (1u32..=2, proptest::collection::vec(any::<u8>(), 28..200)).prop_map(|(term, rest)| {
        let mut v = term.to_be_bytes().to_vec();
        v.push(0x02);
        v.extend(rest);
        v
    })
}

fn path() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9_./ é-]{0,40}").unwrap()
}

macro_rules! properties {
    ($module:ident, $feature:literal, $backend:expr) => {
        #[cfg(feature = $feature)]
        mod $module {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(512))]

                #[test]
                fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), p in path()) {
                    thread_local!(static B: Barrier = barrier($backend));
                    B.with(|b| check_arbitrary(b, &p, &bytes));
                }

                #[test]
                fn plausible_forgeries_are_refused(bytes in plausible_entry(), p in path()) {
                    thread_local!(static B: Barrier = barrier($backend));
                    B.with(|b| check_arbitrary(b, &p, &bytes));
                }

                #[test]
                fn round_trip(value in proptest::collection::vec(any::<u8>(), 0..5000), p in path(), other in path()) {
                    thread_local!(static B: Barrier = barrier($backend));
                    B.with(|b| {
                        let ct = b.encrypt(&p, &value).unwrap();
                        prop_assert_eq!(ct.len(), value.len() + barrier::OVERHEAD);
                        prop_assert_eq!(&*b.decrypt(&p, &ct).unwrap(), &value[..]);
                        if other != p {
                            prop_assert!(matches!(b.decrypt(&other, &ct), Err(BarrierError::Decrypt)));
                        }
                        Ok(())
                    })?;
                }
            }
        }
    };
}

properties!(aws_lc, "aws-lc", AeadBackend::AwsLc);
properties!(rustcrypto, "rustcrypto", AeadBackend::RustCrypto);
