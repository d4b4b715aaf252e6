#[remora::remote]
pub trait Names {
    async fn first(&mut self) -> Option<&'static str>;
}

fn main() {}
