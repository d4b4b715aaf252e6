#[remora::remote]
pub trait Audit {
    #[oneway]
    async fn record(&mut self, note: String) -> bool;
}

fn main() {}
