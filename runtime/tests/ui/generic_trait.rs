#[remora::remote]
pub trait Store<T> {
    async fn put(&mut self, value: u64);
}

fn main() {}
