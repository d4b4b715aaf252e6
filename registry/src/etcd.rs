//! The etcd backend (feature `etcd`): a [`Store`] kept in an etcd v3 cluster.
//!
//! Every record lives under `{prefix}{key}` as JSON, so
//! `etcdctl get --prefix /remora/` shows what the registry holds. Leases are etcd
//! leases and watches are etcd watches: lease expiry, ordering and atomicity are
//! etcd's own.
//!
//! A registry lease is not the etcd lease's id (a 64-bit number etcd hands out
//! in sequence) but a random [`LeaseId`], kept with its owner under
//! `{prefix}\0lease/{id}` and attached to the etcd lease it stands for, so it
//! expires and is revoked with it. Every use of a lease reads that key first:
//! registry nodes sharing one etcd agree on whose a lease is, and a restarted
//! registry node still knows.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use remora::{NodeId, ObjectId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::RegistryError;
use crate::store::{not_owner, BoxFuture, Change, Changes, LeaseId, Record, Store};

/// How many times `delete` with `only` retries when the record keeps changing
/// between its read and its conditional delete.
const DELETE_ATTEMPTS: usize = 8;

/// Responses larger than tonic's default of 4 MiB are normal for a big `list`.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// HTTP/2 pings on open streams, so that a watch on an etcd that vanished without
/// closing its connection is reported lost instead of waiting forever.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach etcd, and where in its key space the registry keeps its records.
///
/// ```
/// # use std::time::Duration;
/// # use remora_registry::EtcdOptions;
/// let options = EtcdOptions::new(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
///     .with_prefix("/prod/remora/")
///     .with_connect_timeout(Duration::from_secs(2));
/// assert_eq!(options.prefix, "/prod/remora/");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// The cluster's client URLs (`http://host:2379`; `host:2379` means `http://`).
    pub endpoints: Vec<String>,
    /// Prepended to every key. Registries that share an etcd cluster but must not see
    /// each other's names use different prefixes. Default `/remora/`.
    pub prefix: String,
    /// How long [`EtcdStore::connect_with`] waits for etcd's first answer. Default 5 s.
    pub connect_timeout: Duration,
    /// How long any one request may take before it fails with
    /// [`RegistryError::Backend`]. Default 5 s.
    pub request_timeout: Duration,
}

impl EtcdOptions {
    /// Options for the cluster at `endpoints`, with the default prefix and timeouts.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/remora/".to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Keeps records under `prefix` instead of `/remora/`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> EtcdOptions {
        self.prefix = prefix.into();
        self
    }

    /// Waits `timeout` for etcd's first answer when connecting.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> EtcdOptions {
        self.connect_timeout = timeout;
        self
    }

    /// Fails any request that takes longer than `timeout`.
    pub fn with_request_timeout(mut self, timeout: Duration) -> EtcdOptions {
        self.request_timeout = timeout;
        self
    }
}

/// A [`Store`] in an etcd v3 cluster.
///
/// What a user can rely on:
/// - Records are stored under `{prefix}{key}` as JSON of [`Record`]. Keys that
///   contain a NUL byte are the store's own (its leases): a record may not have
///   one, and `list` and `watch` never show them.
/// - Leases are etcd leases. A `ttl` is rounded up to whole seconds, at least one.
///   etcd raises a time to live below its minimum (1.5 × its election timeout,
///   rounded up: 2 s with etcd's defaults) and looks for expired leases about every
///   500 ms, so the records of an unrenewed lease disappear a little after
///   `max(ttl, minimum)`, never before `ttl`.
/// - [`Store::revoke`] of a lease that has already expired succeeds: the lease and
///   its records are gone either way. Putting a record under an expired lease fails
///   with [`RegistryError::LeaseExpired`].
/// - A lease answers to its owner only, whichever process's `EtcdStore` asks
///   (see [`Store`]). Clients with etcd credentials of their own can of course
///   write anything; the check protects leases from nodes that reach etcd only
///   through a registry node.
/// - A watch never drops a change: while its [`Changes`] is not read, the store
///   stops reading etcd's stream and etcd holds the events back. The watch ends with
///   [`RegistryError::WatchLost`] when etcd cancels it (for instance when the history
///   it needs was compacted) or the connection fails, and ends quietly when every
///   clone of the store has been dropped.
/// - Any request that etcd does not answer within
///   [`request_timeout`](EtcdOptions::request_timeout) fails with
///   [`RegistryError::Backend`].
///
/// Cloning is cheap; clones share one connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    /// The endpoints, comma separated, for error messages.
    endpoints: String,
    request_timeout: Duration,
    /// Dropped with the last clone of the store, which ends its watches.
    alive: Arc<tokio::sync::watch::Sender<()>>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:2379`) with default
    /// [`EtcdOptions`], and checks that it answers.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), remora_registry::RegistryError> {
    /// let store = remora_registry::EtcdStore::connect(["http://127.0.0.1:2379"]).await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<EtcdStore, RegistryError> {
        EtcdStore::connect_with(EtcdOptions::new(endpoints)).await
    }

    /// Connects with `options`, and checks that etcd answers within
    /// [`connect_timeout`](EtcdOptions::connect_timeout).
    pub async fn connect_with(options: EtcdOptions) -> Result<EtcdStore, RegistryError> {
        if options.endpoints.is_empty() {
            return Err(RegistryError::Backend {
                reason: "no etcd endpoints given; pass the cluster's client URLs, \
                         such as http://127.0.0.1:2379"
                    .to_owned(),
            });
        }
        let endpoints = options.endpoints.join(",");
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(PING_INTERVAL, PING_TIMEOUT);
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| RegistryError::Backend {
                reason: format!("cannot use the etcd endpoints {endpoints}: {e}"),
            })?;
        let (alive, _) = tokio::sync::watch::channel(());
        let mut store = EtcdStore {
            client,
            keys: Keys {
                prefix: options.prefix,
            },
            endpoints,
            request_timeout: options.connect_timeout,
            alive: Arc::new(alive),
        };
        // The client connects lazily: ask something to learn now whether etcd is there.
        let mut kv = store.client.kv_client();
        let probe = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_limit(1);
        store
            .call("connect", kv.get(store.keys.prefix.clone(), Some(probe)))
            .await?;
        store.request_timeout = options.request_timeout;
        Ok(store)
    }

    /// The prefix prepended to every key.
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// Runs one request under the request timeout, turning etcd's errors into ours.
    async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.error(what, e)),
            Err(_) => Err(RegistryError::Backend {
                reason: format!(
                    "{what}: etcd did not answer within {:?}; is etcd running at {} and reachable?",
                    self.request_timeout, self.endpoints
                ),
            }),
        }
    }

    fn error(&self, what: &str, e: etcd_client::Error) -> RegistryError {
        use etcd_client::Error as E;
        let unreachable = match &e {
            E::TransportError(_) | E::IoError(_) => true,
            E::GRpcStatus(status) => {
                if status.message().contains("lease not found") {
                    return RegistryError::LeaseExpired;
                }
                // Named by string: tonic is etcd-client's dependency, not ours. These
                // are etcd's own answers to a request it read; every other code
                // (Unavailable, Unknown, Internal, Cancelled, ...) is what tonic makes
                // of a connection that broke under the request, for instance an h2
                // stream reset as etcd died.
                !matches!(
                    format!("{:?}", status.code()).as_str(),
                    "InvalidArgument"
                        | "NotFound"
                        | "AlreadyExists"
                        | "PermissionDenied"
                        | "Unauthenticated"
                        | "ResourceExhausted"
                        | "FailedPrecondition"
                        | "Aborted"
                        | "OutOfRange"
                        | "Unimplemented"
                )
            }
            // How `LeaseClient::keep_alive` reports a renewal answered with TTL 0.
            E::LeaseKeepAliveError(message) if message.contains("not found") => {
                return RegistryError::LeaseExpired;
            }
            _ => false,
        };
        let reason = if unreachable {
            format!(
                "{what}: {e}; is etcd running at {} and reachable?",
                self.endpoints
            )
        } else {
            format!("{what}: etcd refused the request: {e}")
        };
        RegistryError::Backend { reason }
    }
}

/// Between the store's keys and etcd's: the prefix, and records as JSON.
#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
}

/// What the store keeps about a lease, as JSON under [`Keys::lease`].
#[derive(Debug, Serialize, Deserialize)]
struct LeaseInfo {
    /// The etcd lease it stands for.
    etcd: i64,
    /// The node it was granted to.
    owner: NodeId,
}

impl Keys {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Where the store keeps what it knows about `lease`: under the prefix (so
    /// registries with different prefixes do not see each other's leases), behind
    /// a NUL byte that no record key has.
    fn lease(&self, lease: LeaseId) -> String {
        format!("{}\0lease/{lease}", self.prefix)
    }

    /// Whether `key` (a record key, or an etcd key) is one of the store's own.
    fn reserved(key: &[u8]) -> bool {
        key.contains(&0)
    }

    /// Refuses a record key that the store keeps for itself.
    fn check(key: &str) -> Result<(), RegistryError> {
        if Keys::reserved(key.as_bytes()) {
            return Err(RegistryError::InvalidName {
                name: key.to_owned(),
                reason: "a NUL byte; keys with one are the etcd store's own".to_owned(),
            });
        }
        Ok(())
    }

    fn encode(record: &Record) -> Result<Vec<u8>, RegistryError> {
        serde_json::to_vec(record).map_err(|e| RegistryError::Backend {
            reason: format!("cannot encode the record for {:?}: {e}", record.key),
        })
    }

    /// The record in `kv`, keyed by its etcd key without the prefix.
    fn decode(&self, kv: &KeyValue) -> Result<Record, RegistryError> {
        let key = String::from_utf8_lossy(kv.key());
        let mut record: Record =
            serde_json::from_slice(kv.value()).map_err(|e| RegistryError::Backend {
                reason: format!(
                    "the value under {key:?} in etcd is not a Remora record ({e}); \
                     was it written by something else? Give the registry a prefix of its own"
                ),
            })?;
        if let Some(key) = key.strip_prefix(self.prefix.as_str()) {
            record.key = key.to_owned();
        }
        Ok(record)
    }

    /// [`Keys::decode`] where one foreign value must not fail the whole answer: it
    /// is logged and skipped.
    fn decode_or_skip(&self, kv: Option<&KeyValue>) -> Option<Record> {
        let kv = kv?;
        if Keys::reserved(kv.key()) {
            return None;
        }
        self.decode(kv)
            .map_err(|e| tracing::warn!(error = %e, "skipping a value that is not a record"))
            .ok()
    }
}

impl EtcdStore {
    /// The etcd lease behind `lease`, for `owner` to use in `operation`:
    /// [`RegistryError::LeaseExpired`] if the store does not know it (expired,
    /// revoked, never granted), [`RegistryError::Unauthorized`] if it is another
    /// node's. A lease's owner never changes, so what this read finds holds as long
    /// as the etcd lease does; an etcd lease that ends right after it makes the
    /// request that uses it fail with `LeaseExpired`.
    async fn owned_lease(
        &self,
        lease: LeaseId,
        owner: NodeId,
        operation: &str,
    ) -> Result<i64, RegistryError> {
        let mut kv = self.client.kv_client();
        let found = self
            .call("lease lookup", kv.get(self.keys.lease(lease), None))
            .await?;
        let Some(kv) = found.kvs().first() else {
            return Err(RegistryError::LeaseExpired);
        };
        let info: LeaseInfo =
            serde_json::from_slice(kv.value()).map_err(|e| RegistryError::Backend {
                reason: format!("the etcd record of lease {lease} is damaged: {e}"),
            })?;
        if info.owner != owner {
            return Err(not_owner(owner, operation));
        }
        Ok(info.etcd)
    }
}

impl Store for EtcdStore {
    fn grant(&self, ttl: Duration, owner: NodeId) -> BoxFuture<'_, Result<LeaseId, RegistryError>> {
        Box::pin(async move {
            let secs = ttl.as_nanos().div_ceil(1_000_000_000).max(1);
            let secs = i64::try_from(secs).unwrap_or(i64::MAX);
            let mut leases = self.client.lease_client();
            let granted = self.call("grant", leases.grant(secs, None)).await?;
            if !granted.error().is_empty() {
                return Err(RegistryError::Backend {
                    reason: format!("grant: etcd refused the lease: {}", granted.error()),
                });
            }
            let (etcd, lease) = (granted.id(), LeaseId::random());
            let info = serde_json::to_vec(&LeaseInfo { etcd, owner }).map_err(|e| {
                RegistryError::Backend {
                    reason: format!("grant: cannot encode the lease: {e}"),
                }
            })?;
            let mut kv = self.client.kv_client();
            let options = PutOptions::new().with_lease(etcd);
            let put = kv.put(self.keys.lease(lease), info, Some(options));
            if let Err(e) = self.call("grant", put).await {
                // Nobody can use the etcd lease without its record: end it now
                // rather than when it expires.
                let _ = self.call("grant", leases.revoke(etcd)).await;
                return Err(e);
            }
            Ok(lease)
        })
    }

    fn keep_alive(
        &self,
        lease: LeaseId,
        owner: NodeId,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let etcd = self.owned_lease(lease, owner, "renew").await?;
            // `LeaseClient::keep_alive` opens a keep-alive stream, sends one request and
            // reads its answer (an error for TTL 0: the lease expired); dropping the
            // keeper and the stream closes it. A stream per renewal costs a little
            // more than a cached keeper, and leaves no stale stream to recover from.
            let mut leases = self.client.lease_client();
            let (_keeper, _stream) = self.call("renew", leases.keep_alive(etcd)).await?;
            Ok(())
        })
    }

    fn revoke(&self, lease: LeaseId, owner: NodeId) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let etcd = match self.owned_lease(lease, owner, "end").await {
                Ok(etcd) => etcd,
                Err(RegistryError::LeaseExpired) => return Ok(()),
                Err(e) => return Err(e),
            };
            let mut leases = self.client.lease_client();
            match self.call("end", leases.revoke(etcd)).await {
                Ok(_) | Err(RegistryError::LeaseExpired) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn create(&self, record: Record, lease: LeaseId) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            Keys::check(&record.key)?;
            let lease = self.owned_lease(lease, record.owner, "bind under").await?;
            let key = self.keys.full(&record.key);
            let value = Keys::encode(&record)?;
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            let mut kv = self.client.kv_client();
            if self.call("create", kv.txn(txn)).await?.succeeded() {
                Ok(())
            } else {
                Err(RegistryError::AlreadyBound { name: record.key })
            }
        })
    }

    fn put(
        &self,
        record: Record,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Option<Record>, RegistryError>> {
        Box::pin(async move {
            Keys::check(&record.key)?;
            let lease = self.owned_lease(lease, record.owner, "bind under").await?;
            let key = self.keys.full(&record.key);
            let value = Keys::encode(&record)?;
            let options = PutOptions::new().with_lease(lease).with_prev_key();
            let mut kv = self.client.kv_client();
            let mut answer = self.call("put", kv.put(key, value, Some(options))).await?;
            // The put is done: a foreign previous value must not turn it into an error.
            Ok(self.keys.decode_or_skip(answer.take_prev_key().as_ref()))
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        only: Option<ObjectId>,
    ) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        Box::pin(async move {
            // The store's own keys are no records, and not anyone's to delete.
            if Keys::reserved(key.as_bytes()) {
                return Ok(None);
            }
            let full = self.keys.full(key);
            let mut kv = self.client.kv_client();
            let Some(only) = only else {
                let options = DeleteOptions::new().with_prev_key();
                let answer = self.call("delete", kv.delete(full, Some(options))).await?;
                return Ok(self.keys.decode_or_skip(answer.prev_kvs().first()));
            };
            // Read and check, then delete only if nothing changed the key in between.
            for _ in 0..DELETE_ATTEMPTS {
                let mut found = self.call("delete", kv.get(full.clone(), None)).await?;
                let Some(current) = found.take_kvs().into_iter().next() else {
                    return Ok(None);
                };
                let record = self.keys.decode(&current)?;
                if record.object() != only {
                    return Ok(None);
                }
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        full.clone(),
                        CompareOp::Equal,
                        current.mod_revision(),
                    )])
                    .and_then([TxnOp::delete(full.clone(), None)]);
                if self.call("delete", kv.txn(txn)).await?.succeeded() {
                    return Ok(Some(record));
                }
            }
            Err(RegistryError::Backend {
                reason: format!(
                    "delete: the record under {key:?} changed {DELETE_ATTEMPTS} times \
                     while it was being deleted; try again"
                ),
            })
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        Box::pin(async move {
            if Keys::reserved(key.as_bytes()) {
                return Ok(None);
            }
            let mut kv = self.client.kv_client();
            let answer = self.call("get", kv.get(self.keys.full(key), None)).await?;
            match answer.kvs().first() {
                Some(kv) => self.keys.decode(kv).map(Some),
                None => Ok(None),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Record>, RegistryError>> {
        Box::pin(async move {
            let mut kv = self
                .client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES);
            let options = GetOptions::new().with_prefix();
            let answer = self
                .call("list", kv.get(self.keys.full(prefix), Some(options)))
                .await?;
            let mut records: Vec<Record> = answer
                .kvs()
                .iter()
                .filter_map(|kv| self.keys.decode_or_skip(Some(kv)))
                .collect();
            // etcd answers in key order already; sorting keeps the promise regardless.
            records.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(records)
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Changes, RegistryError>> {
        Box::pin(async move {
            let mut client = self
                .client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES);
            let options = WatchOptions::new().with_prefix().with_prev_key();
            let mut stream = self
                .call("watch", client.watch(self.keys.full(prefix), Some(options)))
                .await?;
            // etcd confirms a watch before it sends events; once it has, every later
            // change under the prefix reaches the watch.
            let watch_id = match self.call("watch", stream.message()).await? {
                Some(answer) if answer.created() && !answer.canceled() => answer.watch_id(),
                Some(answer) => {
                    return Err(RegistryError::Backend {
                        reason: format!(
                            "watch: etcd refused to watch {prefix:?}: {}",
                            answer.cancel_reason()
                        ),
                    })
                }
                None => {
                    return Err(RegistryError::Backend {
                        reason: format!(
                            "watch: etcd at {} closed the watch before confirming it",
                            self.endpoints
                        ),
                    })
                }
            };
            let (tx, changes) = Changes::channel();
            let pump = Pump {
                keys: self.keys.clone(),
                stream,
                watch_id,
                tx,
                alive: self.alive.subscribe(),
            };
            tokio::spawn(pump.run());
            Ok(changes)
        })
    }
}

/// Moves one etcd watch's events into its [`Changes`], in order. It holds no clone
/// of the store, so that dropping the store ends it.
struct Pump {
    keys: Keys,
    stream: WatchStream,
    watch_id: i64,
    tx: mpsc::Sender<Result<Change, RegistryError>>,
    alive: tokio::sync::watch::Receiver<()>,
}

impl Pump {
    async fn run(mut self) {
        loop {
            let answer = tokio::select! {
                _ = self.tx.closed() => break,
                // Only ever Err: the last clone of the store is gone.
                _ = self.alive.changed() => break,
                answer = self.stream.message() => answer,
            };
            let answer = match answer {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    return self.lose("etcd closed the watch stream".to_owned()).await;
                }
                Err(e) => {
                    return self
                        .lose(format!("the etcd watch stream failed: {e}"))
                        .await;
                }
            };
            for event in answer.events() {
                let change = match event.event_type() {
                    EventType::Put => self.keys.decode_or_skip(event.kv()).map(Change::Put),
                    // Lease expiry shows as a delete too. prev_kv is missing only if
                    // etcd compacted it away, and then the record is unknown.
                    EventType::Delete => self
                        .keys
                        .decode_or_skip(event.prev_kv())
                        .map(Change::Deleted),
                };
                let Some(change) = change else { continue };
                // Waiting here is the back pressure on a slow reader; Err: it is gone.
                if self.tx.send(Ok(change)).await.is_err() {
                    return self.cancel().await;
                }
            }
            if answer.canceled() {
                let reason = if answer.compact_revision() > 0 {
                    format!(
                        "etcd compacted the history the watch needed (up to revision {})",
                        answer.compact_revision()
                    )
                } else {
                    format!("etcd cancelled the watch: {}", answer.cancel_reason())
                };
                return self.lose(reason).await;
            }
        }
        self.cancel().await;
    }

    /// Nobody listens any more: tells etcd to stop (dropping the stream would too,
    /// less politely).
    async fn cancel(mut self) {
        let _ = self.stream.cancel(self.watch_id).await;
    }

    async fn lose(self, reason: String) {
        let _ = self.tx.send(Err(RegistryError::WatchLost { reason })).await;
    }
}
