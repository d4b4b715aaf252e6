#[remora::remote]
pub trait Ledger {
    #[exactly_once]
    #[abortable]
    async fn credit(&mut self, amount: u64) -> u64;
}

fn main() {}
