//! The dispatcher: `Dispatch<A>` for the message enum, for every actor `A` that
//! implements the trait. It runs a message's handler on the lent actor, and
//! tells the runtime each message's call chain, how it borrows the actor, and
//! the method's position (where the node counts its calls).

use proc_macro2::TokenStream;
use quote::quote;

use super::{Generator, MethodGen};

impl Generator<'_> {
    /// `Dispatch<A>` for the message enum: `dispatch` and the per-message
    /// `chain`, `shared` and `reentrant` the runtime schedules by.
    pub(super) fn dispatch_impl(&self) -> TokenStream {
        let Generator {
            trait_ident,
            msg_ident,
            any_reentrant,
            ..
        } = self;
        // `&self` handlers may run side by side (re-entry): the actor is shared between them.
        let sync_bound = if *any_reentrant {
            quote! { + ::core::marker::Sync }
        } else {
            quote! {}
        };
        let arms: Vec<_> = self.methods.iter().map(|m| self.dispatch_arm(m)).collect();
        let dispatch_body = if arms.is_empty() {
            quote! { match self {} }
        } else {
            quote! { match self { #( #arms )* } }
        };
        let chain_arms = self.methods.iter().map(|m| {
            let name = &m.model.name;
            quote! {
                #msg_ident::#name(request) => request.reply.chain(),
            }
        });
        let unwanted_arms = self.methods.iter().map(|m| {
            let name = &m.model.name;
            quote! {
                #msg_ident::#name(request) => request.reply.unwanted(),
            }
        });
        let settle_arms = self.methods.iter().map(|m| {
            let name = &m.model.name;
            quote! {
                #msg_ident::#name(request) => request.reply.settle_deadline(at),
            }
        });
        let method_names = self.methods.iter().map(|m| m.model.name.to_string());
        let index_arms = self.methods.iter().enumerate().map(|(index, m)| {
            let name = &m.model.name;
            quote! {
                #msg_ident::#name(_) => #index,
            }
        });
        let arrived_arms = self.methods.iter().map(|m| {
            let name = &m.model.name;
            quote! {
                #msg_ident::#name(request) => request.reply.arrived(),
            }
        });
        let shared_arms = self.true_arms(|m| m.shared);
        let reentrant_arms = self.true_arms(|m| m.model.reentrant);
        quote! {
            impl<A: #trait_ident #sync_bound> ::remora::rt::Dispatch<A> for #msg_ident {
                const REENTRANT: bool = #any_reentrant;
                const METHODS: &'static [&'static str] = &[ #( #method_names, )* ];

                #[allow(unused_variables)]
                fn dispatch(self, actor: ::remora::rt::Lent<'_, A>) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send {
                    async move { #dispatch_body }
                }

                fn method_index(&self) -> usize {
                    match self {
                        #( #index_arms )*
                        #[allow(unreachable_patterns)]
                        _ => 0,
                    }
                }

                fn arrived(&self) -> ::core::option::Option<::remora::rt::__private::Instant> {
                    match self {
                        #( #arrived_arms )*
                        #[allow(unreachable_patterns)]
                        _ => ::core::option::Option::None,
                    }
                }

                fn chain(&self) -> u64 {
                    match self {
                        #( #chain_arms )*
                        #[allow(unreachable_patterns)]
                        _ => 0,
                    }
                }

                fn unwanted(&self) -> ::core::option::Option<::remora::rt::Unwanted> {
                    match self {
                        #( #unwanted_arms )*
                        #[allow(unreachable_patterns)]
                        _ => ::core::option::Option::None,
                    }
                }

                #[allow(unused_variables)]
                fn settle_deadline(&mut self, at: ::remora::rt::__private::Instant) {
                    match self {
                        #( #settle_arms )*
                        #[allow(unreachable_patterns)]
                        _ => {}
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
        }
    }

    /// The `dispatch` arm of one method: unpack its request, call the actor's
    /// handler, answer the reply slot with what it returns.
    fn dispatch_arm(&self, m: &MethodGen) -> TokenStream {
        let Generator {
            trait_ident,
            msg_ident,
            ..
        } = self;
        let MethodGen {
            model,
            struct_ident,
            arg_names,
            ..
        } = m;
        let name = &model.name;
        // The actor is borrowed as the method's receiver says, as `shared()` reports.
        let borrow = if m.shared {
            quote! { actor.shared() }
        } else {
            quote! { actor.exclusive() }
        };
        // An `#[abortable]` handler is dropped at its next await once its call is given up.
        let answer = if model.abortable {
            quote! { answer_abortable }
        } else {
            quote! { answer_with }
        };
        quote! {
            #msg_ident::#name(::remora::rt::Request { args: #struct_ident { #( #arg_names, )* }, reply }) => {
                reply.#answer(<A as #trait_ident>::#name(#borrow, #( #arg_names, )*)).await;
            }
        }
    }

    /// `Variant(_) => true,` for each method `which` holds of; the rest fall to `_`.
    fn true_arms(&self, which: impl Fn(&MethodGen) -> bool) -> Vec<TokenStream> {
        let msg_ident = &self.msg_ident;
        self.methods
            .iter()
            .filter(|m| which(m))
            .map(|m| {
                let name = &m.model.name;
                quote! { #msg_ident::#name(_) => true, }
            })
            .collect()
    }
}
