#[remora::remote]
pub trait Plane {
    async fn move_to(&mut self, (x, y): (i64, i64));
}

fn main() {}
