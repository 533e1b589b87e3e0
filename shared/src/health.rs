//! The health vocabulary shared by course-service (which answers) and the proxy (which probes).
//!
//! `/healthz` answers "is the process alive?" and never touches a dependency, so a slow database
//! cannot make the proxy eject every instance at once. `/readyz` answers "can it serve?" and
//! checks dependencies with a short deadline.

use serde::{Deserialize, Serialize};

/// Path of the liveness endpoint, probed by the proxy's active health checks.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Path of the readiness endpoint.
pub const READYZ_PATH: &str = "/readyz";

/// Overall state reported by `/healthz` and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Alive (healthz) or able to serve (readyz): HTTP 200.
    Ok,
    /// Not able to serve: HTTP 503.
    Unavailable,
}

/// One dependency's state in a `/readyz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. `"mongodb"`.
    pub name: String,
    /// Its state.
    pub status: Status,
    /// Why it is unavailable, for the operator reading the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The JSON body of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Overall state: `Ok` only if every check is `Ok`.
    pub status: Status,
    /// The individual checks (empty for `/healthz`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

impl Report {
    /// The liveness answer: the process is up.
    pub fn alive() -> Self {
        Report {
            status: Status::Ok,
            checks: Vec::new(),
        }
    }

    /// A readiness answer from its checks: `Ok` only if all are.
    pub fn from_checks(checks: Vec<Check>) -> Self {
        let status = if checks.iter().all(|c| c.status == Status::Ok) {
            Status::Ok
        } else {
            Status::Unavailable
        };
        Report { status, checks }
    }

    /// The HTTP status code this report is served with.
    pub fn http_status(&self) -> u16 {
        match self.status {
            Status::Ok => 200,
            Status::Unavailable => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_check_makes_the_report_unavailable() {
        let ok = Check {
            name: "a".into(),
            status: Status::Ok,
            error: None,
        };
        let bad = Check {
            name: "mongodb".into(),
            status: Status::Unavailable,
            error: Some("timed out".into()),
        };
        assert_eq!(Report::from_checks(vec![ok.clone()]).http_status(), 200);
        let report = Report::from_checks(vec![ok, bad]);
        assert_eq!(report.http_status(), 503);
        let json = serde_json::to_string(&report).expect("report serialises");
        assert!(json.contains("unavailable"), "{json}");
    }
}
