//! Budgets and usage: [`RunBudget`] (what a run may spend, with the one set
//! of defaults), [`BudgetRequest`] (a budget with unset fields, as submits,
//! manifests and CLI flags give it), [`ModelPrice`] (the price table entry
//! cost budgets use) and [`Usage`] (the report every run ends with).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What one run may spend. The node clamps a requested budget to its own
/// maxima with [`RunBudget::clamp_to`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunBudget {
    /// Wall time, including time spent inside host calls.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Fuel (roughly, wasm instructions); `None` for no CPU budget.
    pub fuel: Option<u64>,
    /// Linear memory, in bytes, per memory of the instance.
    pub max_memory_bytes: u64,
    /// LLM tokens (prompt + completion); `None` for no token budget.
    pub max_tokens: Option<u64>,
    /// LLM spend in USD, priced by the node's price table.
    pub max_cost_usd: Option<f64>,
    /// Outgoing HTTP requests.
    pub max_http_requests: u32,
    /// Bytes of HTTP response bodies, over all requests.
    pub max_http_response_bytes: u64,
    /// Bytes of the value `run` returns.
    pub max_output_bytes: u64,
    /// Bytes of logs, stdout and stderr together.
    pub max_log_bytes: u64,
    /// Bytes of the scratch directory (file sizes, plus 4 KiB per file,
    /// directory or link), when the run is granted one.
    pub max_disk_bytes: u64,
}

impl Default for RunBudget {
    /// The budget of a run that sets nothing: the one set of defaults, used
    /// by `warden run`, submits, manifests and nodes alike.
    fn default() -> Self {
        RunBudget {
            timeout: Duration::from_secs(30),
            fuel: None,
            max_memory_bytes: 64 << 20,
            max_tokens: None,
            max_cost_usd: None,
            max_http_requests: 100,
            max_http_response_bytes: 16 << 20,
            max_output_bytes: 1 << 20,
            max_log_bytes: 1 << 20,
            max_disk_bytes: 64 << 20,
        }
    }
}

/// A budget value that makes no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    #[error("{0} must be more than 0")]
    Zero(&'static str),
    #[error("max_cost_usd must be a finite number of dollars, 0 or more; got {0}")]
    Cost(f64),
}

fn check_cost(cost: Option<f64>) -> Result<(), BudgetError> {
    match cost {
        Some(c) if !c.is_finite() || c < 0.0 => Err(BudgetError::Cost(c)),
        _ => Ok(()),
    }
}

impl RunBudget {
    /// Refuses nonsense: a zero timeout or memory, a cost that is NaN,
    /// infinite or negative.
    pub fn check(&self) -> Result<(), BudgetError> {
        BudgetRequest::from(self).check()
    }

    /// This budget, with every limit no larger than `max`'s. A cost that is
    /// not a number never wins: the other side's limit holds.
    pub fn clamp_to(&self, max: &RunBudget) -> RunBudget {
        fn opt_min<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                // `b < a` is false for NaN; so is `a <= a`.
                (Some(a), Some(b)) => Some(if b < a || a.partial_cmp(&a).is_none() {
                    b
                } else {
                    a
                }),
                (a, None) => a,
                (None, b) => b,
            }
        }
        RunBudget {
            timeout: self.timeout.min(max.timeout),
            fuel: opt_min(self.fuel, max.fuel),
            max_memory_bytes: self.max_memory_bytes.min(max.max_memory_bytes),
            max_tokens: opt_min(self.max_tokens, max.max_tokens),
            max_cost_usd: opt_min(self.max_cost_usd, max.max_cost_usd),
            max_http_requests: self.max_http_requests.min(max.max_http_requests),
            max_http_response_bytes: self
                .max_http_response_bytes
                .min(max.max_http_response_bytes),
            max_output_bytes: self.max_output_bytes.min(max.max_output_bytes),
            max_log_bytes: self.max_log_bytes.min(max.max_log_bytes),
            max_disk_bytes: self.max_disk_bytes.min(max.max_disk_bytes),
        }
    }
}

/// A budget with unset fields: what a submit, a capability manifest's
/// `[budget]` or the CLI's flags say. Layers combine with [`Self::or`];
/// [`Self::resolve`] fills what is still unset from [`RunBudget::default`].
/// For `fuel`, `max_tokens` and `max_cost_usd` unset means "no limit"
/// unless a lower layer sets one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct BudgetRequest {
    /// Wall time, as a duration: `30s`, `5m`, `1h 30m`.
    #[serde(with = "duration_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    pub max_memory_bytes: Option<u64>,
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    pub max_http_requests: Option<u32>,
    pub max_http_response_bytes: Option<u64>,
    pub max_output_bytes: Option<u64>,
    pub max_log_bytes: Option<u64>,
    pub max_disk_bytes: Option<u64>,
}

impl BudgetRequest {
    /// Refuses nonsense: a zero timeout or memory, a cost that is NaN,
    /// infinite or negative. (Integer fields cannot be negative, and sizes
    /// too large for them are refused where they are parsed.)
    pub fn check(&self) -> Result<(), BudgetError> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(BudgetError::Zero("timeout"));
        }
        if self.max_memory_bytes == Some(0) {
            return Err(BudgetError::Zero("max_memory_bytes"));
        }
        check_cost(self.max_cost_usd)
    }

    /// Each field of `self`, or `fallback`'s where `self` leaves it unset.
    pub fn or(&self, fallback: &BudgetRequest) -> BudgetRequest {
        BudgetRequest {
            timeout: self.timeout.or(fallback.timeout),
            fuel: self.fuel.or(fallback.fuel),
            max_memory_bytes: self.max_memory_bytes.or(fallback.max_memory_bytes),
            max_tokens: self.max_tokens.or(fallback.max_tokens),
            max_cost_usd: self.max_cost_usd.or(fallback.max_cost_usd),
            max_http_requests: self.max_http_requests.or(fallback.max_http_requests),
            max_http_response_bytes: self
                .max_http_response_bytes
                .or(fallback.max_http_response_bytes),
            max_output_bytes: self.max_output_bytes.or(fallback.max_output_bytes),
            max_log_bytes: self.max_log_bytes.or(fallback.max_log_bytes),
            max_disk_bytes: self.max_disk_bytes.or(fallback.max_disk_bytes),
        }
    }

    /// The budget, with what is unset taken from [`RunBudget::default`].
    pub fn resolve(&self) -> RunBudget {
        let d = RunBudget::default();
        RunBudget {
            timeout: self.timeout.unwrap_or(d.timeout),
            fuel: self.fuel.or(d.fuel),
            max_memory_bytes: self.max_memory_bytes.unwrap_or(d.max_memory_bytes),
            max_tokens: self.max_tokens.or(d.max_tokens),
            max_cost_usd: self.max_cost_usd.or(d.max_cost_usd),
            max_http_requests: self.max_http_requests.unwrap_or(d.max_http_requests),
            max_http_response_bytes: self
                .max_http_response_bytes
                .unwrap_or(d.max_http_response_bytes),
            max_output_bytes: self.max_output_bytes.unwrap_or(d.max_output_bytes),
            max_log_bytes: self.max_log_bytes.unwrap_or(d.max_log_bytes),
            max_disk_bytes: self.max_disk_bytes.unwrap_or(d.max_disk_bytes),
        }
    }
}

impl From<&RunBudget> for BudgetRequest {
    fn from(b: &RunBudget) -> Self {
        BudgetRequest {
            timeout: Some(b.timeout),
            fuel: b.fuel,
            max_memory_bytes: Some(b.max_memory_bytes),
            max_tokens: b.max_tokens,
            max_cost_usd: b.max_cost_usd,
            max_http_requests: Some(b.max_http_requests),
            max_http_response_bytes: Some(b.max_http_response_bytes),
            max_output_bytes: Some(b.max_output_bytes),
            max_log_bytes: Some(b.max_log_bytes),
            max_disk_bytes: Some(b.max_disk_bytes),
        }
    }
}

/// Price of one model, in USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl ModelPrice {
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_mtok
            + completion_tokens as f64 * self.output_per_mtok)
            / 1e6
    }

    pub fn per_prompt_token(&self) -> f64 {
        self.input_per_mtok / 1e6
    }

    pub fn per_completion_token(&self) -> f64 {
        self.output_per_mtok / 1e6
    }
}

/// What a run used. Reported with every result, success or failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub wall_time_ms: f64,
    /// `None` when fuel metering is off on this engine.
    pub fuel_used: Option<u64>,
    pub peak_memory_bytes: u64,
    pub llm_calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub http_requests: u64,
    pub http_response_bytes: u64,
    pub log_bytes: u64,
    /// Most bytes the scratch directory held (as `max_disk_bytes` counts).
    pub disk_bytes: u64,
    /// Calls out of the guest into the host: host functions, and the
    /// runtime's own (memory growth, time checks). Each also costs
    /// [`HOST_CALL_FUEL`] fuel.
    #[serde(default)]
    pub host_calls: u64,
}

/// Fuel each call into the host costs on top of the guest's instructions,
/// so that a fuel budget bounds host calls as it bounds instructions (a
/// cheap host call does about as much work as this many instructions).
pub const HOST_CALL_FUEL: u64 = 100;

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// `Duration` as a humantime string ("30s", "1m 30s") in TOML and JSON.
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 30s: {e}"))
        })
    }
}

/// `Option<Duration>` as an optional humantime string.
mod duration_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 30s: {e}"))
        })
    }
}

/// Parses a byte size: `65536`, `64KiB`, `64MiB`, `1GiB`, `10MB`, `1.5 GiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = num * mult as f64;
    if bytes >= u64::MAX as f64 {
        return Err(format!("`{text}` is too large a size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("10MB").unwrap(), 10_000_000);
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
        for bad in ["-1", "NaN", "inf", "1e3"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        let e = parse_bytes("99999999999999GiB").unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn clamp_takes_the_smaller_limit() {
        let node = RunBudget {
            timeout: Duration::from_secs(10),
            fuel: Some(1000),
            max_tokens: None,
            ..RunBudget::default()
        };
        let asked = RunBudget {
            timeout: Duration::from_secs(60),
            fuel: None,
            max_tokens: Some(5),
            ..RunBudget::default()
        };
        let b = asked.clamp_to(&node);
        assert_eq!(b.timeout, Duration::from_secs(10));
        assert_eq!(b.fuel, Some(1000));
        assert_eq!(b.max_tokens, Some(5));
    }

    #[test]
    fn layers_fill_only_what_is_unset_then_the_defaults() {
        let flags = BudgetRequest {
            max_tokens: Some(5),
            ..BudgetRequest::default()
        };
        let manifest: BudgetRequest =
            toml::from_str("timeout = \"2m\"\nmax_tokens = 100\nfuel = 7").unwrap();
        let b = flags.or(&manifest).resolve();
        assert_eq!(b.timeout, Duration::from_secs(120));
        assert_eq!(b.max_tokens, Some(5));
        assert_eq!(b.fuel, Some(7));
        assert_eq!(b.max_memory_bytes, RunBudget::default().max_memory_bytes);
        assert_eq!(BudgetRequest::default().resolve(), RunBudget::default());
        let full = RunBudget {
            fuel: Some(1),
            ..RunBudget::default()
        };
        assert_eq!(BudgetRequest::from(&full).resolve(), full);
        let err = toml::from_str::<BudgetRequest>("timeout = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn nonsense_is_refused() {
        let cost = |c: f64| BudgetRequest {
            max_cost_usd: Some(c),
            ..BudgetRequest::default()
        };
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.01] {
            let e = cost(bad).check().unwrap_err().to_string();
            assert!(e.contains("max_cost_usd"), "{e}");
        }
        assert!(cost(0.0).check().is_ok());
        let zero_time = BudgetRequest {
            timeout: Some(Duration::ZERO),
            ..BudgetRequest::default()
        };
        assert_eq!(zero_time.check(), Err(BudgetError::Zero("timeout")));
        assert!(RunBudget::default().check().is_ok());
    }

    fn any_cost() -> impl proptest::strategy::Strategy<Value = Option<f64>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(None),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(f64::NEG_INFINITY)),
            any::<f64>().prop_map(Some),
            (0.0..1e6f64).prop_map(Some),
        ]
    }

    fn any_budget() -> impl proptest::strategy::Strategy<Value = RunBudget> {
        use proptest::prelude::*;
        (
            (
                any::<u32>(),
                any::<Option<u64>>(),
                any::<u64>(),
                any::<Option<u64>>(),
            ),
            any_cost(),
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()),
            any::<u64>(),
        )
            .prop_map(
                |((ms, fuel, mem, tokens), cost, (reqs, http, out, log), disk)| RunBudget {
                    timeout: Duration::from_millis(u64::from(ms)),
                    fuel,
                    max_memory_bytes: mem,
                    max_tokens: tokens,
                    max_cost_usd: cost,
                    max_http_requests: reqs,
                    max_http_response_bytes: http,
                    max_output_bytes: out,
                    max_log_bytes: log,
                    max_disk_bytes: disk,
                },
            )
    }

    proptest::proptest! {
        /// Whatever a run asks for, NaN and infinities included, the clamp
        /// never exceeds a valid node maximum.
        #[test]
        fn the_clamp_never_exceeds_a_valid_maximum(asked in any_budget(), max in any_budget()) {
            proptest::prop_assume!(max.check().is_ok());
            let b = asked.clamp_to(&max);
            proptest::prop_assert!(b.timeout <= max.timeout);
            proptest::prop_assert!(b.max_memory_bytes <= max.max_memory_bytes);
            proptest::prop_assert!(b.max_http_requests <= max.max_http_requests);
            proptest::prop_assert!(b.max_http_response_bytes <= max.max_http_response_bytes);
            proptest::prop_assert!(b.max_output_bytes <= max.max_output_bytes);
            proptest::prop_assert!(b.max_log_bytes <= max.max_log_bytes);
            proptest::prop_assert!(b.max_disk_bytes <= max.max_disk_bytes);
            if let Some(limit) = max.fuel {
                proptest::prop_assert!(b.fuel.is_some_and(|f| f <= limit));
            }
            if let Some(limit) = max.max_tokens {
                proptest::prop_assert!(b.max_tokens.is_some_and(|t| t <= limit));
            }
            if let Some(limit) = max.max_cost_usd {
                let cost = b.max_cost_usd.unwrap();
                proptest::prop_assert!(cost <= limit, "{cost} > {limit}");
            }
        }
    }
}
