#[remora::remote]
pub trait Sink {
    async fn write(&mut self, bytes: &[u8]) -> usize;
}

fn main() {}
