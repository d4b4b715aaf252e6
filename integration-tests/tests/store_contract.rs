//! The [`Store`] contract, checked against every backend.
//!
//! Each case is an `async fn(Arc<dyn Store>)`; [`contract_suite!`] makes one
//! `#[tokio::test]` per case for a backend. To add a backend, add one
//! `contract_suite!(name, async { Backend::new(store, ()) });` line.
//!
//! etcd cases start their own etcd process (see [`EtcdServer`]). Where etcd is not
//! installed they are compiled as ignored, so `cargo test` counts them as not run
//! (with `REMORA_REQUIRE_ETCD=1`, as in CI, the build fails instead: see
//! `integration-tests/etcd_probe.rs`).

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use remora::WireRef;
use remora::{NodeId, ObjectId};
use remora_integration_tests::etcd::EtcdServer;
use remora_integration_tests::SAFETY;
use remora_registry::{
    Change, Changes, EtcdOptions, EtcdStore, LeaseId, Record, RegistryError, Store,
};
use tokio::time::timeout;
use uuid::Uuid;

/// A long time to live, for leases a case does not expect to expire.
const LONG: Duration = Duration::from_secs(60);
/// The shortest time to live; leases granted with it expire unless renewed.
const SHORT: Duration = Duration::from_secs(1);
/// How often a case polls for an expiry.
const POLL: Duration = Duration::from_millis(100);

/// A store under test, and what must live as long as it (a server process).
struct Backend {
    store: Arc<dyn Store>,
    _keep: Box<dyn Any + Send>,
}

impl Backend {
    fn new(store: impl Store, keep: impl Any + Send) -> Backend {
        Backend {
            store: Arc::new(store),
            _keep: Box::new(keep),
        }
    }
}

/// An etcd process of the test's own, and a store on it.
async fn etcd_backend() -> Backend {
    let server = EtcdServer::start();
    let store = server.store().await;
    Backend::new(store, server)
}

/// One `#[tokio::test]` per contract case for the backend `$make` makes, each
/// with the attributes given first (an etcd backend's tests are ignored where
/// etcd is not installed).
macro_rules! contract_suite {
    ($(#[$attr:meta])* $backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            async fn run<F: Future<Output = ()>>(case: impl FnOnce(Arc<dyn Store>) -> F) {
                let backend = $make.await;
                case(backend.store.clone()).await;
            }

            contract_suite!(@cases { $(#[$attr])* }
                create_on_a_taken_key_is_already_bound,
                put_returns_the_record_it_replaced,
                get_and_list_by_prefix_in_key_order,
                delete_only_removes_the_named_object,
                revoke_deletes_the_leases_records,
                records_of_an_unrenewed_lease_expire,
                keep_alive_keeps_records_past_their_ttl,
                keep_alive_of_an_expired_lease_is_lease_expired,
                watch_sees_puts_and_deletes_in_order_with_expiry,
                watch_only_sees_its_prefix,
                a_lease_answers_only_to_its_owner,
                another_nodes_renewals_do_not_keep_a_lease,
                unknown_lease_ids_are_expired_and_ids_are_not_counted,
            );
        }
    };
    (@cases $attrs:tt $($case:ident),* $(,)?) => {
        $(contract_suite!(@case $attrs $case);)*
    };
    (@case { $(#[$attr:meta])* } $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $case() {
            run(super::$case).await;
        }
    };
}

contract_suite!(
    #[cfg_attr(
        not(etcd),
        ignore = "etcd is not installed (apt-get install etcd-server)"
    )]
    etcd_store,
    etcd_backend()
);
contract_suite!(memory_store, async {
    Backend::new(remora_registry::MemoryStore::new(), ())
});

// ---- helpers ----

/// A record under `key` pointing at a made-up object.
fn record(key: &str) -> Record {
    Record {
        key: key.to_owned(),
        target: WireRef {
            node: NodeId::random(),
            incarnation: 1,
            object: ObjectId::random(),
            interface: 0x5eed,
            addr: Some("127.0.0.1:4433".to_owned()),
        },
        interface: "Counter".to_owned(),
        owner: OWNER,
    }
}

/// The node the cases' leases are granted to, and their records' owner.
const OWNER: NodeId = NodeId::from_u128(0x0a);
/// Another node of the cluster.
const INTRUDER: NodeId = NodeId::from_u128(0x0b);

fn keys(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.key.as_str()).collect()
}

/// The next change, which must come within [`SAFETY`].
async fn next(changes: &mut Changes) -> Change {
    match timeout(SAFETY, changes.next()).await {
        Ok(Some(Ok(change))) => change,
        Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
        Ok(None) => panic!("the watch ended"),
        Err(_) => panic!("no change within {SAFETY:?}"),
    }
}

/// Polls `get(key)` every [`POLL`] until it is `None`; panics after [`SAFETY`].
async fn until_gone(store: &dyn Store, key: &str) -> Duration {
    let start = Instant::now();
    for _ in 0..(SAFETY.as_millis() / POLL.as_millis()) {
        if store.get(key).await.expect("get").is_none() {
            return start.elapsed();
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{key:?} was still there after {SAFETY:?}");
}

// ---- the contract ----

async fn create_on_a_taken_key_is_already_bound(store: Arc<dyn Store>) {
    let lease = store.grant(LONG, OWNER).await.expect("grant");
    let first = record("names/counter");
    store.create(first.clone(), lease).await.expect("create");
    let second = record("names/counter");
    assert_eq!(
        store.create(second, lease).await,
        Err(RegistryError::AlreadyBound {
            name: "names/counter".to_owned()
        })
    );
    assert_eq!(
        store.get("names/counter").await.expect("get"),
        Some(first),
        "a refused create leaves the record"
    );
}

async fn put_returns_the_record_it_replaced(store: Arc<dyn Store>) {
    let lease = store.grant(LONG, OWNER).await.expect("grant");
    let first = record("names/a");
    let second = record("names/a");
    assert_eq!(store.put(first.clone(), lease).await, Ok(None));
    assert_eq!(store.put(second.clone(), lease).await, Ok(Some(first)));
    assert_eq!(store.get("names/a").await, Ok(Some(second)));
}

async fn get_and_list_by_prefix_in_key_order(store: Arc<dyn Store>) {
    let lease = store.grant(LONG, OWNER).await.expect("grant");
    for key in ["svc/b", "other/a", "svc/c/x", "svc", "svc/a", "svcs/z"] {
        store.put(record(key), lease).await.expect("put");
    }
    let svc = store.list("svc/").await.expect("list");
    assert_eq!(keys(&svc), ["svc/a", "svc/b", "svc/c/x"]);
    let all = store.list("").await.expect("list");
    assert_eq!(
        keys(&all),
        ["other/a", "svc", "svc/a", "svc/b", "svc/c/x", "svcs/z"]
    );
    assert_eq!(store.list("nothing/").await, Ok(vec![]));
    let got = store.get("svc/c/x").await.expect("get").expect("a record");
    assert_eq!(got.key, "svc/c/x");
    assert_eq!(got, svc[2]);
    assert_eq!(
        store.get("svc/c").await,
        Ok(None),
        "get is exact, not a prefix"
    );
}

async fn delete_only_removes_the_named_object(store: Arc<dyn Store>) {
    let lease = store.grant(LONG, OWNER).await.expect("grant");
    let bound = record("names/x");
    store.put(bound.clone(), lease).await.expect("put");
    let other = ObjectId::random();
    assert_eq!(store.delete("names/x", Some(other)).await, Ok(None));
    assert_eq!(
        store.get("names/x").await,
        Ok(Some(bound.clone())),
        "a delete for another object leaves the record"
    );
    assert_eq!(
        store.delete("names/x", Some(bound.object())).await,
        Ok(Some(bound.clone()))
    );
    assert_eq!(store.get("names/x").await, Ok(None));
    assert_eq!(store.delete("names/x", None).await, Ok(None));
    assert_eq!(
        store.delete("names/x", Some(bound.object())).await,
        Ok(None)
    );
    store.put(bound.clone(), lease).await.expect("put");
    assert_eq!(store.delete("names/x", None).await, Ok(Some(bound)));
}

async fn revoke_deletes_the_leases_records(store: Arc<dyn Store>) {
    let doomed = store.grant(LONG, OWNER).await.expect("grant");
    let kept = store.grant(LONG, OWNER).await.expect("grant");
    store.put(record("r/a"), doomed).await.expect("put");
    store.create(record("r/b"), doomed).await.expect("create");
    store.put(record("r/c"), kept).await.expect("put");
    store.revoke(doomed, OWNER).await.expect("revoke");
    assert_eq!(keys(&store.list("r/").await.expect("list")), ["r/c"]);
    assert_eq!(
        store.keep_alive(doomed, OWNER).await,
        Err(RegistryError::LeaseExpired),
        "a revoked lease is over"
    );
    store
        .keep_alive(kept, OWNER)
        .await
        .expect("the other lease lives");
}

async fn records_of_an_unrenewed_lease_expire(store: Arc<dyn Store>) {
    let lease = store.grant(SHORT, OWNER).await.expect("grant");
    let kept = store.grant(LONG, OWNER).await.expect("grant");
    store.put(record("e/short"), lease).await.expect("put");
    store.put(record("e/long"), kept).await.expect("put");
    until_gone(&*store, "e/short").await;
    assert_eq!(keys(&store.list("e/").await.expect("list")), ["e/long"]);
}

async fn keep_alive_keeps_records_past_their_ttl(store: Arc<dyn Store>) {
    let lease = store.grant(SHORT, OWNER).await.expect("grant");
    store.put(record("k/a"), lease).await.expect("put");
    // Three times the longest time to live a backend may give a 1 s lease (etcd's
    // default minimum is 2 s), renewed every 300 ms.
    let until = Instant::now() + Duration::from_secs(6);
    for _ in 0..40 {
        if Instant::now() >= until {
            break;
        }
        store.keep_alive(lease, OWNER).await.expect("keep_alive");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        store.get("k/a").await.expect("get").is_some(),
        "a renewed lease keeps its records"
    );
}

async fn keep_alive_of_an_expired_lease_is_lease_expired(store: Arc<dyn Store>) {
    let lease = store.grant(SHORT, OWNER).await.expect("grant");
    store.put(record("x/a"), lease).await.expect("put");
    until_gone(&*store, "x/a").await;
    assert_eq!(
        store.keep_alive(lease, OWNER).await,
        Err(RegistryError::LeaseExpired)
    );
}

async fn watch_sees_puts_and_deletes_in_order_with_expiry(store: Arc<dyn Store>) {
    let mut changes = store.watch("w/").await.expect("watch");
    let long = store.grant(LONG, OWNER).await.expect("grant");
    let short = store.grant(SHORT, OWNER).await.expect("grant");
    let a1 = record("w/a");
    let a2 = record("w/a");
    let b = record("w/b");
    store.put(a1.clone(), long).await.expect("put");
    store.put(a2.clone(), long).await.expect("put");
    store.create(b.clone(), short).await.expect("create");
    store.delete("w/a", None).await.expect("delete");
    assert_eq!(next(&mut changes).await, Change::Put(a1));
    assert_eq!(next(&mut changes).await, Change::Put(a2.clone()));
    assert_eq!(next(&mut changes).await, Change::Put(b.clone()));
    assert_eq!(next(&mut changes).await, Change::Deleted(a2));
    // No renewal: the short lease expires and takes `b` with it.
    assert_eq!(next(&mut changes).await, Change::Deleted(b));
    let c = record("w/c");
    store.put(c.clone(), long).await.expect("put");
    store.revoke(long, OWNER).await.expect("revoke");
    assert_eq!(next(&mut changes).await, Change::Put(c.clone()));
    assert_eq!(next(&mut changes).await, Change::Deleted(c));
}

async fn watch_only_sees_its_prefix(store: Arc<dyn Store>) {
    let mut changes = store.watch("w/x/").await.expect("watch");
    let lease = store.grant(LONG, OWNER).await.expect("grant");
    let inside = [record("w/x/1"), record("w/x/2")];
    store.put(record("w/y/1"), lease).await.expect("put");
    store.put(inside[0].clone(), lease).await.expect("put");
    store.put(record("w/xy"), lease).await.expect("put");
    store.put(record("w/x"), lease).await.expect("put");
    store.delete("w/y/1", None).await.expect("delete");
    store.put(inside[1].clone(), lease).await.expect("put");
    // Changes come in order, so anything outside the prefix would show up before
    // the second record.
    assert_eq!(next(&mut changes).await, Change::Put(inside[0].clone()));
    assert_eq!(next(&mut changes).await, Change::Put(inside[1].clone()));
}

async fn a_lease_answers_only_to_its_owner(store: Arc<dyn Store>) {
    let lease = store.grant(LONG, OWNER).await.expect("grant");
    let mine = record("o/mine");
    store.create(mine.clone(), lease).await.expect("create");
    let unauthorized = |answer: Result<(), RegistryError>, what: &str| match answer {
        Err(RegistryError::Unauthorized { caller, operation }) => {
            assert_eq!(caller, INTRUDER.to_string(), "{what}");
            assert!(operation.contains("another node"), "{what}: {operation}");
        }
        other => panic!("{what}: expected Unauthorized, got {other:?}"),
    };
    unauthorized(store.keep_alive(lease, INTRUDER).await, "keep_alive");
    unauthorized(store.revoke(lease, INTRUDER).await, "revoke");
    // Records in the intruder's name, and records claiming to be the owner's are
    // told apart by their owner field; a registry node checks that field against
    // the caller before the store sees it.
    let theirs = |key: &str| Record {
        owner: INTRUDER,
        ..record(key)
    };
    unauthorized(store.create(theirs("o/new"), lease).await, "create");
    unauthorized(
        store.put(theirs("o/mine"), lease).await.map(|_| ()),
        "put over the owner's record",
    );
    unauthorized(store.put(theirs("o/other"), lease).await.map(|_| ()), "put");
    assert_eq!(
        store.list("o/").await.expect("list"),
        vec![mine.clone()],
        "refusals change nothing"
    );
    store
        .keep_alive(lease, OWNER)
        .await
        .expect("the owner renews");
    store.revoke(lease, OWNER).await.expect("the owner ends it");
    assert_eq!(store.get("o/mine").await, Ok(None));
}

async fn another_nodes_renewals_do_not_keep_a_lease(store: Arc<dyn Store>) {
    let lease = store.grant(SHORT, OWNER).await.expect("grant");
    store.put(record("o/short"), lease).await.expect("put");
    let start = Instant::now();
    let mut last = Ok(());
    while start.elapsed() < SAFETY {
        last = store.keep_alive(lease, INTRUDER).await;
        if last != Err(RegistryError::LeaseExpired) {
            assert!(
                matches!(last, Err(RegistryError::Unauthorized { .. })),
                "{last:?}"
            );
        }
        if store.get("o/short").await.expect("get").is_none() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        store.get("o/short").await,
        Ok(None),
        "gone within {SAFETY:?}"
    );
    // etcd keeps a 1 s lease for its minimum time to live (2 s by default).
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(last.is_err());
    assert_eq!(
        store.keep_alive(lease, INTRUDER).await,
        Err(RegistryError::LeaseExpired)
    );
}

async fn unknown_lease_ids_are_expired_and_ids_are_not_counted(store: Arc<dyn Store>) {
    let first = store.grant(LONG, OWNER).await.expect("grant");
    let second = store.grant(LONG, OWNER).await.expect("grant");
    let distance = first.as_u128().abs_diff(second.as_u128());
    assert!(distance > 1 << 64, "{first} and {second} are neighbours");
    let kept = record("g/kept");
    store.create(kept.clone(), first).await.expect("create");
    for guess in [
        LeaseId::from_u128(0),
        LeaseId::from_u128(1),
        LeaseId::from_u128(first.as_u128() + 1),
        LeaseId::from_u128(first.as_u128() - 1),
        LeaseId::random(),
    ] {
        for node in [OWNER, INTRUDER] {
            assert_eq!(
                store.keep_alive(guess, node).await,
                Err(RegistryError::LeaseExpired)
            );
            let guessed = Record {
                owner: node,
                ..record("g/guessed")
            };
            assert_eq!(
                store.create(guessed.clone(), guess).await,
                Err(RegistryError::LeaseExpired)
            );
            assert_eq!(
                store.put(guessed, guess).await,
                Err(RegistryError::LeaseExpired)
            );
            assert_eq!(store.revoke(guess, node).await, Ok(()), "nothing to end");
        }
    }
    assert_eq!(store.list("g/").await, Ok(vec![kept]));
}

// ---- etcd only ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server)"
)]
async fn etcd_records_are_readable_json_under_the_prefix() {
    let server = EtcdServer::start();
    eprintln!("etcd started in {:?}", server.started_in);
    let prefix = format!("/json-{}/", Uuid::new_v4());
    let store = EtcdStore::connect_with(EtcdOptions::new([server.url()]).with_prefix(&prefix))
        .await
        .expect("connect");
    assert_eq!(store.prefix(), prefix);
    let lease = store.grant(LONG, OWNER).await.expect("grant");
    let bound = record("names/json");
    store.put(bound.clone(), lease).await.expect("put");
    // Another store without the prefix sees the raw key; its value is the record.
    let raw = EtcdStore::connect_with(EtcdOptions::new([server.url()]).with_prefix(""))
        .await
        .expect("connect");
    let found = raw.list(&prefix).await.expect("list");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, format!("{prefix}names/json"));
    assert_eq!(found[0].target, bound.target);
    // Putting under a revoked lease is refused as an expired lease.
    store.revoke(lease, OWNER).await.expect("revoke");
    assert_eq!(
        store.put(record("names/late"), lease).await,
        Err(RegistryError::LeaseExpired)
    );
    assert_eq!(
        store.revoke(lease, OWNER).await,
        Ok(()),
        "revoking twice is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_connect_to_nothing_says_what_to_check() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let options = EtcdOptions::new([url.clone()]).with_connect_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let error = EtcdStore::connect_with(options)
        .await
        .expect_err("nothing to connect to");
    assert!(
        started.elapsed() < SAFETY,
        "connect gives up in bounded time"
    );
    let RegistryError::Backend { reason } = &error else {
        panic!("expected a backend error, got {error:?}");
    };
    assert!(
        reason.contains("is etcd running at") && reason.contains(&url),
        "{reason}"
    );
    let none: [&str; 0] = [];
    assert!(matches!(
        EtcdStore::connect(none).await,
        Err(RegistryError::Backend { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server)"
)]
async fn etcd_watch_is_lost_when_etcd_dies() {
    let mut server = EtcdServer::start();
    let store = server.store().await;
    let mut changes = store.watch("").await.expect("watch");
    let lease = store.grant(LONG, OWNER).await.expect("grant");
    store.put(record("d/a"), lease).await.expect("put");
    assert!(matches!(next(&mut changes).await, Change::Put(_)));
    server.kill();
    match timeout(SAFETY, changes.next()).await {
        Ok(Some(Err(RegistryError::WatchLost { reason }))) => eprintln!("lost: {reason}"),
        other => panic!("expected WatchLost, got {other:?}"),
    }
    assert!(
        timeout(SAFETY, changes.next())
            .await
            .expect("ends")
            .is_none(),
        "the watch ends after reporting the loss"
    );
    let error = store.get("d/a").await.expect_err("etcd is gone");
    assert!(
        matches!(&error, RegistryError::Backend { reason } if reason.contains("is etcd running")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server)"
)]
async fn etcd_dropping_the_store_ends_its_watches() {
    let server = EtcdServer::start();
    let store = server.store().await;
    let mut changes = store.watch("").await.expect("watch");
    drop(store);
    assert!(
        timeout(SAFETY, changes.next())
            .await
            .expect("ends")
            .is_none(),
        "a watch ends quietly when its store is dropped"
    );
}
