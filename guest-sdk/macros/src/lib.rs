//! `#[warden_sdk::agent]`: turns a plain function over serde types into the
//! `run` export of the `warden:agent/agent` world. Use it through
//! `warden-sdk`, which re-exports it.

use proc_macro::TokenStream;
use quote::quote;
use syn::{FnArg, ItemFn, parse_macro_input};

/// Marks the agent's entry point: `fn(Input) -> Result<Output, E>` where
/// `Input: DeserializeOwned`, `Output: Serialize` and `E: Display`.
///
/// ```ignore
/// #[warden_sdk::agent]
/// fn run(input: Request) -> Result<Response, warden_sdk::Error> { ... }
/// ```
#[proc_macro_attribute]
pub fn agent(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[warden_sdk::agent] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return syn::Error::new_spanned(a, "an agent entry point cannot be async")
            .to_compile_error()
            .into();
    }
    let typed_args = sig
        .inputs
        .iter()
        .filter(|a| matches!(a, FnArg::Typed(_)))
        .count();
    if typed_args != 1 || sig.inputs.len() != 1 {
        return syn::Error::new_spanned(
            &sig.inputs,
            "an agent entry point takes exactly one argument: its input, a serde type",
        )
        .to_compile_error()
        .into();
    }
    let name = &sig.ident;
    quote! {
        #func

        #[doc(hidden)]
        struct __WardenAgent;

        impl ::warden_sdk::__private::Guest for __WardenAgent {
            fn run(
                input: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                ::warden_sdk::__private::invoke(&input, #name)
            }
        }

        ::warden_sdk::__private::export!(__WardenAgent with_types_in ::warden_sdk::__private);
    }
    .into()
}
