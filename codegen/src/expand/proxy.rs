//! The proxy: `{Trait}Ref`, the typed reference callers hold. Each method builds
//! the method's argument struct and hands it to the reference's `RefCore`, which
//! does the sending; the reference is itself serializable, so it can be passed on.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Generator, MethodGen};

impl Generator<'_> {
    /// The reference struct, a newtype over `RefCore` comparable as its target.
    pub(super) fn ref_struct(&self) -> TokenStream {
        let Generator {
            vis,
            trait_ident,
            wire_name,
            ref_ident,
            msg_ident,
            ..
        } = self;
        let ref_doc = format!(
            "A reference to an actor serving [`{trait_ident}`]: cheap to clone, `Send + Sync`; \
             every method returns `Result<T, remora::CallError>`. Wire name `{wire_name}`."
        );
        quote! {
            #[doc = #ref_doc]
            #[derive(Clone, Debug, PartialEq)]
            #vis struct #ref_ident {
                core: ::remora::rt::RefCore<#msg_ident>,
            }

            impl ::core::cmp::Eq for #ref_ident {}
        }
    }

    /// The reference's inherent impl: `with_timeout`, then one proxy method per
    /// remote method, under the same name.
    pub(super) fn ref_methods(&self) -> TokenStream {
        let ref_ident = &self.ref_ident;
        let proxy_methods = self.methods.iter().map(|m| self.proxy_method(m));
        quote! {
            impl #ref_ident {
                /// The same reference, whose calls get `timeout` as their deadline
                /// (default 30 s). Past it a call fails with `CallError::Timeout`.
                pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                    #ref_ident { core: self.core.with_timeout(timeout) }
                }

                #( #proxy_methods )*
            }
        }
    }

    /// One proxy method, keeping the trait method's docs: a `#[oneway]` method
    /// returns a `Tell`; any other returns a future of `Result<Output, CallError>`.
    fn proxy_method(&self, m: &MethodGen) -> TokenStream {
        let msg_ident = &self.msg_ident;
        let MethodGen {
            model,
            struct_ident,
            arg_names,
            arg_types,
            ..
        } = m;
        let name = &model.name;
        let output = &model.output;
        let docs: Vec<_> = model
            .item
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .collect();
        let params = quote! { #( #arg_names: #arg_types ),* };
        let ask = if model.exactly_once {
            quote! { ask_exactly_once }
        } else {
            quote! { ask }
        };
        if model.oneway {
            quote! {
                #( #docs )*
                ///
                /// One-way (a tell): await it to queue the message, or see [`::remora::Tell`].
                pub fn #name(&self, #params) -> ::remora::Tell<'_, #msg_ident> {
                    self.core.tell(#struct_ident { #( #arg_names, )* })
                }
            }
        } else {
            // The future owns a clone of the reference: `tokio::spawn(r.method(..))`
            // and `tokio::spawn(r.clone().method(..))` work.
            quote! {
                #( #docs )*
                pub fn #name(&self, #params)
                    -> impl ::core::future::Future<Output = ::core::result::Result<#output, ::remora::CallError>> + ::core::marker::Send + 'static
                {
                    let core = ::core::clone::Clone::clone(&self.core);
                    let args = #struct_ident { #( #arg_names, )* };
                    async move { core.#ask(args).await }
                }
            }
        }
    }

    /// `Interface` for the reference: the interface's wire name and ID, its message
    /// type, and the conversions the runtime uses to mint and read references.
    pub(super) fn interface_impl(&self) -> TokenStream {
        let Generator {
            wire_name,
            ref_ident,
            msg_ident,
            ..
        } = self;
        quote! {
            impl ::remora::Interface for #ref_ident {
                const NAME: &'static str = #wire_name;
                const ID: u64 = ::remora::stable_id(#wire_name);
                type Msg = #msg_ident;

                fn from_core(core: ::remora::rt::RefCore<#msg_ident>) -> Self {
                    #ref_ident { core }
                }

                fn core(&self) -> &::remora::rt::RefCore<#msg_ident> {
                    &self.core
                }
            }
        }
    }

    /// `Serialize`/`Deserialize` for the reference, as its `RefCore`, so a reference
    /// can travel as an argument or a result.
    pub(super) fn ref_serde(&self) -> TokenStream {
        let Generator {
            ref_ident,
            msg_ident,
            ..
        } = self;
        quote! {
            impl ::remora::rt::__private::serde::Serialize for #ref_ident {
                fn serialize<S: ::remora::rt::__private::serde::Serializer>(&self, serializer: S) -> ::core::result::Result<S::Ok, S::Error> {
                    ::remora::rt::__private::serde::Serialize::serialize(&self.core, serializer)
                }
            }

            impl<'de> ::remora::rt::__private::serde::Deserialize<'de> for #ref_ident {
                fn deserialize<D: ::remora::rt::__private::serde::Deserializer<'de>>(deserializer: D) -> ::core::result::Result<Self, D::Error> {
                    <::remora::rt::RefCore<#msg_ident> as ::remora::rt::__private::serde::Deserialize<'de>>::deserialize(deserializer)
                        .map(|core| #ref_ident { core })
                }
            }
        }
    }
}
