//! The traits `#[remora::remote]` implements: the glue between a generated proxy,
//! its messages and the runtime. Users never implement them by hand.

use crate::local::reply::ReplyTo;
use crate::reference::RefCore;

/// A remote interface, implemented by the generated `XRef` proxy type.
///
/// `ID` and every method's id are [`stable_id`](crate::stable_id)s of names, so two
/// builds of the same trait agree on the wire.
pub trait Interface: Clone + Send + Sync + Sized + 'static {
    /// The interface's name (the trait's, or the macro's `name = "..."`).
    const NAME: &'static str;
    /// `stable_id(NAME)`.
    const ID: u64;
    /// The message enum: one variant per method.
    type Msg: Send + 'static;

    #[doc(hidden)]
    fn from_core(core: RefCore<Self::Msg>) -> Self;
    #[doc(hidden)]
    fn core(&self) -> &RefCore<Self::Msg>;
}

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
