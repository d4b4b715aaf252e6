//! The echo actor every remote-style workload calls (BENCH.md's server actor):
//! `echo(u64) -> u64` and `echo_bytes(Vec<u8>) -> Vec<u8>`.

use remora::Actor;

#[remora::remote]
pub trait Echo {
    /// Returns `v`.
    async fn echo(&mut self, v: u64) -> u64;
    /// Returns `data`.
    async fn echo_bytes(&mut self, data: Vec<u8>) -> Vec<u8>;
    /// Returns `v`, exactly once (`w2.once`: what the guarantee costs).
    #[exactly_once]
    async fn echo_once(&mut self, v: u64) -> u64;
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
}
