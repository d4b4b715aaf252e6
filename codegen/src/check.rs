//! Reading a `#[remote]` trait into a model, with the errors a user can act on.

use syn::{Attribute, FnArg, Ident, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn, Type};

/// One method of the interface, as the expander needs it.
pub struct MethodModel {
    pub item: TraitItemFn,
    pub name: Ident,
    pub args: Vec<(Ident, Type)>,
    pub output: Type,
    pub oneway: bool,
    /// `#[exactly_once]`: the caller retries through connection loss; the callee
    /// answers a retry from its memory of the reply.
    pub exactly_once: bool,
    /// The receiver is `&self`: the handler may run beside other `&self` handlers.
    pub shared: bool,
    /// `#[reentrant]` (on the method or the interface): a call of the chain the
    /// actor is busy with interleaves instead of failing with `Cycle`.
    pub reentrant: bool,
    /// `#[abortable]`: once its call is given up, the handler is dropped at its
    /// next await instead of running on.
    pub abortable: bool,
}

/// Collects every problem in the trait, so one compile shows them all.
/// `reentrant`: the interface is `#[remote(reentrant)]`.
pub fn methods(item: &mut ItemTrait, reentrant: bool) -> syn::Result<Vec<MethodModel>> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        push(syn::Error::new_spanned(
            &item.generics,
            "#[remora::remote] traits cannot be generic: the interface's identity and argument types must be fixed to go on the wire",
        ));
    }
    let mut models = Vec::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            push(syn::Error::new_spanned(
                &*trait_item,
                "#[remora::remote] traits hold only `async fn` methods (no associated types, constants or macros)",
            ));
            continue;
        };
        match method(f, reentrant) {
            Ok(m) => models.push(m),
            Err(e) => push(e),
        }
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(models),
    }
}

fn method(f: &mut TraitItemFn, interface_reentrant: bool) -> syn::Result<MethodModel> {
    let oneway = take_marker(&mut f.attrs, "oneway")?;
    let exactly_once = take_marker(&mut f.attrs, "exactly_once")?;
    let marked_reentrant = take_marker(&mut f.attrs, "reentrant")?;
    let abortable = take_marker(&mut f.attrs, "abortable")?;
    let sig = &f.sig;
    if oneway && exactly_once {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "a method cannot be both #[oneway] and #[exactly_once]: exactly-once needs the reply as its acknowledgement; remove #[oneway]",
        ));
    }
    if abortable && oneway {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "a #[oneway] method cannot be #[abortable]: nobody waits for a tell, so nobody can give it up; remove #[abortable]",
        ));
    }
    if abortable && exactly_once {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "an #[exactly_once] method cannot be #[abortable]: once started it runs to its end, so that its reply can be remembered for retries; remove #[abortable] (a cancel still drops it while it is queued)",
        ));
    }
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            format!(
                "remote methods must be `async fn`: write `async fn {}(..)`; a call on a reference always awaits the actor",
                sig.ident
            ),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "remote methods cannot be generic: each argument must have one concrete type to be sent as a message",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            v,
            "remote methods cannot be variadic",
        ));
    }
    if sig.constness.is_some() || sig.unsafety.is_some() || sig.abi.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "remote methods are plain `async fn`s: no `const`, `unsafe` or `extern`",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let shared = match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.colon_token.is_none() => {
            r.mutability.is_none()
        }
        Some(FnArg::Receiver(other)) => {
            return Err(syn::Error::new_spanned(
                other,
                "the receiver of a remote method must be `&mut self` or `&self` (the actor handles one message at a time)",
            ))
        }
        Some(FnArg::Typed(_)) | None => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                "a remote method needs a `&mut self` or `&self` receiver",
            ))
        }
    };
    let reentrant = marked_reentrant || interface_reentrant;
    if reentrant && !shared {
        let why = if marked_reentrant {
            "a #[reentrant] method"
        } else {
            "every method of a #[remote(reentrant)] interface"
        };
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            format!(
                "{why} must take `&self`: it runs while another handler of the same actor awaits, so neither may hold `&mut self`; keep the state it changes in a `Mutex` or atomics"
            ),
        ));
    }
    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new_spanned(input, "unexpected receiver"));
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(syn::Error::new_spanned(
                &pt.pat,
                "remote method arguments must be plain names (`amount: u64`), not patterns",
            ));
        };
        if pi.by_ref.is_some() || pi.subpat.is_some() {
            return Err(syn::Error::new_spanned(
                &pt.pat,
                "remote method arguments must be plain names (`amount: u64`), not patterns",
            ));
        }
        check_owned(&pt.ty, "argument")?;
        args.push((pi.ident.clone(), (*pt.ty).clone()));
    }
    let output = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            check_owned(ty, "return type")?;
            (**ty).clone()
        }
    };
    if oneway && !is_unit(&output) {
        return Err(syn::Error::new_spanned(
            &sig.output,
            "a #[oneway] method sends no reply: remove the return type, or remove #[oneway] to make it an ask",
        ));
    }
    for reserved in ["with_timeout", "core"] {
        if sig.ident == reserved {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                format!("`{reserved}` is a method of the generated reference; rename this remote method"),
            ));
        }
    }
    Ok(MethodModel {
        name: sig.ident.clone(),
        item: f.clone(),
        args,
        output,
        oneway,
        exactly_once,
        shared,
        reentrant,
        abortable,
    })
}

/// Arguments and results are passed by copy: no borrowed or `impl Trait` types.
fn check_owned(ty: &Type, what: &str) -> syn::Result<()> {
    match ty {
        Type::Reference(r) => Err(syn::Error::new_spanned(
            r,
            format!(
                "remote {what}s are passed by copy: take an owned type (`{}` instead of `{}`)",
                owned_form(&r.elem),
                type_text(r)
            ),
        )),
        Type::ImplTrait(t) => Err(syn::Error::new_spanned(
            t,
            format!("remote {what}s need a concrete type, not `impl Trait`"),
        )),
        Type::Ptr(p) => Err(syn::Error::new_spanned(
            p,
            format!("remote {what}s cannot be raw pointers"),
        )),
        Type::Paren(p) => check_owned(&p.elem, what),
        Type::Group(g) => check_owned(&g.elem, what),
        Type::Tuple(t) => t.elems.iter().try_for_each(|e| check_owned(e, what)),
        Type::Array(a) => check_owned(&a.elem, what),
        Type::Slice(s) => check_owned(&s.elem, what),
        // `Option<&str>`, `Vec<&T>`: a borrow inside a generic type is still a borrow.
        Type::Path(p) => p
            .path
            .segments
            .iter()
            .try_for_each(|segment| match &segment.arguments {
                syn::PathArguments::AngleBracketed(args) => {
                    args.args.iter().try_for_each(|arg| match arg {
                        syn::GenericArgument::Type(ty) => check_owned(ty, what),
                        _ => Ok(()),
                    })
                }
                _ => Ok(()),
            }),
        _ => Ok(()),
    }
}

/// What to write instead of `&elem`: `String` for `str`, `Vec<T>` for `[T]`.
fn owned_form(elem: &Type) -> String {
    match elem {
        Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => "String".to_owned(),
        Type::Slice(s) => format!("Vec<{}>", type_text(&s.elem)),
        other => type_text(other),
    }
}

/// A type as a person writes it (token streams print `& str`, `Vec < u8 >`).
pub fn type_text(ty: &impl quote::ToTokens) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (spaced, tight) in [
        (" < ", "<"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" :: ", "::"),
        (" ,", ","),
        ("& ", "&"),
    ] {
        text = text.replace(spaced, tight);
    }
    text
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// Removes `#[name]` from `attrs`, reporting whether it was there.
fn take_marker(attrs: &mut Vec<Attribute>, name: &str) -> syn::Result<bool> {
    let mut found = false;
    let mut err = None;
    attrs.retain(|a| {
        if a.path().is_ident(name) {
            if !matches!(a.meta, syn::Meta::Path(_)) {
                err = Some(syn::Error::new_spanned(
                    a,
                    format!("#[{name}] takes no arguments"),
                ));
            }
            found = true;
            false
        } else {
            true
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(found),
    }
}
