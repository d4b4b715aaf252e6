#[remora::remote]
pub trait Clock {
    async fn with_timeout(&mut self, ms: u64);
}

fn main() {}
