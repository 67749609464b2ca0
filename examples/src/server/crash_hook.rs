//! TEST-ONLY: a crash at a named seal-migration step.
//!
//! With `STRONGROOM_TEST_CRASH_AFTER_MIGRATION_STEP=<step>` in the
//! environment (a name from `strongroom::MigrationStep`, e.g.
//! `shamir-to-auto:keyring-rekeyed`), the server aborts the process right
//! after that durable step, as `kill -9` there would. The crash-safety tests
//! use it to stop a migration at every step boundary and check that the
//! restarted node unseals and finishes. Never set it in production; the
//! server logs a warning at start when it is set.

use std::ops::ControlFlow;
use std::sync::Arc;

use strongroom::{MigrationHook, MigrationStep};

use crate::error::Error;

/// The environment variable naming the step to crash after.
pub(crate) const CRASH_AFTER_STEP_ENV: &str = "STRONGROOM_TEST_CRASH_AFTER_MIGRATION_STEP";

/// The hook the variable asks for, if set.
///
/// # Errors
///
/// [`Error::Usage`] for a step name that does not exist.
pub(crate) fn from_env() -> Result<Option<MigrationHook>, Error> {
    let Ok(name) = std::env::var(CRASH_AFTER_STEP_ENV) else {
        return Ok(None);
    };
    let step = MigrationStep::from_name(name.trim()).ok_or_else(|| {
        Error::Usage(format!(
            "{CRASH_AFTER_STEP_ENV}={name:?} is not a migration step; known: {}",
            MigrationStep::ALL.map(MigrationStep::as_str).join(", ")
        ))
    })?;
    tracing::warn!(
        step = step.as_str(),
        "TEST-ONLY {CRASH_AFTER_STEP_ENV} is set: the process aborts after this seal migration step"
    );
    Ok(Some(Arc::new(move |done: MigrationStep| {
        if done == step {
            eprintln!("{CRASH_AFTER_STEP_ENV}: aborting after seal migration step {done}");
            std::process::abort();
        }
        ControlFlow::Continue(())
    })))
}
