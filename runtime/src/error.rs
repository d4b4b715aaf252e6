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
    #[error("could not connect to {}: {reason}", connect_target(node, label))]
    ConnectFailed {
        /// The node it tried to reach, when known.
        node: Option<NodeId>,
        /// Its name, when known, and the address dialled
        /// ([`NodeLabel::addr`] is `None`: no address was known, so none was dialled).
        label: NodeLabel,
        /// What the transport said, or why nothing was dialled.
        reason: String,
    },
    /// The connection to the actor's node was lost with the call under way.
    #[error("{} is down (the call {})", Named(node, label), if *may_have_executed { "was sent and may have run" } else { "was not sent" })]
    NodeDown {
        /// The node that went away.
        node: NodeId,
        /// Its name and address, as far as this node knows them.
        label: NodeLabel,
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
    #[error("{} restarted since this reference was made; the object is gone{}", Named(node, label), if *may_have_executed { " (the call had reached the earlier process and may have run there; its reply died with it)" } else { "" })]
    NodeRestarted {
        /// The node (its earlier incarnation's id).
        node: NodeId,
        /// Its name and address, as far as this node knows them.
        label: NodeLabel,
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
    /// The call was given up on its caller's behalf: it was made by a handler
    /// whose own call was cancelled (its caller dropped it, or its deadline
    /// passed), so its answer could no longer reach anyone. Any call still in
    /// flight from such a handler fails with this at once, and the node it went
    /// to is told with a `Cancel` (where a queued call is dropped unrun, and a
    /// running handler sees [`cancelled`](crate::cancelled) resolve). It may have
    /// run in part: make the method idempotent if a caller retries.
    #[error("the call was cancelled: the call it was made for was given up (its caller dropped it or its deadline passed); it may have run in part")]
    Cancelled,
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
    pub(crate) fn sent_earlier(self, node: NodeId, label: NodeLabel) -> CallError {
        match self {
            CallError::NodeRestarted { node, label, .. } => CallError::NodeRestarted {
                node,
                label,
                may_have_executed: true,
            },
            CallError::Timeout { after, .. } => CallError::Timeout {
                after,
                may_have_executed: true,
            },
            CallError::NodeDown { node, label, .. } => CallError::NodeDown {
                node,
                label,
                may_have_executed: true,
            },
            other => {
                tracing::debug!(%other, "a later attempt failed; an earlier one was lost in flight");
                CallError::NodeDown {
                    node,
                    label,
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
            CallError::Panicked { .. } | CallError::ReplyFailed { .. } | CallError::Cancelled => {
                true
            }
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
fn connect_target(node: &Option<NodeId>, label: &NodeLabel) -> String {
    match (node, label.addr()) {
        (Some(node), Some(_)) => Named(node, label).to_string(),
        (Some(node), None) => format!("{} (no address known)", Named(node, label)),
        (None, Some(addr)) => addr.escape_debug().to_string(),
        (None, None) => "an unknown node".to_owned(),
    }
}

/// A node as errors name it to a person: the name it was given
/// ([`NodeBuilder::name`](crate::NodeBuilder::name), as it announced itself
/// when connecting) and the address it is dialled at, where this node knows them.
///
/// The errors that concern one node ([`CallError::NodeDown`],
/// [`CallError::NodeRestarted`], [`CallError::ConnectFailed`]) carry one next to
/// the node's id, and their messages read `node "bank-1" at 10.0.0.7:7000 (id …)`.
///
/// ```
/// use remora::NodeLabel;
/// let label = NodeLabel::new(Some("bank-1"), Some("10.0.0.7:7000"));
/// assert_eq!(label.name(), Some("bank-1"));
/// assert_eq!(label.to_string(), "\"bank-1\" at 10.0.0.7:7000");
/// assert_eq!(NodeLabel::default().to_string(), "");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeLabel(Option<Box<LabelParts>>);

/// The parts of a [`NodeLabel`], boxed: most errors carry none, and a call's
/// `Result` stays as small as it was.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LabelParts {
    name: Option<String>,
    addr: Option<String>,
}

impl NodeLabel {
    /// A label with this name and address (either may be unknown).
    pub fn new(name: Option<&str>, addr: Option<&str>) -> NodeLabel {
        if name.is_none() && addr.is_none() {
            return NodeLabel(None);
        }
        NodeLabel(Some(Box::new(LabelParts {
            name: name.map(str::to_owned),
            addr: addr.map(str::to_owned),
        })))
    }

    /// The node's name, if it has one and this node knows it.
    pub fn name(&self) -> Option<&str> {
        self.0.as_ref()?.name.as_deref()
    }

    /// The node's address, if this node knows one.
    pub fn addr(&self) -> Option<&str> {
        self.0.as_ref()?.addr.as_deref()
    }

    /// This label, with what it lacks taken from `known`.
    pub(crate) fn or(self, known: &NodeLabel) -> NodeLabel {
        if (self.name().is_some() || known.name().is_none())
            && (self.addr().is_some() || known.addr().is_none())
        {
            return self;
        }
        NodeLabel::new(self.name().or(known.name()), self.addr().or(known.addr()))
    }
}

/// Shown as `"name" at addr`, `"name"`, `at addr` or nothing. Both parts may come
/// from a peer: they are escaped, so that they cannot forge lines in a log.
impl std::fmt::Display for NodeLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.name(), self.addr()) {
            (Some(name), Some(addr)) => write!(f, "{name:?} at {}", addr.escape_debug()),
            (Some(name), None) => write!(f, "{name:?}"),
            (None, Some(addr)) => write!(f, "at {}", addr.escape_debug()),
            (None, None) => Ok(()),
        }
    }
}

/// A node in an error message: `node "bank-1" at 10.0.0.7:7000 (id …)`, or
/// `node <id>` when nothing more is known.
struct Named<'a>(&'a NodeId, &'a NodeLabel);

impl std::fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Named(node, label) = self;
        if label.0.is_none() {
            write!(f, "node {node}")
        } else {
            write!(f, "node {label} (id {node})")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// Any label: with or without a name and an address.
    fn label() -> impl Strategy<Value = NodeLabel> {
        let text = "[a-z0-9.:\\n\"-]{0,12}";
        (prop::option::of(text), prop::option::of(text))
            .prop_map(|(name, addr)| NodeLabel::new(name.as_deref(), addr.as_deref()))
    }

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
            (prop::option::of(node.clone()), label(), text).prop_map(|(node, label, reason)| {
                CallError::ConnectFailed {
                    node,
                    label,
                    reason,
                }
            }),
            (node.clone(), label(), any::<bool>()).prop_map(|(node, label, may)| {
                CallError::NodeDown {
                    node,
                    label,
                    may_have_executed: may,
                }
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
            (node, label(), any::<bool>()).prop_map(|(node, label, may)| {
                CallError::NodeRestarted {
                    node,
                    label,
                    may_have_executed: may,
                }
            }),
            text.prop_map(|method| CallError::Cycle { method }),
            Just(CallError::Cancelled),
            (any::<u32>(), any::<u32>())
                .prop_map(|(ours, theirs)| CallError::VersionMismatch { ours, theirs }),
        ]
    }

    #[test]
    fn errors_about_a_node_name_it_by_name_and_address_before_its_id() {
        let node = NodeId::from_u128(7);
        let id = node.to_string();
        let down = |label| CallError::NodeDown {
            node,
            label,
            may_have_executed: false,
        };
        let full = NodeLabel::new(Some("bank-1"), Some("10.0.0.7:7000"));
        assert_eq!(
            down(full.clone()).to_string(),
            format!("node \"bank-1\" at 10.0.0.7:7000 (id {id}) is down (the call was not sent)")
        );
        assert_eq!(
            down(NodeLabel::new(None, Some("10.0.0.7:7000"))).to_string(),
            format!("node at 10.0.0.7:7000 (id {id}) is down (the call was not sent)")
        );
        assert_eq!(
            down(NodeLabel::default()).to_string(),
            format!("node {id} is down (the call was not sent)")
        );
        let restarted = CallError::NodeRestarted {
            node,
            label: full.clone(),
            may_have_executed: false,
        };
        assert_eq!(
            restarted.to_string(),
            format!("node \"bank-1\" at 10.0.0.7:7000 (id {id}) restarted since this reference was made; the object is gone")
        );
        let failed = |node, label| CallError::ConnectFailed {
            node,
            label,
            reason: "refused".into(),
        };
        assert_eq!(
            failed(Some(node), full).to_string(),
            format!("could not connect to node \"bank-1\" at 10.0.0.7:7000 (id {id}): refused")
        );
        assert_eq!(
            failed(None, NodeLabel::new(None, Some("10.0.0.7:7000"))).to_string(),
            "could not connect to 10.0.0.7:7000: refused"
        );
        assert_eq!(
            failed(Some(node), NodeLabel::new(Some("bank-1"), None)).to_string(),
            format!("could not connect to node \"bank-1\" (id {id}) (no address known): refused")
        );
    }

    /// A name or address from a peer cannot forge a second log line.
    #[test]
    fn a_label_from_a_peer_is_escaped() {
        let label = NodeLabel::new(Some("x\nERROR forged"), Some("1.2.3.4:5\r\n\u{1b}[31m"));
        let text = CallError::NodeDown {
            node: NodeId::from_u128(1),
            label,
            may_have_executed: true,
        }
        .to_string();
        assert!(!text.contains(['\n', '\r', '\u{1b}']), "{text}");
        assert!(text.contains("x\\nERROR forged"), "{text}");
    }

    #[test]
    fn a_label_takes_what_it_lacks_from_what_was_known() {
        let name = NodeLabel::new(Some("a"), None);
        let addr = NodeLabel::new(None, Some("h:1"));
        assert_eq!(
            name.clone().or(&addr),
            NodeLabel::new(Some("a"), Some("h:1"))
        );
        assert_eq!(
            addr.clone().or(&name),
            NodeLabel::new(Some("a"), Some("h:1"))
        );
        let other = NodeLabel::new(Some("b"), Some("h:2"));
        assert_eq!(other.clone().or(&name), other);
        assert_eq!(
            NodeLabel::default().or(&NodeLabel::default()),
            NodeLabel::default()
        );
    }

    proptest! {
        /// Whatever a later attempt's error says, after an earlier attempt left
        /// this node the call may have run, and the error says so; errors that
        /// carry the flag keep their kind (and node).
        #[test]
        fn after_an_attempt_left_every_error_says_the_call_may_have_run(
            err in error(),
            node in any::<u128>().prop_map(NodeId::from_u128),
            label in label(),
        ) {
            let later = err.clone().sent_earlier(node, label);
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
                CallError::Panicked { .. } | CallError::ReplyFailed { .. } | CallError::Cancelled => true,
                _ => false,
            };
            prop_assert_eq!(err.may_have_executed(), expected);
        }
    }
}
