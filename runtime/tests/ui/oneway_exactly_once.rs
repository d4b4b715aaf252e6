#[remora::remote]
pub trait Ledger {
    #[oneway]
    #[exactly_once]
    async fn credit(&mut self, amount: u64);
}

fn main() {}
