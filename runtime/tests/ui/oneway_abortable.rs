#[remora::remote]
pub trait Ledger {
    #[oneway]
    #[abortable]
    async fn credit(&mut self, amount: u64);
}

fn main() {}
