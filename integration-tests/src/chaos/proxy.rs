//! A UDP relay that mistreats datagrams, for QUIC links under loss, delay,
//! reordering, duplication and partitions on a kernel without netem.
//!
//! A [`FaultProxy`] listens on a loopback port and relays each client's
//! datagrams to one upstream address from a socket of its own (one per client
//! address), and the upstream's answers back. Every datagram, either way, meets
//! the current [`Faults`]: dropped with probability `drop`, delayed by a uniform
//! `delay`, held back a little longer with probability `reorder` (so later ones
//! overtake it), sent twice with probability `duplicate`; while `partitioned`,
//! everything is dropped. Faults change at any time ([`FaultProxy::set`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::rng::Rng;

/// How many client addresses one proxy relays for at most (a QUIC node uses
/// one socket; more means something is wrong).
const MAX_FLOWS: usize = 64;
/// Extra delay of a reordered datagram.
const REORDER_BY: (u64, u64) = (5, 40);

/// What happens to datagrams now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability a datagram is lost.
    pub drop: f64,
    /// Probability a datagram is sent twice.
    pub duplicate: f64,
    /// Probability a datagram is held back past later ones.
    pub reorder: f64,
    /// Delay of every datagram, uniform in this range (milliseconds).
    pub delay_ms: (u64, u64),
    /// Drop everything, both ways.
    pub partitioned: bool,
}

/// What a proxy did, since it started.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    pub relayed: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
}

struct Shared {
    faults: Mutex<Faults>,
    rng: Mutex<Rng>,
    counts: ProxyCounts,
}

/// A fault-injecting UDP relay toward one upstream address; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and relays to `upstream`.
    pub async fn start(upstream: SocketAddr, seed: u64) -> std::io::Result<FaultProxy> {
        let listener = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(Rng::new(seed)),
            counts: ProxyCounts::default(),
        });
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(relay_clients(
            listener,
            upstream,
            shared.clone(),
            tasks.clone(),
        ));
        tasks.lock().push(accept);
        Ok(FaultProxy {
            addr,
            shared,
            tasks,
        })
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Faults from now on.
    pub fn set(&self, faults: Faults) {
        *self.shared.faults.lock() = faults;
    }

    /// Faults now.
    pub fn faults(&self) -> Faults {
        *self.shared.faults.lock()
    }

    /// No faults from now on.
    pub fn heal(&self) {
        self.set(Faults::default());
    }

    pub fn counts(&self) -> &ProxyCounts {
        &self.shared.counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// Relays client datagrams upstream, opening a socket (and a task relaying its
/// answers back) per new client address.
async fn relay_clients(
    listener: Arc<UdpSocket>,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, client)) = listener.recv_from(&mut buf).await else {
            continue;
        };
        let socket = match flows.get(&client) {
            Some(socket) => socket.clone(),
            None if flows.len() >= MAX_FLOWS => continue,
            None => {
                let Ok(socket) = open_upstream(upstream).await else {
                    continue;
                };
                let back = tokio::spawn(relay_back(
                    socket.clone(),
                    listener.clone(),
                    client,
                    shared.clone(),
                ));
                tasks.lock().push(back);
                flows.insert(client, socket.clone());
                socket
            }
        };
        let datagram = buf[..len].to_vec();
        forward(&shared, datagram, move |d| {
            let socket = socket.clone();
            async move {
                let _ = socket.send(&d).await;
            }
        })
        .await;
    }
}

async fn open_upstream(upstream: SocketAddr) -> std::io::Result<Arc<UdpSocket>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(upstream).await?;
    Ok(Arc::new(socket))
}

/// Relays the upstream's answers on `socket` back to `client`.
async fn relay_back(
    socket: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        // An ICMP unreachable (upstream restarting) fails one recv; go on.
        let Ok(len) = socket.recv(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let datagram = buf[..len].to_vec();
        let listener = listener.clone();
        forward(&shared, datagram, move |d| {
            let listener = listener.clone();
            async move {
                let _ = listener.send_to(&d, client).await;
            }
        })
        .await;
    }
}

/// The fate of one datagram: lost, or sent (now or later) once or twice.
async fn forward<S, F>(shared: &Shared, datagram: Vec<u8>, send: S)
where
    S: Fn(Vec<u8>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let faults = *shared.faults.lock();
    let counts = &shared.counts;
    let (lost, copies, delays) = {
        let mut rng = shared.rng.lock();
        let lost = faults.partitioned || rng.chance(faults.drop);
        let copies = if rng.chance(faults.duplicate) { 2 } else { 1 };
        let mut delays = [Duration::ZERO; 2];
        for delay in delays.iter_mut() {
            *delay = rng.millis(faults.delay_ms.0, faults.delay_ms.1);
            if rng.chance(faults.reorder) {
                *delay += rng.millis(REORDER_BY.0, REORDER_BY.1);
                counts.reordered.fetch_add(1, Ordering::Relaxed);
            }
        }
        (lost, copies, delays)
    };
    if lost {
        counts.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    counts.relayed.fetch_add(1, Ordering::Relaxed);
    if copies == 2 {
        counts.duplicated.fetch_add(1, Ordering::Relaxed);
    }
    for delay in delays.into_iter().take(copies) {
        if delay.is_zero() {
            send(datagram.clone()).await;
        } else {
            let sending = send(datagram.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                sending.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> (Arc<UdpSocket>, SocketAddr) {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let echo = socket.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((len, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..len], from).await;
            }
        });
        (socket, addr)
    }

    async fn round_trip(client: &UdpSocket, proxy: SocketAddr, byte: u8) -> bool {
        client.send_to(&[byte], proxy).await.unwrap();
        let mut buf = [0u8; 16];
        let got = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await;
        matches!(got, Ok(Ok(1))) && buf[0] == byte
    }

    #[tokio::test]
    async fn relays_both_ways_and_partitions() {
        let (_echo, upstream) = echo().await;
        let proxy = FaultProxy::start(upstream, 7).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(round_trip(&client, proxy.addr(), 1).await, "relayed");
        proxy.set(Faults {
            partitioned: true,
            ..Faults::default()
        });
        assert!(!round_trip(&client, proxy.addr(), 2).await, "partitioned");
        proxy.heal();
        assert!(round_trip(&client, proxy.addr(), 3).await, "healed");
    }

    #[tokio::test]
    async fn duplicates_and_drops_as_configured() {
        let (_echo, upstream) = echo().await;
        let proxy = FaultProxy::start(upstream, 9).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        proxy.set(Faults {
            duplicate: 1.0,
            ..Faults::default()
        });
        client.send_to(&[5], proxy.addr()).await.unwrap();
        let mut buf = [0u8; 16];
        let mut got = 0;
        // Duplicated each way: four copies come back.
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(200), client.recv(&mut buf)).await
        {
            got += 1;
        }
        assert_eq!(got, 4);
        proxy.set(Faults {
            drop: 1.0,
            ..Faults::default()
        });
        assert!(!round_trip(&client, proxy.addr(), 6).await, "dropped");
        assert!(proxy.counts().dropped.load(Ordering::Relaxed) >= 1);
    }
}
