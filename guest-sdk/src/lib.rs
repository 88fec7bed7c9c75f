//! Write [Warden](https://example.invalid/warden) agents in Rust.
//!
//! An agent is a WebAssembly component of the `warden:agent/agent` world. With
//! this crate it is a plain function over serde types:
//!
//! ```ignore
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Input { name: String }
//!
//! #[derive(Serialize)]
//! struct Output { greeting: String }
//!
//! #[warden_sdk::agent]
//! fn run(input: Input) -> Result<Output, warden_sdk::Error> {
//!     warden_sdk::log::info(format!("greeting {}", input.name));
//!     Ok(Output { greeting: format!("hello, {}", input.name) })
//! }
//! ```
//!
//! `warden new --lang rust NAME` makes such a crate (type `cdylib`), with
//! the dependency on this SDK that `warden sdk --lang rust` prints:
//!
//! ```toml
//! [dependencies]
//! warden-sdk = { path = "/home/you/.local/share/warden/sdk/0.1.0-…/guest-sdk" }
//! ```
//!
//! `warden build` compiles it (`cargo build --release --target
//! wasm32-wasip2`) into `target/NAME.wasm`, and `warden run .` builds and runs
//! it; `warden run . --llm-script FILE` answers its LLM calls from a script.
//!
//! The agent reaches the world only through what the run was granted:
//! [`llm`] (chat with tools, embeddings), [`http`] (GET/POST over
//! `wasi:http`), [`kv`] (key-value storage in the agent's own namespace),
//! [`config`], [`log`] and [`context`]. Anything not granted returns an
//! error the agent can handle.

pub mod config;
pub mod context;
mod error;
pub mod http;
pub mod kv;
pub mod llm;
pub mod log;

pub use error::{Error, Result};
pub use warden_sdk_macros::agent;

/// Generated bindings and the glue the `agent` macro expands to. Not API.
#[doc(hidden)]
pub mod __private {
    #![allow(unsafe_code, unreachable_pub, missing_docs, clippy::all)]

    wit_bindgen::generate!({
        path: "../wit",
        world: "warden:agent/agent",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "warden_sdk::__private",
        generate_all,
    });

    /// Decodes the JSON input, calls the agent, encodes its output.
    pub fn invoke<I, O, E>(input: &str, f: fn(I) -> Result<O, E>) -> Result<String, String>
    where
        I: serde::de::DeserializeOwned,
        O: serde::Serialize,
        E: core::fmt::Display,
    {
        let text = if input.trim().is_empty() {
            "null"
        } else {
            input
        };
        let input: I = serde_json::from_str(text).map_err(|e| format!("invalid input: {e}"))?;
        let output = f(input).map_err(|e| e.to_string())?;
        serde_json::to_string(&output).map_err(|e| format!("cannot encode the output as JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::__private::invoke;
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Input {
        name: String,
        count: Option<u32>,
        tags: Vec<String>,
    }

    fn echo(input: Input) -> Result<Input, String> {
        Ok(input)
    }

    proptest! {
        /// Run input is whatever a submitter sent: any text either decodes
        /// (and the agent sees it) or is refused as `invalid input`, never
        /// a panic.
        #[test]
        fn fuzz_run_input_decodes_or_is_refused(text in any::<String>()) {
            match invoke(&text, echo) {
                Ok(output) => {
                    let back: Input = serde_json::from_str(&output).unwrap();
                    prop_assert_eq!(back, serde_json::from_str::<Input>(&text).unwrap());
                }
                Err(e) => prop_assert!(e.starts_with("invalid input: "), "{}", e),
            }
        }

        #[test]
        fn fuzz_run_input_json_round_trips(
            name in any::<String>(),
            count in any::<Option<u32>>(),
            tags in proptest::collection::vec(any::<String>(), 0..4),
            noise in "[ \t\r\n]{0,3}",
        ) {
            let input = Input { name, count, tags };
            let text = format!("{noise}{}{noise}", serde_json::to_string(&input).unwrap());
            let output = invoke(&text, echo).unwrap();
            prop_assert_eq!(serde_json::from_str::<Input>(&output).unwrap(), input);
        }
    }

    #[test]
    fn empty_input_is_null() {
        fn unit(_: ()) -> Result<&'static str, String> {
            Ok("ok")
        }
        assert_eq!(invoke("  ", unit).unwrap(), "\"ok\"");
        assert!(
            invoke("  ", echo)
                .unwrap_err()
                .starts_with("invalid input: ")
        );
    }
}
