//! Retry warnings name the operation, key and cause, and never the ACL
//! token.
//!
//! Its own test binary on purpose: the subscriber is the process-wide
//! default. A thread-scoped one (`set_default`) misses events now and then
//! while other tests in the same binary hit the same `warn!` callsite
//! (tracing caches each callsite's interest globally), which made this
//! check flaky.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use seal_core::Storage;
use testkit::consul::{isolated, shared_dev};
use testkit::proxy::{Fault, FaultProxy};

/// Retries log a warning with the operation, key and cause, and neither the
/// warnings nor the errors ever contain the ACL token.
#[tokio::test(flavor = "current_thread")]
async fn retry_logs_never_contain_the_token() {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Buffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dev = shared_dev();
    let secret = format!("token-{}", uuid::Uuid::new_v4());
    let front = FaultProxy::start(
        dev.http_address(),
        Vec::new(),
        Fault::Respond(503, "rate limit exceeded"),
    )
    .await;
    let (storage, _guard) = isolated(dev, |c| {
        c.address = front.address.clone();
        c.max_retries = 2;
        c.token = Some(storage_consul::ConsulToken::new(secret.clone()));
    });
    let err = storage.put("logged/key", b"v").await.unwrap_err();
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying") && logs.contains("logged/key"),
        "{logs}"
    );
    assert!(!logs.contains(&secret), "token in logs:\n{logs}");
    assert!(!format!("{err} {err:?} {storage:?}").contains(&secret));
}
