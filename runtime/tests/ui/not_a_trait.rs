#[remora::remote]
pub struct Account {
    balance: u64,
}

fn main() {}
