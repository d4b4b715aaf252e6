//! The messages: one argument struct per method (what goes on the wire), the
//! enum of every method's `Request` (what an actor's mailbox holds), and the
//! `Unmarshal` impl that turns a method ID and encoded arguments back into it.

use proc_macro2::TokenStream;
use quote::quote;

use super::{Generator, MethodGen};
use crate::check::type_text;

impl Generator<'_> {
    /// Per method, in order: its argument struct, its `Method` impl and the
    /// `From<Request<_>>` that wraps it into the message enum.
    pub(super) fn arg_structs(&self) -> TokenStream {
        let items = self.methods.iter().map(|m| {
            let arg_struct = self.arg_struct(m);
            let method_impl = self.method_impl(m);
            let request_into_msg = self.request_into_msg(m);
            quote! { #arg_struct #method_impl #request_into_msg }
        });
        quote! { #( #items )* }
    }

    /// The method's arguments as a serde struct, named after the trait and method.
    fn arg_struct(&self, m: &MethodGen) -> TokenStream {
        let vis = self.vis;
        let MethodGen {
            struct_ident,
            arg_names,
            arg_types,
            ..
        } = m;
        // `Vec<u8>` arguments travel as MessagePack binary, not arrays of integers.
        let byte_attrs: Vec<TokenStream> = arg_types
            .iter()
            .map(|ty| match type_text(ty).as_str() {
                "Vec<u8>" | "std::vec::Vec<u8>" | "::std::vec::Vec<u8>" | "alloc::vec::Vec<u8>" => {
                    quote! { #[serde(with = "::remora::rt::__private::serde_bytes")] }
                }
                _ => quote! {},
            })
            .collect();
        quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            #[derive(::remora::rt::__private::serde::Serialize, ::remora::rt::__private::serde::Deserialize)]
            #[serde(crate = "::remora::rt::__private::serde")]
            #vis struct #struct_ident { #( #byte_attrs pub #arg_names: #arg_types, )* }
        }
    }

    /// `Method` for the argument struct: the method's wire name and ID, its
    /// arguments as written (for error messages), its output, whether it re-enters.
    fn method_impl(&self, m: &MethodGen) -> TokenStream {
        let MethodGen {
            model,
            struct_ident,
            wire,
            arg_names,
            arg_types,
            ..
        } = m;
        let output = &model.output;
        let reentrant = model.reentrant;
        let arg_name_strs: Vec<String> = arg_names.iter().map(|n| n.to_string()).collect();
        let arg_type_strs: Vec<String> = arg_types.iter().map(type_text).collect();
        quote! {
            impl ::remora::rt::Method for #struct_ident {
                const NAME: &'static str = #wire;
                const ID: u64 = ::remora::stable_id(#wire);
                const ARGS: ::remora::rt::ArgTable = &[ #( (#arg_name_strs, #arg_type_strs), )* ];
                type Output = #output;
                const REENTRANT: bool = #reentrant;
            }
        }
    }

    /// `From<Request<Args>>` for the message enum, so the reference's `RefCore`
    /// can build a message from any of the interface's requests.
    fn request_into_msg(&self, m: &MethodGen) -> TokenStream {
        let msg_ident = &self.msg_ident;
        let MethodGen {
            model,
            struct_ident,
            ..
        } = m;
        let name = &model.name;
        quote! {
            impl ::core::convert::From<::remora::rt::Request<#struct_ident>> for #msg_ident {
                fn from(request: ::remora::rt::Request<#struct_ident>) -> Self {
                    #msg_ident::#name(request)
                }
            }
        }
    }

    /// The message enum: one variant per method, named as the method, holding its
    /// `Request` (arguments and reply slot).
    pub(super) fn message_enum(&self) -> TokenStream {
        let Generator { vis, msg_ident, .. } = self;
        let variants = self.methods.iter().map(|m| {
            let name = &m.model.name;
            let struct_ident = &m.struct_ident;
            quote! { #name(::remora::rt::Request<#struct_ident>) }
        });
        quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            #vis enum #msg_ident { #( #variants, )* }
        }
    }

    /// `Unmarshal` for the message enum: decodes the arguments of the method whose
    /// ID arrived, or answers `UnknownMethod`; and tells which methods re-enter.
    pub(super) fn unmarshal_impl(&self) -> TokenStream {
        let Generator {
            wire_name,
            msg_ident,
            ..
        } = self;
        let unmarshal_arms = self.methods.iter().map(|m| {
            let name = &m.model.name;
            let struct_ident = &m.struct_ident;
            quote! {
                if method == <#struct_ident as ::remora::rt::Method>::ID {
                    let args: #struct_ident = ::remora::rt::__private::take_args(args, limits)?;
                    return ::core::result::Result::Ok(#msg_ident::#name(::remora::rt::Request {
                        args,
                        reply: replier
                            .named(<#struct_ident as ::remora::rt::Method>::NAME)
                            .into_reply(),
                    }));
                }
            }
        });
        let reentrant_structs = self
            .methods
            .iter()
            .filter(|m| m.model.reentrant)
            .map(|m| &m.struct_ident);
        let refuse_arms = self.methods.iter().map(|m| {
            let name = &m.model.name;
            quote! { #msg_ident::#name(request) => request.reply.refuse(err), }
        });
        quote! {
            impl ::remora::rt::Unmarshal for #msg_ident {
                const INTERFACE: &'static str = #wire_name;
                const INTERFACE_ID: u64 = ::remora::stable_id(#wire_name);

                #[allow(unused_variables)]
                fn unmarshal(
                    method: u64,
                    args: ::remora::rt::Args<'_>,
                    limits: &::remora::wire::Limits,
                    replier: ::remora::rt::Replier,
                ) -> ::core::result::Result<Self, ::remora::CallError> {
                    #( #unmarshal_arms )*
                    ::core::result::Result::Err(::remora::CallError::UnknownMethod {
                        interface: #wire_name.into(),
                        method,
                    })
                }

                fn reentrant(method: u64) -> bool {
                    false #( || method == <#reentrant_structs as ::remora::rt::Method>::ID )*
                }

                #[allow(unused_variables)]
                fn refuse(self, err: ::remora::CallError) {
                    match self {
                        #( #refuse_arms )*
                    }
                }
            }
        }
    }
}
