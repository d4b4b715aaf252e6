#[remora::remote]
pub trait Ledger {
    #[reentrant]
    async fn balance(&mut self) -> u64;
}

#[remora::remote(reentrant)]
pub trait Relay {
    async fn relay(&self) -> u64;
    async fn reset(&mut self);
}

fn main() {}
