//! The alerts panel: what the deployment's Prometheus role says is firing or pending, read
//! from its `GET /api/v1/alerts` by the scrape loop (every few seconds, with the scrape's
//! timeout and body cap) when the deployment runs one (`[observe] prometheus = true`). Only
//! the first [`SHOWN`] alerts are kept, firing before pending, each with the few fields the
//! page draws.

use serde::Serialize;

/// The most alerts a snapshot carries.
pub const SHOWN: usize = 20;
/// The longest text kept of a name, a label or an annotation.
const MAX_TEXT: usize = 200;

/// One alert as the page draws it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    pub name: String,
    /// `firing` or `pending`.
    pub state: String,
    pub severity: String,
    /// The objective and its indicator (`api availability`), from the `slo` and `sli` labels
    /// the SLO alerts carry.
    pub objective: String,
    pub summary: String,
    /// When its expression first held (RFC 3339), as Prometheus says.
    pub active_at: String,
}

/// The panel: which Prometheus was asked and what it answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertsView {
    /// The Prometheus role asked.
    pub source: String,
    /// Why there is no answer, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every alert Prometheus has, before [`SHOWN`] cut the list.
    pub total: usize,
    pub alerts: Vec<AlertView>,
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("").chars().take(MAX_TEXT).collect()
}

/// The panel from Prometheus's answer (`body`, or none when it did not answer in time).
pub fn view_of(source: &str, body: Option<&str>) -> AlertsView {
    let mut view = AlertsView {
        source: source.to_string(),
        error: None,
        total: 0,
        alerts: Vec::new(),
    };
    let Some(body) = body else {
        view.error = Some(format!(
            "{source} did not answer GET /api/v1/alerts in time."
        ));
        return view;
    };
    let doc: serde_json::Value = match serde_json::from_str(body) {
        Ok(doc) => doc,
        Err(_) => {
            view.error = Some(format!("{source}'s /api/v1/alerts is not JSON."));
            return view;
        }
    };
    let Some(all) = doc["data"]["alerts"].as_array() else {
        view.error = Some(format!(
            "{source}'s /api/v1/alerts has no data.alerts: {}",
            text(&doc["error"])
        ));
        return view;
    };
    view.total = all.len();
    let mut alerts: Vec<AlertView> = all
        .iter()
        .map(|a| AlertView {
            name: text(&a["labels"]["alertname"]),
            state: text(&a["state"]),
            severity: text(&a["labels"]["severity"]),
            objective: format!(
                "{} {}",
                text(&a["labels"]["slo"]),
                text(&a["labels"]["sli"])
            )
            .trim()
            .to_string(),
            summary: text(&a["annotations"]["summary"]),
            active_at: text(&a["activeAt"]),
        })
        .collect();
    // Firing first, then the longest active (RFC 3339 times sort as text).
    alerts.sort_by(|a, b| {
        (b.state == "firing")
            .cmp(&(a.state == "firing"))
            .then_with(|| a.active_at.cmp(&b.active_at))
    });
    alerts.truncate(SHOWN);
    view.alerts = alerts;
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_alerts_come_first_and_the_list_is_bounded() {
        let alert = |name: &str, state: &str, at: &str| {
            serde_json::json!({"labels": {"alertname": name, "severity": "page", "slo": "api", "sli": "availability"},
                "annotations": {"summary": format!("{name} burns")}, "state": state,
                "activeAt": at, "value": "1e+00"})
        };
        let mut list = vec![
            alert("ApiLatencyBurn", "pending", "2026-01-01T00:00:00Z"),
            alert("ApiAvailabilityBurn", "firing", "2026-01-01T00:00:05Z"),
        ];
        for i in 0..SHOWN {
            list.push(alert(
                &format!("Other{i}"),
                "pending",
                "2026-01-01T00:01:00Z",
            ));
        }
        let doc = serde_json::json!({"status": "success", "data": {"alerts": list}});
        let view = view_of("prometheus-1", Some(&doc.to_string()));
        assert_eq!(view.error, None);
        assert_eq!(view.total, SHOWN + 2);
        assert_eq!(view.alerts.len(), SHOWN, "bounded");
        assert_eq!(view.alerts[0].name, "ApiAvailabilityBurn");
        assert_eq!(view.alerts[0].state, "firing");
        assert_eq!(view.alerts[0].summary, "ApiAvailabilityBurn burns");
        assert_eq!(
            (
                view.alerts[0].severity.as_str(),
                view.alerts[0].objective.as_str()
            ),
            ("page", "api availability")
        );
        assert_eq!(
            view.alerts[1].name, "ApiLatencyBurn",
            "the longest pending next"
        );
    }

    #[test]
    fn no_answer_or_a_bad_one_is_said_not_hidden() {
        let view = view_of("prometheus-1", None);
        assert!(
            view.error
                .as_deref()
                .is_some_and(|e| e.contains("prometheus-1"))
        );
        let view = view_of("prometheus-1", Some("<html>"));
        assert!(view.error.is_some());
        let view = view_of("prometheus-1", Some(r#"{"status":"error","error":"boom"}"#));
        assert!(view.error.as_deref().is_some_and(|e| e.contains("boom")));
        let view = view_of(
            "prometheus-1",
            Some(r#"{"status":"success","data":{"alerts":[]}}"#),
        );
        assert_eq!((view.error, view.total), (None, 0));
    }
}
