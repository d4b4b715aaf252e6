//! The interface of the greeter node: shared by the binary, which serves it, and by
//! the crate's test, which calls it.

/// Greets; and meets another greeter, which is a call from this node to another.
#[remora::remote]
pub trait Greeter {
    /// A greeting for `name`, signed with this node's name.
    async fn greet(&mut self, name: String) -> String;
    /// Has `other` greet this node by its name: the call goes from this node to
    /// `other`'s.
    async fn meet(&mut self, other: GreeterRef) -> Result<String, String>;
}
