//! `#[remora::remote]`: turns a trait of `async fn`s into a remote interface.
//!
//! Use it through the `remora` crate (`#[remora::remote]`); its documentation
//! describes what is generated. This crate only parses the trait, checks it, and
//! emits glue that calls ordinary `remora` runtime types.

use proc_macro::TokenStream;

mod check;
mod expand;

/// See `remora::remote`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    let item = proc_macro2::TokenStream::from(item);
    match expand::remote(attr, item) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}
