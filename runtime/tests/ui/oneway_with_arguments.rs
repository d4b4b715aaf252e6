#[remora::remote]
pub trait Audit {
    #[oneway(fast)]
    async fn record(&mut self, note: String);
}

fn main() {}
