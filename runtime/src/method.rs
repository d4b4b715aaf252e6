//! What `#[remora::remote]` generates for each method: its argument struct
//! ([`Method`]) and the message that carries it to an actor ([`Request`]). Both
//! the proxy side (references, marshalling) and the actor side read them.

use crate::local::reply::ReplyTo;

/// A call's arguments, described for error messages: `(name, type)` per argument.
pub type ArgTable = &'static [(&'static str, &'static str)];

/// One method's arguments, as a generated struct.
pub trait Method: Send + 'static {
    /// `Trait.method`.
    const NAME: &'static str;
    /// `stable_id(NAME)`.
    const ID: u64;
    /// Each argument's name and type, in order (for error messages).
    const ARGS: ArgTable;
    /// What the method returns (`()` for `#[oneway]`).
    type Output: Send + 'static;
    /// Whether the method is `#[reentrant]` (directly or through its interface).
    const REENTRANT: bool = false;
}

/// A call on its way to an actor: the method's arguments and where the result goes.
pub struct Request<M: Method> {
    /// The method's arguments.
    pub args: M,
    /// Where the result goes.
    pub reply: ReplyTo<M::Output>,
}

impl<M: Method> std::fmt::Debug for Request<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("method", &M::NAME).finish()
    }
}
