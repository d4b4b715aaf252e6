#[remora::remote]
pub trait Names {
    async fn first(&self) -> &String;
}

fn main() {}
