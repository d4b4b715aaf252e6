#[remora::remote]
pub trait Factory {
    async fn make() -> u64;
}

fn main() {}
