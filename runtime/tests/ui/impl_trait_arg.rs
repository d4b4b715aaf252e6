#[remora::remote]
pub trait Runner {
    async fn run(&mut self, job: impl Fn() + Send);
}

fn main() {}
