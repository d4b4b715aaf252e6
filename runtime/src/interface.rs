//! The trait a generated proxy (`XRef`) implements: the glue between the typed
//! reference and the untyped [`RefCore`] inside it. Users never implement it by hand.

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
