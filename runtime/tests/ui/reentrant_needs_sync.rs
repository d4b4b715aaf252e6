use std::cell::Cell;
use std::future::Future;

#[remora::remote(reentrant)]
pub trait Count {
    async fn count(&self) -> u64;
}

/// `Cell` is not `Sync`: handlers of a reentrant interface share the actor.
struct Counter {
    n: Cell<u64>,
}

impl remora::Actor for Counter {}

impl Count for Counter {
    fn count(&self) -> impl Future<Output = u64> + Send {
        let n = self.n.get() + 1;
        self.n.set(n);
        async move { n }
    }
}

fn main() {
    let counter = Counter { n: Cell::new(0) };
    let _ = async {
        let node = remora::Node::builder().build().await.unwrap();
        let _: CountRef = node.spawn(counter);
    };
}
