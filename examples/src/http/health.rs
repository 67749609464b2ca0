//! `sys/health`: the status code a probe sees, with Vault's overrides.
//!
//! Load balancers and Kubernetes probes only look at the code, so Vault lets
//! the caller choose it per state: `?standbyok=true&sealedcode=204&uninitcode=204`
//! is a common liveness probe, the defaults a readiness probe.
//! Precedence (Vault's): uninitialized → sealed → performance standby (unless
//! `perfstandbyok`) → standby (unless `standbyok`) → active.

use std::collections::BTreeMap;

use strongroom::HealthStatus;

use super::response::HttpError;

/// The codes to answer with, after the request's overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthCodes {
    active: u16,
    standby: u16,
    perf_standby: u16,
    sealed: u16,
    uninit: u16,
    standby_ok: bool,
    perf_standby_ok: bool,
}

impl Default for HealthCodes {
    fn default() -> Self {
        HealthCodes {
            active: 200,
            standby: 429,
            perf_standby: 473,
            sealed: 503,
            uninit: 501,
            standby_ok: false,
            perf_standby_ok: false,
        }
    }
}

/// Go's `strconv.ParseBool`, plus Vault's bare `?standbyok` meaning true.
fn parse_bool(name: &str, value: &str) -> Result<bool, HttpError> {
    match value {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(HttpError::bad_request(format!(
            "bad value for {name} parameter: {value:?} is not a boolean"
        ))),
    }
}

fn parse_code(name: &str, value: &str) -> Result<u16, HttpError> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|code| (100..=599).contains(code))
        .ok_or_else(|| {
            HttpError::bad_request(format!(
                "bad value for {name} parameter: {value:?} is not an HTTP status code (100-599)"
            ))
        })
}

impl HealthCodes {
    /// Reads the overrides from the query string.
    ///
    /// # Errors
    ///
    /// 400 for a code that is not a number in 100..=599 or a flag that is
    /// not a boolean.
    pub(crate) fn from_query(query: &BTreeMap<String, String>) -> Result<Self, HttpError> {
        let mut codes = HealthCodes::default();
        for (name, value) in query {
            match name.as_str() {
                "standbyok" => codes.standby_ok = parse_bool(name, value)?,
                "perfstandbyok" => codes.perf_standby_ok = parse_bool(name, value)?,
                "activecode" => codes.active = parse_code(name, value)?,
                "standbycode" => codes.standby = parse_code(name, value)?,
                "performancestandbycode" => codes.perf_standby = parse_code(name, value)?,
                "sealedcode" => codes.sealed = parse_code(name, value)?,
                "uninitcode" => codes.uninit = parse_code(name, value)?,
                // Vault's DR/removed/HA-health codes: validated, but these
                // states do not exist here.
                "drsecondarycode" | "haunhealthycode" | "removedcode" => {
                    parse_code(name, value)?;
                }
                _ => {}
            }
        }
        Ok(codes)
    }

    /// The status code for a health snapshot.
    pub(crate) fn code_for(&self, health: &HealthStatus) -> u16 {
        if !health.initialized {
            self.uninit
        } else if health.sealed {
            self.sealed
        } else if health.performance_standby && !self.perf_standby_ok {
            self.perf_standby
        } else if health.standby && !self.standby_ok {
            self.standby
        } else {
            self.active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(initialized: bool, sealed: bool, standby: bool) -> HealthStatus {
        HealthStatus {
            initialized,
            sealed,
            standby,
            performance_standby: false,
            replication_performance_mode: "disabled".into(),
            replication_dr_mode: "disabled".into(),
            server_time_utc: 0,
            version: "0".into(),
            enterprise: false,
            cluster_name: None,
            cluster_id: None,
        }
    }

    fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn default_codes_follow_vault() {
        let codes = HealthCodes::default();
        assert_eq!(codes.code_for(&health(true, false, false)), 200);
        assert_eq!(codes.code_for(&health(true, false, true)), 429);
        assert_eq!(codes.code_for(&health(true, true, false)), 503);
        assert_eq!(codes.code_for(&health(false, true, false)), 501);
    }

    #[test]
    fn overrides_change_the_codes() {
        let codes = HealthCodes::from_query(&query(&[
            ("standbyok", "true"),
            ("sealedcode", "204"),
            ("uninitcode", "204"),
            ("activecode", "299"),
        ]))
        .unwrap();
        assert_eq!(codes.code_for(&health(true, false, true)), 299);
        assert_eq!(codes.code_for(&health(true, true, false)), 204);
        assert_eq!(codes.code_for(&health(false, true, false)), 204);
        let codes = HealthCodes::from_query(&query(&[("standbycode", "200")])).unwrap();
        assert_eq!(codes.code_for(&health(true, false, true)), 200);
        let codes = HealthCodes::from_query(&query(&[("standbyok", "")])).unwrap();
        assert_eq!(codes.code_for(&health(true, false, true)), 200);
    }

    #[test]
    fn uninitialized_takes_precedence_over_sealed() {
        let codes = HealthCodes::from_query(&query(&[("sealedcode", "200")])).unwrap();
        assert_eq!(codes.code_for(&health(false, true, false)), 501);
    }

    #[test]
    fn bad_values_are_400() {
        for (k, v) in [
            ("sealedcode", "abc"),
            ("activecode", "99"),
            ("uninitcode", "600"),
            ("standbyok", "maybe"),
            ("drsecondarycode", "x"),
        ] {
            let err = HealthCodes::from_query(&query(&[(k, v)])).unwrap_err();
            assert_eq!(err.status, 400, "{k}={v}");
            assert!(err.errors[0].contains(k), "{err:?}");
        }
    }
}
