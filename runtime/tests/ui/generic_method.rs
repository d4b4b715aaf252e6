#[remora::remote]
pub trait Store {
    async fn put<T>(&mut self, value: T);
}

fn main() {}
