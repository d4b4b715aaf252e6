#[remora::remote]
pub trait Once {
    async fn consume(self) -> u64;
}

fn main() {}
