#[remora::remote(nmae = "bank.Account")]
pub trait Account {
    async fn deposit(&mut self, amount: u64) -> u64;
}

fn main() {}
