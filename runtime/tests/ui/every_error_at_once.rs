// One compile reports every bad method, not just the first.
#[remora::remote]
pub trait Mixed {
    fn sync_method(&mut self);
    async fn fine(&mut self, n: u64) -> u64;
    async fn borrowed(&mut self, s: &String);
    const LIMIT: u32;
}

fn main() {}
