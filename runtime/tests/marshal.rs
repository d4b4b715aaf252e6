//! The marshalling path a remote call takes, without a transport: arguments to
//! bytes, bytes to the interface's message (the skeleton), the handler's value back
//! to bytes, and every way that can fail with an error the caller can act on.

use std::sync::mpsc;

use remora::rt::{Dispatch, Method, Replier, Unmarshal};
use remora::wire::codec::{encode_value, Limits};
use remora::{Actor, CallError, Interface};

#[remora::remote(name = "test.Shop")]
pub trait Shop {
    async fn order(&mut self, item: String, count: u32) -> Result<u64, String>;
    async fn stock(&mut self) -> Vec<(String, u32)>;
    async fn refer(&mut self, other: ShopRef) -> bool;
}

struct Store {
    stock: Vec<(String, u32)>,
}
impl Actor for Store {}
impl Shop for Store {
    async fn order(&mut self, item: String, count: u32) -> Result<u64, String> {
        match self.stock.iter_mut().find(|(name, _)| *name == item) {
            Some((_, left)) if *left >= count => {
                *left -= count;
                Ok(count as u64 * 3)
            }
            _ => Err(format!("not enough {item}")),
        }
    }
    async fn stock(&mut self) -> Vec<(String, u32)> {
        self.stock.clone()
    }
    async fn refer(&mut self, _other: ShopRef) -> bool {
        true
    }
}

type Msg = <ShopRef as Interface>::Msg;

/// A replier whose encoded result arrives on the returned channel.
fn replier() -> (Replier, mpsc::Receiver<Result<Vec<u8>, CallError>>) {
    let (tx, rx) = mpsc::channel();
    (
        Replier::new(move |r| tx.send(r.map(|b| b.to_vec())).unwrap()),
        rx,
    )
}

async fn call(store: &mut Store, method: u64, args: &[u8]) -> Result<Vec<u8>, CallError> {
    let (replier, replies) = replier();
    let msg = Msg::unmarshal(
        method,
        remora::rt::Args::Encoded(args),
        &Limits::default(),
        replier,
    )?;
    msg.dispatch(store.into()).await;
    replies.try_recv().expect("the handler answered")
}

fn store() -> Store {
    Store {
        stock: vec![("apple".into(), 5)],
    }
}

#[tokio::test]
async fn a_call_round_trips_through_bytes() {
    let mut store = store();
    let order_id = remora::stable_id("test.Shop.order");
    let args = remora::rt::__private::encode_args(&__RemoraShop_order {
        item: "apple".into(),
        count: 2,
    })
    .unwrap();
    let reply = call(&mut store, order_id, &args).await.unwrap();
    let value: Result<u64, String> =
        remora::rt::__private::decode_reply(&reply, &Limits::default()).unwrap();
    assert_eq!(value, Ok(6));

    let args = remora::rt::__private::encode_args(&__RemoraShop_stock {}).unwrap();
    let reply = call(&mut store, remora::stable_id("test.Shop.stock"), &args).await;
    let stock: Vec<(String, u32)> =
        remora::rt::__private::decode_reply(&reply.unwrap(), &Limits::default()).unwrap();
    assert_eq!(stock, vec![("apple".to_string(), 3)], "the order ran once");
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(value, &mut out).unwrap();
    out
}

#[test]
fn ids_and_argument_tables_come_from_the_names() {
    assert_eq!(Msg::INTERFACE, "test.Shop");
    assert_eq!(Msg::INTERFACE_ID, <ShopRef as Interface>::ID);
    assert_eq!(
        <__RemoraShop_order as Method>::ARGS,
        &[("item", "String"), ("count", "u32")]
    );
}

#[tokio::test]
async fn an_unknown_method_is_refused_by_name_and_id() {
    let err = call(&mut store(), 42, &encode(&())).await.unwrap_err();
    assert_eq!(
        err,
        CallError::UnknownMethod {
            interface: "test.Shop".into(),
            method: 42
        }
    );
    assert!(!err.may_have_executed());
}

#[tokio::test]
async fn a_badly_typed_argument_is_named_with_its_type() {
    // The caller's idea of `order` has the arguments the other way round.
    let args = encode(&(7u32, "apple"));
    let err = call(&mut store(), remora::stable_id("test.Shop.order"), &args)
        .await
        .unwrap_err();
    let CallError::Marshalling {
        what,
        type_name,
        reason,
    } = &err
    else {
        panic!("expected a marshalling error, got {err:?}");
    };
    assert_eq!(what, "argument `item` of test.Shop.order");
    assert_eq!(type_name, "String");
    assert!(!reason.is_empty());
    assert!(err.to_string().contains("argument `item`"), "{err}");
}

#[tokio::test]
async fn missing_arguments_and_garbage_are_marshalling_errors_not_panics() {
    let order = remora::stable_id("test.Shop.order");
    for args in [
        encode(&("apple",)),
        vec![0xc1],
        Vec::new(),
        vec![0x91; 10_000],
    ] {
        let err = call(&mut store(), order, &args).await.unwrap_err();
        assert!(matches!(err, CallError::Marshalling { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn references_refuse_to_be_serialized_by_hand() {
    let node = remora::Node::builder().build().await.unwrap();
    let shop: ShopRef = node.spawn(store());
    let err = remora::rt::__private::encode_args(&__RemoraShop_refer { other: shop }).unwrap_err();
    assert!(
        err.to_string().contains("only be marshalled by a node"),
        "{err}"
    );
    node.shutdown().await;
}

#[remora::remote]
pub trait Blob {
    async fn echo(&mut self, data: Vec<u8>) -> Vec<u8>;
}

#[test]
fn byte_vectors_travel_as_messagepack_binary() {
    let args = remora::rt::__private::encode_args(&__RemoraBlob_echo {
        data: vec![200; 1000],
    })
    .unwrap();
    // [bin16 len=1000 ...]: 1 + 3 + 1000 bytes, not 1000 two-byte integers.
    assert_eq!(args.len(), 1 + 3 + 1000);
    assert_eq!(&args[..2], &[0x91, 0xc5]);
    let reply = remora::rt::__private::encode_reply(&vec![200u8; 1000]).unwrap();
    assert_eq!(reply.len(), 3 + 1000);
    let back: Vec<u8> = remora::rt::__private::decode_reply(&reply, &Limits::default()).unwrap();
    assert_eq!(back, vec![200; 1000]);
}
