//! Emitting the proxy, the messages and the dispatcher for a checked trait.
//!
//! [`remote`] parses and checks the trait, then builds a [`Generator`] holding
//! what every generated item needs and joins its pieces, one function per item:
//!
//! - `user_trait`: the user's trait, desugared for worker threads;
//! - `proxy`: the `XRef` reference type, its methods, `Interface` and serde impls;
//! - `messages`: the argument structs, the message enum and its `Unmarshal`;
//! - `dispatch`: the `Dispatch` impl that runs a message on the actor.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use syn::{ItemTrait, LitStr, Type, Visibility};

use crate::check::{self, MethodModel};

mod dispatch;
mod messages;
mod proxy;
#[cfg(test)]
mod tests;
mod user_trait;

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

/// The expansion of `#[remote(attr)] item`: the checked trait's items, or the
/// errors found in it.
pub fn remote(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = parse_args(attr)?;
    let mut item: ItemTrait = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[remora::remote] goes on a trait of `async fn` methods",
        )
    })?;
    let methods = check::methods(&mut item, args.reentrant)?;
    let g = Generator::new(&item, args.name, &methods);

    // The order the items have always been emitted in, so the expansion is unchanged.
    let user_trait = g.user_trait();
    let ref_struct = g.ref_struct();
    let ref_methods = g.ref_methods();
    let interface_impl = g.interface_impl();
    let message_enum = g.message_enum();
    let unmarshal_impl = g.unmarshal_impl();
    let ref_serde = g.ref_serde();
    let arg_structs = g.arg_structs();
    let dispatch_impl = g.dispatch_impl();
    Ok(quote! {
        #user_trait
        #ref_struct
        #ref_methods
        #interface_impl
        #message_enum
        #unmarshal_impl
        #ref_serde
        #arg_structs
        #dispatch_impl
    })
}

/// A checked trait and the names shared by the items generated for it.
struct Generator<'a> {
    /// The trait with the method markers (`#[oneway]`, ...) already removed.
    item: &'a ItemTrait,
    vis: &'a Visibility,
    trait_ident: &'a Ident,
    /// `name = "..."`, or the trait's name: the interface's identity on the wire.
    wire_name: String,
    /// `{Trait}Ref`: the proxy type callers hold.
    ref_ident: Ident,
    /// `__Remora{Trait}Msg`: the enum of every method's request.
    msg_ident: Ident,
    methods: Vec<MethodGen<'a>>,
    /// Without `#[reentrant]` methods no two handlers ever overlap: every one borrows
    /// the actor exclusively (a `&self` method reborrows), and the actor need not be `Sync`.
    any_reentrant: bool,
}

/// One checked method and the names of the items generated for it.
struct MethodGen<'a> {
    model: &'a MethodModel,
    /// `__Remora{Trait}_{method}`: the method's arguments, the payload of its message.
    struct_ident: Ident,
    /// `{wire name}.{method}`: the method's identity on the wire.
    wire: String,
    /// The handler borrows the actor shared: it takes `&self` and the interface has
    /// a `#[reentrant]` method (otherwise it reborrows the exclusive lend).
    shared: bool,
    arg_names: Vec<&'a Ident>,
    arg_types: Vec<&'a Type>,
}

impl<'a> Generator<'a> {
    fn new(item: &'a ItemTrait, name: Option<LitStr>, methods: &'a [MethodModel]) -> Self {
        let trait_ident = &item.ident;
        let wire_name = name
            .map(|l| l.value())
            .unwrap_or_else(|| trait_ident.to_string());
        let any_reentrant = methods.iter().any(|m| m.reentrant);
        let methods = methods
            .iter()
            .map(|m| MethodGen {
                model: m,
                struct_ident: format_ident!("__Remora{}_{}", trait_ident, m.name),
                wire: format!("{wire_name}.{}", m.name),
                shared: m.shared && any_reentrant,
                arg_names: m.args.iter().map(|(n, _)| n).collect(),
                arg_types: m.args.iter().map(|(_, t)| t).collect(),
            })
            .collect();
        Generator {
            item,
            vis: &item.vis,
            trait_ident,
            ref_ident: format_ident!("{}Ref", trait_ident),
            msg_ident: format_ident!("__Remora{}Msg", trait_ident),
            wire_name,
            methods,
            any_reentrant,
        }
    }
}
