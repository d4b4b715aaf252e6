#[remora::remote]
pub trait Factory {
    async fn make(n: u64) -> u64;
}

fn main() {}
