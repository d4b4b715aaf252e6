#[remora::remote]
pub trait Source {
    type Item;
    async fn next(&mut self) -> u64;
}

fn main() {}
