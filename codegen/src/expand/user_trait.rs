//! The user's trait as the actor implements it.

use proc_macro2::TokenStream;
use quote::quote;

use super::Generator;

impl Generator<'_> {
    /// The user's trait with `Actor` as a supertrait and each `async fn` desugared to
    /// `fn -> impl Future + Send`, so handlers can run on any worker thread.
    pub(super) fn user_trait(&self) -> TokenStream {
        let mut item = self.item.clone();
        item.supertraits.push(syn::parse_quote!(::remora::Actor));
        item.items = self
            .methods
            .iter()
            .map(|m| {
                let mut f = m.model.item.clone();
                f.sig.asyncness = None;
                let output = &m.model.output;
                f.sig.output = syn::parse_quote! {
                    -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
                };
                if let Some(body) = &f.default {
                    f.default = Some(syn::parse_quote!({ async move #body }));
                }
                syn::TraitItem::Fn(f)
            })
            .collect();
        quote! { #item }
    }
}
