//! The echo actor every remote-style workload calls (BENCH.md's server actor):
//! `echo(u64) -> u64` and `echo_bytes(Vec<u8>) -> Vec<u8>`, and for the pipe
//! workloads (`p1`, `p2`) streams of numbers and of blobs; and its process's
//! allocation count, for `w2.allocs_per_call.server`.

use bytes::Bytes;
use remora::{pipe, Actor};

#[remora::remote]
pub trait Echo {
    /// Returns `v`.
    async fn echo(&mut self, v: u64) -> u64;
    /// Returns `data`.
    async fn echo_bytes(&mut self, data: Vec<u8>) -> Vec<u8>;
    /// Returns `v`, exactly once (`w2.once`: what the guarantee costs).
    #[exactly_once]
    async fn echo_once(&mut self, v: u64) -> u64;
    /// `p1`: the numbers `0..n` through a pipe of `capacity` items.
    async fn count(&mut self, n: u64, capacity: u64) -> pipe::Receiver<u64>;
    /// `p2`: `n` blobs of `size` bytes through a pipe of `capacity` items.
    async fn blobs(&mut self, n: u64, size: u64, capacity: u64) -> pipe::Receiver<Bytes>;
    /// The heap allocations this actor's process has made so far (`alloc`): how
    /// `w2.allocs_per_call.server` is read from the server's process.
    async fn allocations(&mut self) -> u64;
}

/// Serves [`Echo`]; holds no state.
pub struct EchoActor;

impl Actor for EchoActor {}

impl Echo for EchoActor {
    async fn echo(&mut self, v: u64) -> u64 {
        v
    }

    async fn echo_bytes(&mut self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn echo_once(&mut self, v: u64) -> u64 {
        v
    }

    async fn count(&mut self, n: u64, capacity: u64) -> pipe::Receiver<u64> {
        let (tx, rx) = pipe::channel(capacity as usize);
        // The producer is a task of its own, as a streaming method's would be:
        // the actor is free for its next message while the items flow.
        tokio::spawn(async move {
            for i in 0..n {
                if tx.send(i).await.is_err() {
                    break; // the receiver is gone
                }
            }
        });
        rx
    }

    async fn blobs(&mut self, n: u64, size: u64, capacity: u64) -> pipe::Receiver<Bytes> {
        let (tx, rx) = pipe::channel(capacity as usize);
        let blob: Bytes = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        tokio::spawn(async move {
            for _ in 0..n {
                if tx.send(blob.clone()).await.is_err() {
                    break;
                }
            }
        });
        rx
    }

    async fn allocations(&mut self) -> u64 {
        crate::alloc::allocations()
    }
}
