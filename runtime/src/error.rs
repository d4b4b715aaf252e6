//! The errors a caller sees: one enum for every call made through a reference.

use std::time::Duration;

use crate::id::NodeId;

/// Why a call through a reference (`XRef::method(..)`) did not return the method's value.
///
/// Application errors never appear here: a method that can fail returns its own
/// `Result` inside the `Ok` of this one. Every variant says what went wrong and
/// [`CallError::may_have_executed`] tells whether the actor could have run the
/// call, which is what decides whether retrying is safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CallError {
    /// The deadline passed before a reply arrived (default 30 s; set one per call
    /// with `r.with_timeout(d)`).
    #[error("call timed out after {after:?} (the call {})", if *may_have_executed { "was delivered and may have run" } else { "was never delivered" })]
    Timeout {
        /// The deadline that passed.
        after: Duration,
        /// True once the message was in the actor's mailbox.
        may_have_executed: bool,
    },
    /// The actor had stopped (or stopped before taking this message); the call did not run.
    /// Look the name up again or spawn a new actor.
    #[error("the actor has stopped; the call did not run")]
    ActorStopped,
    /// The actor's bounded mailbox was full and the call was a `try_tell`. Retry later,
    /// or use an awaiting `tell` to wait for room. For an actor on another node,
    /// `capacity` is the calls its node lets this node have outstanding to it
    /// ([`Limits::window`](crate::wire::Limits::window)), all in use.
    #[error("the actor's mailbox is full ({capacity} messages); the call did not run")]
    MailboxFull {
        /// The mailbox's capacity.
        capacity: usize,
    },
    /// The actor's unbounded mailbox reached its hard cap: the actor is not keeping up.
    /// Slow the sender down; the call did not run.
    #[error("the actor is overloaded: its mailbox holds its hard cap of {cap} messages; the call did not run")]
    Overloaded {
        /// The mailbox's hard cap.
        cap: usize,
    },
    /// The handler panicked while running this call, or was dropped midway because
    /// a `#[reentrant]` handler it interleaved with panicked (the message then
    /// starts with `interrupted`). The actor stopped or was restarted, as its
    /// restart policy says.
    #[error("the actor panicked while handling the call: {message}")]
    Panicked {
        /// The panic's message, when it was a string.
        message: String,
    },
    /// The node could not reach the actor's node: dialling its address failed,
    /// or there is no connection to it and no address to dial.
    #[error("could not connect to {}: {reason}", connect_target(node, addr))]
    ConnectFailed {
        /// The node it tried to reach, when known.
        node: Option<NodeId>,
        /// The address dialled (None: no address was known, so none was dialled).
        addr: Option<String>,
        /// What the transport said, or why nothing was dialled.
        reason: String,
    },
    /// The connection to the actor's node was lost with the call under way.
    #[error("node {node} is down (the call {})", if *may_have_executed { "was sent and may have run" } else { "was not sent" })]
    NodeDown {
        /// The node that went away.
        node: NodeId,
        /// True when the call had been sent before the connection was lost.
        may_have_executed: bool,
    },
    /// The target node never exported this object, or it is no longer exported.
    #[error("no such object on the target node (never exported, or released)")]
    NoSuchObject,
    /// An argument or the reply could not be encoded or decoded.
    #[error("marshalling failed for {what} of type `{type_name}`: {reason}")]
    Marshalling {
        /// Which value: "argument `n`" or "reply".
        what: String,
        /// The Rust type that failed.
        type_name: String,
        /// What the codec said.
        reason: String,
    },
    /// The call ran, but its reply could not be passed back: the value did not
    /// encode or decode as its declared type, or it is larger than one frame of
    /// the connection may be. Whatever the call did, it did.
    #[error(
        "the call ran, but its reply of type `{type_name}` could not be passed back: {reason}"
    )]
    ReplyFailed {
        /// The reply's Rust type (as the side that failed names it).
        type_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The call is larger than one frame of its connection may be: the smaller
    /// of both nodes' `NodeBuilder::max_frame_size` (a node announces its own
    /// when connecting). It was not sent.
    #[error("the call is {len} bytes, over the {max}-byte frame limit of its connection (the smaller of both nodes' max_frame_size); it was not sent (raise max_frame_size, or pass less per call)")]
    TooLarge {
        /// The size of the call's frame, in bytes.
        len: usize,
        /// The receiving node's limit, in bytes.
        max: usize,
    },
    /// The peer refused the call: this node is not allowed to make it.
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// What the peer said.
        reason: String,
    },
    /// The target object does not have this method: caller and callee were built
    /// from different versions of the interface.
    #[error("the object's interface `{interface}` has no method with id {method:#018x}; caller and callee disagree on the interface")]
    UnknownMethod {
        /// The interface the callee serves.
        interface: String,
        /// The method id the caller sent.
        method: u64,
    },
    /// The target object serves another interface than the reference says.
    #[error("the object serves interface `{found}`, not the one the reference names (id {expected:#018x})")]
    InterfaceMismatch {
        /// The interface id the caller sent.
        expected: u64,
        /// The interface the object serves.
        found: String,
    },
    /// The reference names an earlier incarnation of its node: the node restarted,
    /// and the object is gone with it. Look the name up again. If the call had
    /// been sent to the earlier process (an `#[exactly_once]` call retried after
    /// the connection was lost), it may have run there: its reply, and the
    /// earlier process's memory of it, died with that process.
    #[error("node {node} restarted since this reference was made; the object is gone{}", if *may_have_executed { " (the call had reached the earlier process and may have run there; its reply died with it)" } else { "" })]
    NodeRestarted {
        /// The node.
        node: NodeId,
        /// True if the call had been sent to the node's earlier process.
        may_have_executed: bool,
    },
    /// A call cycle: the actor is busy handling a call of this same call chain
    /// (A calls B, B calls back A while A awaits B), so the call could only wait
    /// until its deadline. Failed at once instead; the call did not run. Break the
    /// cycle: make one of the calls a `#[oneway]` tell, pass the data A needs
    /// along with the call to B, or let the call interleave: mark the method
    /// `#[reentrant]` and have the handler it comes back to take `&self`.
    #[error("call cycle: `{method}` went to an actor busy with a call of this same call chain, which waits for this call; it did not run (make one call of the cycle a oneway tell, or the method #[reentrant] and the handler it comes back to `&self`)")]
    Cycle {
        /// The method called (`Interface.method`) on the actor the cycle came back to.
        method: String,
    },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Our protocol version.
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
}

impl CallError {
    /// This error of a later attempt of a call, an earlier attempt of which
    /// left this node (and was lost with its connection): the call may have run.
    /// An error that carries the flag gets it set; one that cannot say so is
    /// reported as the loss of that earlier attempt (`NodeDown`), which it is.
    pub(crate) fn sent_earlier(self, node: NodeId) -> CallError {
        match self {
            CallError::NodeRestarted { node, .. } => CallError::NodeRestarted {
                node,
                may_have_executed: true,
            },
            CallError::Timeout { after, .. } => CallError::Timeout {
                after,
                may_have_executed: true,
            },
            CallError::NodeDown { node, .. } => CallError::NodeDown {
                node,
                may_have_executed: true,
            },
            other => {
                tracing::debug!(%other, "a later attempt failed; an earlier one was lost in flight");
                CallError::NodeDown {
                    node,
                    may_have_executed: true,
                }
            }
        }
    }

    /// Whether the actor could have run (part of) the call.
    ///
    /// `false` means the call certainly did not run and can be retried safely;
    /// `true` means it may have run, so a retry could run it twice unless the
    /// method is idempotent.
    ///
    /// ```
    /// use remora::CallError;
    /// assert!(!CallError::ActorStopped.may_have_executed());
    /// assert!(CallError::Panicked { message: "boom".into() }.may_have_executed());
    /// ```
    pub fn may_have_executed(&self) -> bool {
        match self {
            CallError::Timeout {
                may_have_executed, ..
            }
            | CallError::NodeDown {
                may_have_executed, ..
            }
            | CallError::NodeRestarted {
                may_have_executed, ..
            } => *may_have_executed,
            CallError::Panicked { .. } | CallError::ReplyFailed { .. } => true,
            CallError::ActorStopped
            | CallError::MailboxFull { .. }
            | CallError::Overloaded { .. }
            | CallError::ConnectFailed { .. }
            | CallError::NoSuchObject
            | CallError::Marshalling { .. }
            | CallError::TooLarge { .. }
            | CallError::Unauthorized { .. }
            | CallError::UnknownMethod { .. }
            | CallError::InterfaceMismatch { .. }
            | CallError::Cycle { .. }
            | CallError::VersionMismatch { .. } => false,
        }
    }
}

/// What a failed connect names: the address dialled, the node, or both.
fn connect_target(node: &Option<NodeId>, addr: &Option<String>) -> String {
    match (node, addr) {
        (Some(node), Some(addr)) => format!("node {node} at {addr}"),
        (None, Some(addr)) => addr.clone(),
        (Some(node), None) => format!("node {node} (no address known)"),
        (None, None) => "an unknown node".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// Any error, each variant with arbitrary fields.
    fn error() -> impl Strategy<Value = CallError> {
        let node = any::<u128>().prop_map(NodeId::from_u128);
        let text = "[a-z ]{0,12}";
        prop_oneof![
            (any::<u64>(), any::<bool>()).prop_map(|(ms, may)| CallError::Timeout {
                after: Duration::from_millis(ms),
                may_have_executed: may
            }),
            Just(CallError::ActorStopped),
            any::<usize>().prop_map(|capacity| CallError::MailboxFull { capacity }),
            any::<usize>().prop_map(|cap| CallError::Overloaded { cap }),
            text.prop_map(|message| CallError::Panicked { message }),
            (prop::option::of(node.clone()), prop::option::of(text), text)
                .prop_map(|(node, addr, reason)| CallError::ConnectFailed { node, addr, reason }),
            (node.clone(), any::<bool>()).prop_map(|(node, may)| CallError::NodeDown {
                node,
                may_have_executed: may
            }),
            Just(CallError::NoSuchObject),
            (text, text, text).prop_map(|(what, type_name, reason)| CallError::Marshalling {
                what,
                type_name,
                reason
            }),
            (text, text)
                .prop_map(|(type_name, reason)| CallError::ReplyFailed { type_name, reason }),
            (any::<usize>(), any::<usize>())
                .prop_map(|(len, max)| CallError::TooLarge { len, max }),
            text.prop_map(|reason| CallError::Unauthorized { reason }),
            (text, any::<u64>())
                .prop_map(|(interface, method)| CallError::UnknownMethod { interface, method }),
            (any::<u64>(), text)
                .prop_map(|(expected, found)| CallError::InterfaceMismatch { expected, found }),
            (node, any::<bool>()).prop_map(|(node, may)| CallError::NodeRestarted {
                node,
                may_have_executed: may
            }),
            text.prop_map(|method| CallError::Cycle { method }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(ours, theirs)| CallError::VersionMismatch { ours, theirs }),
        ]
    }

    proptest! {
        /// Whatever a later attempt's error says, after an earlier attempt left
        /// this node the call may have run, and the error says so; errors that
        /// carry the flag keep their kind (and node).
        #[test]
        fn after_an_attempt_left_every_error_says_the_call_may_have_run(
            err in error(),
            node in any::<u128>().prop_map(NodeId::from_u128),
        ) {
            let later = err.clone().sent_earlier(node);
            prop_assert!(later.may_have_executed(), "{err:?} became {later:?}");
            match (&err, &later) {
                (CallError::NodeRestarted { node: a, .. }, CallError::NodeRestarted { node: b, .. })
                | (CallError::NodeDown { node: a, .. }, CallError::NodeDown { node: b, .. }) => {
                    prop_assert_eq!(a, b)
                }
                (CallError::Timeout { after: a, .. }, CallError::Timeout { after: b, .. }) => {
                    prop_assert_eq!(a, b)
                }
                (CallError::NodeRestarted { .. } | CallError::NodeDown { .. } | CallError::Timeout { .. }, _) => {
                    prop_assert!(false, "{err:?} changed kind: {later:?}")
                }
                (_, CallError::NodeDown { node: b, .. }) => prop_assert_eq!(*b, node),
                _ => prop_assert!(false, "{err:?} became {later:?}"),
            }
        }

        /// An error crosses the wire (an `Error` frame) with its verdict intact,
        /// and only errors that carry a flag, or name a handler that ran, say
        /// the call may have run.
        #[test]
        fn the_verdict_survives_the_wire_and_follows_the_flag(err in error()) {
            let mut bytes = Vec::new();
            crate::wire::codec::encode_value(&err, &mut bytes).unwrap();
            let back: CallError =
                crate::wire::codec::decode_value(&bytes, &crate::wire::Limits::default()).unwrap();
            prop_assert_eq!(back.may_have_executed(), err.may_have_executed());
            prop_assert_eq!(&back, &err);
            let expected = match &err {
                CallError::Timeout { may_have_executed, .. }
                | CallError::NodeDown { may_have_executed, .. }
                | CallError::NodeRestarted { may_have_executed, .. } => *may_have_executed,
                CallError::Panicked { .. } | CallError::ReplyFailed { .. } => true,
                _ => false,
            };
            prop_assert_eq!(err.may_have_executed(), expected);
        }
    }
}
