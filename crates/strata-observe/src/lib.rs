//! # strata-observe — the observability tier
//!
//! Tier: observability. Depends on strata-core (telemetry, the readiness line, shutdown) and
//! strata-engines (finding and owning the installed `prometheus`, `promtool` and
//! `prometheus-alertmanager`). No tier
//! depends on it; `strata-deploy` (the `prometheus-1` role, the targets file) and `strata`
//! (`strata status --prometheus-targets`) compose it.
//!
//! Every role already serves `/metrics`. This crate turns those series into answers:
//! - [`slo`]: service level objectives per tier (availability and latency over 30 days), with
//!   documented defaults that name the series the roles really export, and the Prometheus rule
//!   files generated from them: recording rules for the error ratio over 5m … 3d, and the
//!   multiwindow, multi-burn-rate alerts of the SRE workbook;
//! - [`scrape`]: a deployment's `prometheus.yml` and its file-based discovery targets file,
//!   written atomically so that Prometheus follows roles as they move or scale;
//! - [`node`]: `strata prometheus`, the role that runs the installed Prometheus with that
//!   configuration, bounded retention, on loopback;
//! - [`alertmanager`]: `strata alertmanager`, the installed Alertmanager as a role, where that
//!   Prometheus sends firing alerts (to a webhook, or kept and shown), with an always-firing
//!   watchdog alert that proves the path works;
//! - [`daemon`]: what the two engine roles share (a free port, readiness, stopping);
//! - [`yaml`]: the small YAML emitter the generated files are written with.
//!
//! What it guarantees: generated rule files pass `promtool check rules`, and the alerts fire
//! as the burn-rate arithmetic says (the tests run `promtool test rules` on synthetic series).
//! See `docs/observability.md`.

pub mod alertmanager;
pub mod daemon;
pub mod node;
pub mod scrape;
pub mod slo;
pub mod yaml;

pub use node::{PrometheusArgs, run};
pub use slo::{Objective, Objectives};
