//! Warden's shared vocabulary, one home per concept, used by the host, the
//! node, the control plane and the CLI alike:
//!
//! - [`failure`]: [`FailureKind`] with its fixed `retryable` flag, and
//!   [`RunFailure`];
//! - [`budget`]: [`RunBudget`] and the one set of defaults,
//!   [`BudgetRequest`] (layers with unset fields), [`Usage`], [`ModelPrice`];
//! - [`pattern`]: the one HTTP pattern language ([`HttpPattern`], its
//!   `covers` rule, the runtime [`HttpPolicy`]);
//! - [`grant`]: [`Grant`], model allow-lists and the node's [`NodePolicy`];
//! - [`manifest`]: the capability [`Manifest`] and [`grant_for`];
//! - [`reference`]: `NAME@VERSION` and `oci://` references, and the agent
//!   name that is also the key-value namespace;
//! - [`state`]: run, attempt, renew and node states as enums;
//! - [`retry`]: the one [`Backoff`] policy; [`id`]: run ids and the clock;
//! - [`wire`]: message limits every peer agrees on;
//! - `proto` (feature `proto`): conversions to and from the wire types.

pub mod budget;
pub mod failure;
pub mod files;
pub mod grant;
pub mod id;
pub mod manifest;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod pattern;
#[cfg(feature = "proto")]
pub mod proto;
pub mod reference;
pub mod retry;
pub mod role;
pub mod state;
pub mod text;
pub mod wire;

#[cfg(test)]
mod fuzz;

/// What Warden's own metrics are named with (`warden_runs_submitted_total`),
/// so they never collide with another program's in a shared Prometheus.
pub const METRICS_PREFIX: &str = "warden";

pub use budget::{
    BudgetError, BudgetRequest, HOST_CALL_FUEL, ModelPrice, RunBudget, Usage, parse_bytes,
};
pub use failure::{FailureKind, RunFailure};
pub use grant::{Grant, NodePolicy, model_allowed};
pub use id::{day_name, new_run_id, now_ms, utc_day};
pub use manifest::{GrantError, Manifest, grant_for};
pub use pattern::{Denied, HttpPattern, HttpPolicy, PatternError};
pub use reference::{agent_name, name_and_version, split_reference};
pub use retry::Backoff;
pub use role::Role;
pub use state::{AttemptOutcome, NodeState, RenewStatus, RunState};
pub use text::{
    NameError, check_label, check_name, cut_text, escape_controls, escape_json_controls,
};
