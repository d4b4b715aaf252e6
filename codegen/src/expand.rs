//! Emitting the proxy, the messages and the dispatcher for a checked trait.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{ItemTrait, LitStr};

use crate::check::{self, type_text, MethodModel};

/// `#[remote(name = "...", reentrant)]`.
struct Args {
    name: Option<LitStr>,
    reentrant: bool,
}

fn parse_args(attr: TokenStream) -> syn::Result<Args> {
    let mut args = Args {
        name: None,
        reentrant: false,
    };
    if attr.is_empty() {
        return Ok(args);
    }
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            args.name = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("reentrant") {
            args.reentrant = true;
            Ok(())
        } else {
            Err(meta.error(
                "unknown #[remora::remote] argument; expected `name = \"...\"` or `reentrant`",
            ))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(args)
}

pub fn remote(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = parse_args(attr)?;
    let mut item: ItemTrait = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[remora::remote] goes on a trait of `async fn` methods",
        )
    })?;
    let methods = check::methods(&mut item, args.reentrant)?;

    let vis = &item.vis;
    let trait_ident = &item.ident;
    let wire_name = args
        .name
        .map(|l| l.value())
        .unwrap_or_else(|| trait_ident.to_string());
    let ref_ident = format_ident!("{}Ref", trait_ident);
    let msg_ident = format_ident!("__Remora{}Msg", trait_ident);

    let user_trait = rewrite_trait(&item, &methods);

    let mut arg_structs = Vec::new();
    let mut variants = Vec::new();
    let mut arms = Vec::new();
    let mut chain_arms = Vec::new();
    let mut shared_arms = Vec::new();
    let mut reentrant_arms = Vec::new();
    let mut reentrant_structs = Vec::new();
    let mut unmarshal_arms = Vec::new();
    let mut proxy_methods = Vec::new();
    // Without `#[reentrant]` methods no two handlers ever overlap: every one borrows
    // the actor exclusively (a `&self` method reborrows), and the actor need not be `Sync`.
    let any_reentrant = methods.iter().any(|m| m.reentrant);
    for m in &methods {
        let name = &m.name;
        let struct_ident = format_ident!("__Remora{}_{}", trait_ident, name);
        let method_wire = format!("{wire_name}.{name}");
        let arg_names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        let arg_types: Vec<_> = m.args.iter().map(|(_, t)| t).collect();
        let output = &m.output;
        let arg_name_strs: Vec<String> = arg_names.iter().map(|n| n.to_string()).collect();
        // `Vec<u8>` arguments travel as MessagePack binary, not arrays of integers.
        let byte_attrs: Vec<TokenStream> = arg_types
            .iter()
            .map(|ty| match type_text(ty).as_str() {
                "Vec<u8>" | "std::vec::Vec<u8>" | "::std::vec::Vec<u8>" | "alloc::vec::Vec<u8>" => {
                    quote! { #[serde(with = "::remora::__private::serde_bytes")] }
                }
                _ => quote! {},
            })
            .collect();
        let arg_type_strs: Vec<String> = arg_types.iter().map(type_text).collect();
        let (shared, reentrant) = (m.shared && any_reentrant, m.reentrant);
        arg_structs.push(quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            #[derive(::remora::__private::serde::Serialize, ::remora::__private::serde::Deserialize)]
            #[serde(crate = "::remora::__private::serde")]
            #vis struct #struct_ident { #( #byte_attrs pub #arg_names: #arg_types, )* }

            impl ::remora::Method for #struct_ident {
                const NAME: &'static str = #method_wire;
                const ID: u64 = ::remora::stable_id(#method_wire);
                const ARGS: ::remora::ArgTable = &[ #( (#arg_name_strs, #arg_type_strs), )* ];
                type Output = #output;
                const REENTRANT: bool = #reentrant;
            }

            impl ::core::convert::From<::remora::Request<#struct_ident>> for #msg_ident {
                fn from(request: ::remora::Request<#struct_ident>) -> Self {
                    #msg_ident::#name(request)
                }
            }
        });
        variants.push(quote! { #name(::remora::Request<#struct_ident>) });
        unmarshal_arms.push(quote! {
            if method == <#struct_ident as ::remora::Method>::ID {
                let args: #struct_ident = ::remora::__private::take_args(args, limits)?;
                return ::core::result::Result::Ok(#msg_ident::#name(::remora::Request {
                    args,
                    reply: replier.into_reply(),
                }));
            }
        });
        chain_arms.push(quote! {
            #msg_ident::#name(request) => request.reply.chain(),
        });
        if shared {
            shared_arms.push(quote! { #msg_ident::#name(_) => true, });
        }
        if reentrant {
            reentrant_arms.push(quote! { #msg_ident::#name(_) => true, });
            reentrant_structs.push(struct_ident.clone());
        }
        // The actor is borrowed as the method's receiver says, as `shared()` reports.
        let borrow = if shared {
            quote! { actor.shared() }
        } else {
            quote! { actor.exclusive() }
        };
        arms.push(quote! {
            #msg_ident::#name(::remora::Request { args: #struct_ident { #( #arg_names, )* }, reply }) => {
                reply.answer_with(<A as #trait_ident>::#name(#borrow, #( #arg_names, )*)).await;
            }
        });
        let docs: Vec<_> = m
            .item
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .collect();
        let params = quote! { #( #arg_names: #arg_types ),* };
        let ask = if m.exactly_once {
            quote! { ask_exactly_once }
        } else {
            quote! { ask }
        };
        proxy_methods.push(if m.oneway {
            quote! {
                #( #docs )*
                ///
                /// One-way (a tell): await it to queue the message, or see [`::remora::Tell`].
                pub fn #name(&self, #params) -> ::remora::Tell<'_, #msg_ident> {
                    self.core.tell(#struct_ident { #( #arg_names, )* })
                }
            }
        } else {
            quote! {
                #( #docs )*
                pub fn #name(&self, #params)
                    -> impl ::core::future::Future<Output = ::core::result::Result<#output, ::remora::CallError>> + ::core::marker::Send + '_
                {
                    self.core.#ask(#struct_ident { #( #arg_names, )* })
                }
            }
        });
    }

    let ref_doc = format!(
        "A reference to an actor serving [`{trait_ident}`]: cheap to clone, `Send + Sync`; \
         every method returns `Result<T, remora::CallError>`. Wire name `{wire_name}`."
    );
    // `&self` handlers may run side by side (re-entry): the actor is shared between them.
    let sync_bound = if any_reentrant {
        quote! { + ::core::marker::Sync }
    } else {
        quote! {}
    };
    let dispatch_body = if methods.is_empty() {
        quote! { match self {} }
    } else {
        quote! { match self { #( #arms )* } }
    };

    Ok(quote! {
        #user_trait

        #[doc = #ref_doc]
        #[derive(Clone, Debug, PartialEq)]
        #vis struct #ref_ident {
            core: ::remora::RefCore<#msg_ident>,
        }

        impl ::core::cmp::Eq for #ref_ident {}

        impl #ref_ident {
            /// The same reference, whose calls get `timeout` as their deadline
            /// (default 30 s). Past it a call fails with `CallError::Timeout`.
            pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                #ref_ident { core: self.core.with_timeout(timeout) }
            }

            #( #proxy_methods )*
        }

        impl ::remora::Interface for #ref_ident {
            const NAME: &'static str = #wire_name;
            const ID: u64 = ::remora::stable_id(#wire_name);
            type Msg = #msg_ident;

            fn from_core(core: ::remora::RefCore<#msg_ident>) -> Self {
                #ref_ident { core }
            }

            fn core(&self) -> &::remora::RefCore<#msg_ident> {
                &self.core
            }
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis enum #msg_ident { #( #variants, )* }

        impl ::remora::Unmarshal for #msg_ident {
            const INTERFACE: &'static str = #wire_name;
            const INTERFACE_ID: u64 = ::remora::stable_id(#wire_name);

            #[allow(unused_variables)]
            fn unmarshal(
                method: u64,
                args: ::remora::Args<'_>,
                limits: &::remora::wire::Limits,
                replier: ::remora::Replier,
            ) -> ::core::result::Result<Self, ::remora::CallError> {
                #( #unmarshal_arms )*
                ::core::result::Result::Err(::remora::CallError::UnknownMethod {
                    interface: #wire_name.into(),
                    method,
                })
            }

            fn reentrant(method: u64) -> bool {
                false #( || method == <#reentrant_structs as ::remora::Method>::ID )*
            }
        }

        impl ::remora::__private::serde::Serialize for #ref_ident {
            fn serialize<S: ::remora::__private::serde::Serializer>(&self, serializer: S) -> ::core::result::Result<S::Ok, S::Error> {
                ::remora::__private::serde::Serialize::serialize(&self.core, serializer)
            }
        }

        impl<'de> ::remora::__private::serde::Deserialize<'de> for #ref_ident {
            fn deserialize<D: ::remora::__private::serde::Deserializer<'de>>(deserializer: D) -> ::core::result::Result<Self, D::Error> {
                <::remora::RefCore<#msg_ident> as ::remora::__private::serde::Deserialize<'de>>::deserialize(deserializer)
                    .map(|core| #ref_ident { core })
            }
        }

        #( #arg_structs )*

        impl<A: #trait_ident #sync_bound> ::remora::Dispatch<A> for #msg_ident {
            const REENTRANT: bool = #any_reentrant;

            #[allow(unused_variables)]
            fn dispatch(self, actor: ::remora::Lent<'_, A>) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send {
                async move { #dispatch_body }
            }

            fn chain(&self) -> u64 {
                match self {
                    #( #chain_arms )*
                    #[allow(unreachable_patterns)]
                    _ => 0,
                }
            }

            fn shared(&self) -> bool {
                match self {
                    #( #shared_arms )*
                    #[allow(unreachable_patterns)]
                    _ => false,
                }
            }

            fn reentrant(&self) -> bool {
                match self {
                    #( #reentrant_arms )*
                    #[allow(unreachable_patterns)]
                    _ => false,
                }
            }
        }
    })
}

/// The user's trait with `Actor` as a supertrait and each `async fn` desugared to
/// `fn -> impl Future + Send`, so handlers can run on any worker thread.
fn rewrite_trait(item: &ItemTrait, methods: &[MethodModel]) -> TokenStream {
    let mut item = item.clone();
    item.supertraits.push(syn::parse_quote!(::remora::Actor));
    item.items = methods
        .iter()
        .map(|m| {
            let mut f = m.item.clone();
            f.sig.asyncness = None;
            let output = &m.output;
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
