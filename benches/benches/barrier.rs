//! Barrier benches: the barrier's encrypt and decrypt against the raw AEAD
//! of the same backend, in the same run, for both backends.
//!
//! * `barrier/<backend>/encrypt/<size>` and `.../decrypt/<size>` for 128 B,
//!   4 KiB and 64 KiB; each group has two functions:
//!   - `barrier`: `Barrier::encrypt` / `Barrier::decrypt` — a fresh output
//!     allocated at final size, a random nonce from the OS, the term/version
//!     header, the path as AAD, the encryption counter. For decrypt the
//!     plaintext is moved out of its `Zeroizing` wrapper and dropped
//!     unwiped, which is what `get` does (it returns a plain `Vec`);
//!   - `raw+alloc`: the bare AEAD writing into a fresh `Vec` (encrypt: copy
//!     the plaintext in, seal in place, append the tag; decrypt: a zeroed
//!     `Vec` filled by the open), the least a caller that keeps its input
//!     must do;
//!   - `barrier+wipe` (decrypt only): the same plus dropping the returned
//!     `Zeroizing` buffer, i.e. wiping the plaintext, inside the timing.
//!   - `raw`: the bare AES-256-GCM call on a reused, preallocated buffer
//!     with a fixed nonce — no allocation, no RNG, nothing wiped. aws-lc:
//!     `seal_in_place_separate_tag` / out-of-place `open_separate_gather`;
//!     RustCrypto (in-place only): `encrypt_in_place_detached` /
//!     copy-in + `decrypt_in_place_detached`.
//!
//! The target is barrier throughput at 64 KiB ≥ 0.85× raw.
//!
//! Run: `cargo bench -p benches --bench barrier -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use barrier::{AeadBackend, Barrier};
use criterion::{Criterion, Throughput};
use seal_core::{MemoryStorage, RootKey};

const SIZES: [(usize, &str); 3] = [(128, "128B"), (4096, "4KiB"), (65536, "64KiB")];
const PATH: &str = "logical/0a1b2c3d/secret/app/config";
const KEY: [u8; 32] = [0x42; 32];
const NONCE: [u8; 12] = [0x24; 12];

fn unsealed(backend: AeadBackend) -> Barrier {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let barrier = Barrier::with_backend(Arc::new(MemoryStorage::new()), backend);
    rt.block_on(async {
        let root = RootKey::generate().unwrap_or_else(|e| panic!("root key: {e}"));
        barrier
            .initialize(&root)
            .await
            .unwrap_or_else(|e| panic!("initialize: {e}"));
        barrier
            .unseal(&root)
            .await
            .unwrap_or_else(|e| panic!("unseal: {e}"));
    });
    barrier
}

/// The bare AEAD of one backend, on caller-provided buffers.
trait RawAead {
    /// Encrypts `buf` in place; returns the tag.
    fn seal(&self, buf: &mut [u8]) -> [u8; 16];
    /// Encrypts a copy of `plaintext` into a new `Vec` (ciphertext + tag):
    /// the least any caller that keeps its plaintext must do.
    fn seal_to_vec(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + 16);
        out.extend_from_slice(plaintext);
        let tag = self.seal(&mut out);
        out.extend_from_slice(&tag);
        out
    }
    /// Decrypts `ciphertext` + `tag` into `out` (same length).
    fn open(&self, ciphertext: &[u8], tag: &[u8; 16], out: &mut [u8]);
}

struct AwsLc(aws_lc_rs::aead::LessSafeKey);

impl RawAead for AwsLc {
    fn seal(&self, buf: &mut [u8]) -> [u8; 16] {
        use aws_lc_rs::aead::{Aad, Nonce};
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(NONCE), Aad::from(PATH), buf)
            .unwrap_or_else(|_| panic!("seal"));
        let mut out = [0u8; 16];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open(&self, ciphertext: &[u8], tag: &[u8; 16], out: &mut [u8]) {
        use aws_lc_rs::aead::{Aad, Nonce};
        self.0
            .open_separate_gather(
                Nonce::assume_unique_for_key(NONCE),
                Aad::from(PATH),
                ciphertext,
                tag,
                out,
            )
            .unwrap_or_else(|_| panic!("open"));
    }
}

struct RustCrypto(aes_gcm::Aes256Gcm);

impl RawAead for RustCrypto {
    fn seal(&self, buf: &mut [u8]) -> [u8; 16] {
        use aes_gcm::AeadInPlace;
        let tag = self
            .0
            .encrypt_in_place_detached(&NONCE.into(), PATH.as_bytes(), buf)
            .unwrap_or_else(|_| panic!("seal"));
        tag.into()
    }

    fn open(&self, ciphertext: &[u8], tag: &[u8; 16], out: &mut [u8]) {
        use aes_gcm::AeadInPlace;
        out.copy_from_slice(ciphertext);
        self.0
            .decrypt_in_place_detached(&NONCE.into(), PATH.as_bytes(), out, tag.into())
            .unwrap_or_else(|_| panic!("open"));
    }
}

fn raw_for(backend: AeadBackend) -> Box<dyn RawAead> {
    match backend {
        AeadBackend::AwsLc => {
            use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
            let key = UnboundKey::new(&AES_256_GCM, &KEY).unwrap_or_else(|_| panic!("key"));
            Box::new(AwsLc(LessSafeKey::new(key)))
        }
        AeadBackend::RustCrypto => {
            use aes_gcm::KeyInit;
            Box::new(RustCrypto(aes_gcm::Aes256Gcm::new(&KEY.into())))
        }
        other => panic!("no raw AEAD for {other}"),
    }
}

fn bench_backend(c: &mut Criterion, backend: AeadBackend) {
    let barrier = unsealed(backend);
    let raw = raw_for(backend);
    for (size, label) in SIZES {
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();

        let mut group = c.benchmark_group(format!("barrier/{backend}/encrypt/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function("barrier", |b| {
            b.iter(|| {
                barrier
                    .encrypt(black_box(PATH), black_box(&plaintext))
                    .unwrap_or_else(|e| panic!("encrypt: {e}"))
            });
        });
        let mut buf = plaintext.clone();
        group.bench_function("raw", |b| b.iter(|| raw.seal(black_box(&mut buf))));
        group.bench_function("raw+alloc", |b| {
            b.iter(|| raw.seal_to_vec(black_box(&plaintext)));
        });
        group.finish();

        let entry = barrier
            .encrypt(PATH, &plaintext)
            .unwrap_or_else(|e| panic!("encrypt: {e}"));
        let mut raw_ct = plaintext.clone();
        let tag = raw.seal(&mut raw_ct);
        let mut out = vec![0u8; size];
        let mut group = c.benchmark_group(format!("barrier/{backend}/decrypt/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        // What `get` pays: it moves the plaintext out of the `Zeroizing`
        // wrapper and hands it over unwiped.
        group.bench_function("barrier", |b| {
            b.iter(|| {
                let mut plaintext = barrier
                    .decrypt(black_box(PATH), black_box(&entry))
                    .unwrap_or_else(|e| panic!("decrypt: {e}"));
                std::mem::take(&mut *plaintext)
            });
        });
        // Plus dropping the `Zeroizing` plaintext inside the timing: zeroize
        // wipes a `Vec<u8>` one volatile byte store at a time.
        group.bench_function("barrier+wipe", |b| {
            b.iter(|| {
                barrier
                    .decrypt(black_box(PATH), black_box(&entry))
                    .unwrap_or_else(|e| panic!("decrypt: {e}"))
            });
        });
        group.bench_function("raw", |b| {
            b.iter(|| raw.open(black_box(&raw_ct), &tag, black_box(&mut out)));
        });
        group.bench_function("raw+alloc", |b| {
            b.iter(|| {
                let mut fresh = vec![0u8; size];
                raw.open(black_box(&raw_ct), &tag, &mut fresh);
                fresh
            });
        });
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for &backend in AeadBackend::ALL {
        bench_backend(&mut c, backend);
    }
    c.final_summary();
}
