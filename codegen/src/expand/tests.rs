//! What `remote` emits for a few traits, read back as items rather than compared
//! as text: which items, in which order, and the choices each method's markers make.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{ImplItem, Item};

fn expand(attr: TokenStream, item: TokenStream) -> Vec<Item> {
    let tokens = super::remote(attr, item).expect("the trait is valid");
    syn::parse2::<syn::File>(tokens)
        .expect("the expansion parses")
        .items
}

/// `trait X`, `struct X`, `impl Trait for X` (the trait's last segment), ...
fn describe(item: &Item) -> String {
    match item {
        Item::Trait(t) => format!("trait {}", t.ident),
        Item::Struct(s) => format!("struct {}", s.ident),
        Item::Enum(e) => format!("enum {}", e.ident),
        Item::Impl(i) => {
            let self_ty = i.self_ty.to_token_stream();
            match &i.trait_ {
                Some((_, path, _)) => {
                    let name = &path.segments.last().unwrap().ident;
                    format!("impl {name} for {self_ty}")
                }
                None => format!("impl {self_ty}"),
            }
        }
        other => panic!("unexpected item {}", other.to_token_stream()),
    }
}

/// The item `describe`d as `what`, as text.
fn find(items: &[Item], what: &str) -> String {
    find_item(items, what).to_token_stream().to_string()
}

fn find_item<'a>(items: &'a [Item], what: &str) -> &'a Item {
    let item = items.iter().find(|i| describe(i) == what);
    item.unwrap_or_else(|| panic!("no `{what}`"))
}

/// Function `name` of the impl `describe`d as `what`, as text.
fn find_fn(items: &[Item], what: &str, name: &str) -> String {
    let Item::Impl(i) = find_item(items, what) else {
        panic!("`{what}` is not an impl")
    };
    let f = i.items.iter().find_map(|i| match i {
        ImplItem::Fn(f) if f.sig.ident == name => Some(f),
        _ => None,
    });
    let f = f.unwrap_or_else(|| panic!("no `{name}` in `{what}`"));
    f.to_token_stream().to_string()
}

#[test]
fn a_trait_expands_to_its_proxy_messages_and_dispatcher() {
    let items = expand(
        quote!(),
        quote! {
            pub trait Account {
                async fn deposit(&mut self, amount: u64) -> u64;
                async fn balance(&self) -> u64;
            }
        },
    );
    let described: Vec<_> = items.iter().map(describe).collect();
    assert_eq!(
        described,
        [
            "trait Account",
            "struct AccountRef",
            "impl Eq for AccountRef",
            "impl AccountRef",
            "impl Interface for AccountRef",
            "enum __RemoraAccountMsg",
            "impl Unmarshal for __RemoraAccountMsg",
            "impl Serialize for AccountRef",
            "impl Deserialize for AccountRef",
            "struct __RemoraAccount_deposit",
            "impl Method for __RemoraAccount_deposit",
            "impl From for __RemoraAccountMsg",
            "struct __RemoraAccount_balance",
            "impl Method for __RemoraAccount_balance",
            "impl From for __RemoraAccountMsg",
            "impl Dispatch for __RemoraAccountMsg",
        ]
    );
    let Item::Trait(user_trait) = &items[0] else {
        unreachable!()
    };
    assert_eq!(
        user_trait.supertraits.to_token_stream().to_string(),
        ":: remora :: Actor"
    );
    let method = find(&items, "impl Method for __RemoraAccount_deposit");
    assert!(method.contains(r#"const NAME : & 'static str = "Account.deposit""#));
}

#[test]
fn proxy_methods_follow_the_markers() {
    let items = expand(
        quote!(name = "bank.Ledger"),
        quote! {
            pub trait Ledger {
                #[oneway]
                async fn note(&mut self, line: String);
                #[exactly_once]
                async fn transfer(&mut self, amount: u64) -> u64;
                async fn total(&self) -> u64;
            }
        },
    );
    let proxy = |name: &str| find_fn(&items, "impl LedgerRef", name);
    assert!(proxy("note").contains("-> :: remora :: Tell"));
    assert!(proxy("note").contains("self . core . tell"));
    assert!(proxy("transfer").contains("core . ask_exactly_once (args)"));
    assert!(proxy("total").contains("core . ask (args)"));
    assert!(
        proxy("total").contains("'static"),
        "a call's future owns its reference"
    );
    assert!(proxy("with_timeout").contains("self . core . with_timeout (timeout)"));
    let interface = find(&items, "impl Interface for LedgerRef");
    assert!(interface.contains(r#"const NAME : & 'static str = "bank.Ledger""#));
}

#[test]
fn only_a_reentrant_interface_shares_the_actor() {
    let plain = expand(
        quote!(),
        quote! {
            pub trait Reader { async fn get(&self) -> u64; }
        },
    );
    let dispatch = find(&plain, "impl Dispatch for __RemoraReaderMsg");
    assert!(!dispatch.contains("Sync"));
    assert!(dispatch.contains("const REENTRANT : bool = false"));
    assert!(dispatch.contains("actor . exclusive ()"));
    assert!(!dispatch.contains("actor . shared ()"));
    assert!(!dispatch.contains("=> true"));

    let reentrant = expand(
        quote!(),
        quote! {
            pub trait Hop {
                #[reentrant]
                async fn hop(&self) -> u64;
                async fn read(&self) -> u64;
                async fn write(&mut self);
            }
        },
    );
    let dispatch = find(&reentrant, "impl Dispatch for __RemoraHopMsg");
    assert!(dispatch.contains("A : Hop + :: core :: marker :: Sync"));
    assert!(dispatch.contains("const REENTRANT : bool = true"));
    assert!(dispatch.contains("actor . shared ()"));
    let shared = find_fn(&reentrant, "impl Dispatch for __RemoraHopMsg", "shared");
    assert!(shared.contains("__RemoraHopMsg :: hop (_) => true"));
    assert!(shared.contains("__RemoraHopMsg :: read (_) => true"));
    assert!(!shared.contains("__RemoraHopMsg :: write (_) => true"));
    let reentrant_ids = find_fn(&reentrant, "impl Unmarshal for __RemoraHopMsg", "reentrant");
    assert!(reentrant_ids.contains("__RemoraHop_hop"));
    assert!(!reentrant_ids.contains("__RemoraHop_read"));
}
