pub struct Order {
    pub id: u64,
}

#[remora::remote]
pub trait Shop {
    async fn place(&mut self, order: &Order) -> u64;
}

fn main() {}
