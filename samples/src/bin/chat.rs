//! `chat`: a chat room as an actor, with its clients in other processes. A client
//! joins by passing a reference to its own `Listener` actor; the room tells every
//! other member's listener each message (fan-out). The room monitors each listener,
//! so a client whose process dies mid-chat is dropped from the room and the others
//! are told.
//!
//! One command runs a scripted conversation: the room and three clients as
//! processes of one local cluster. It kills one client (SIGKILL) mid-chat and shows
//! the room noticing:
//!
//! ```text
//! cargo run --release -p remora-samples --bin chat
//! ```
//!
//! Or by hand, in several terminals sharing a cluster root (`remora cert init DIR`):
//!
//! ```text
//! REMORA_CREDENTIALS=DIR chat room                                   # prints READY <addr>
//! REMORA_CREDENTIALS=DIR chat client --registry <addr> --name alice  # says what you type
//! REMORA_CREDENTIALS=DIR chat client --registry <addr> --name bob --say "hi alice"
//! ```
//!
//! A client prints what the room tells it (`[bob] hi alice`, `* bob joined`). All of
//! them run until Ctrl-C or SIGTERM; a client stopped that way leaves the room
//! politely, while one that is killed is noticed through the lost connection, within
//! the peer timeout (2 s here, rather than the default 6 s).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::BufRead;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use remora::{Actor, Node, NodeBuilder, StopReason};
use remora_registry::{MemoryStore, Registry, RegistryServer};
use remora_samples::args::{exit_code, required, values};
use remora_testing::{announce, node_builder, LocalCluster};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How long a silent peer may stay silent before its connection counts as lost:
/// how soon the room notices a killed client.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping client waits for the room to acknowledge its leaving.
const LEAVE_WITHIN: Duration = Duration::from_secs(1);

/// The room, bound as `room` in the registry of the room's node.
///
/// Anyone may `say` under any member's name: the sample keeps to what it shows.
#[remora::remote(name = "chat.Room")]
pub trait Room {
    /// Joins as `name`: from now on the room tells `listener` what the others say.
    /// Returns who is in the room, in order of arrival (`name` last).
    async fn join(&mut self, name: String, listener: ListenerRef)
        -> Result<Vec<String>, ChatError>;
    /// Tells every other member that `from` says `text`.
    async fn say(&mut self, from: String, text: String) -> Result<(), ChatError>;
    /// Who is in the room, in order of arrival.
    async fn members(&self) -> Vec<String>;
    /// Leaves the room; the others are told.
    async fn leave(&mut self, name: String);
    /// The room's own monitor reporting that the listener of `name`'s membership
    /// `serial` stopped (its process died, for instance). Not for clients.
    #[oneway]
    async fn lost(&mut self, name: String, serial: u64, why: String);
}

/// A client's ear: what the room tells it.
#[remora::remote(name = "chat.Listener")]
pub trait Listener {
    /// `from` said `text`.
    #[oneway]
    async fn heard(&mut self, from: String, text: String);
    /// `name` joined the room.
    #[oneway]
    async fn joined(&mut self, name: String);
    /// `name` left the room, for the reason `why`.
    #[oneway]
    async fn left(&mut self, name: String, why: String);
}

/// Why the room refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChatError {
    /// Someone in the room already goes by this name.
    #[error("someone in the room is already called {name:?}")]
    NameTaken { name: String },
    /// Only members may speak.
    #[error("{name:?} is not in the room: join first")]
    NotAMember { name: String },
}

struct Member {
    name: String,
    listener: ListenerRef,
    /// Which membership this is: a monitor of an earlier one (same name, left and
    /// joined again) must not remove this one.
    serial: u64,
}

struct ChatRoom {
    node: Node,
    /// This room's own reference, for the monitors it starts (set once spawned).
    me: Arc<OnceLock<RoomRef>>,
    members: Vec<Member>,
    next_serial: u64,
}

impl ChatRoom {
    /// Tells every member but `except` something, without waiting: one slow or dead
    /// member must not hold up the room. A failed tell is left to that member's monitor.
    fn tell_others(
        &self,
        except: &str,
        tell: impl Fn(&ListenerRef) -> Result<(), remora::CallError>,
    ) {
        for member in self.members.iter().filter(|m| m.name != except) {
            if let Err(err) = tell(&member.listener) {
                eprintln!("room: could not reach {}: {err}", member.name);
            }
        }
    }

    fn remove(&mut self, name: &str, why: &str) {
        self.members.retain(|m| m.name != name);
        self.tell_others(name, |l| l.left(name.to_owned(), why.to_owned()).try_tell());
    }

    fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }
}

impl Actor for ChatRoom {}

impl Room for ChatRoom {
    async fn join(
        &mut self,
        name: String,
        listener: ListenerRef,
    ) -> Result<Vec<String>, ChatError> {
        if self.members.iter().any(|m| m.name == name) {
            return Err(ChatError::NameTaken { name });
        }
        self.tell_others(&name, |l| l.joined(name.clone()).try_tell());
        let serial = self.next_serial;
        self.next_serial += 1;
        // The monitor resolves when the listener stops, or when the connection to
        // its node is lost (StopReason::NodeDown): a killed client never says goodbye.
        let stopped = self.node.monitor(&listener);
        if let Some(me) = self.me.get().cloned() {
            let who = name.clone();
            tokio::spawn(async move {
                let reason = stopped.await;
                let _ = me.lost(who, serial, reason.to_string()).await;
            });
        }
        self.members.push(Member {
            name,
            listener,
            serial,
        });
        Ok(self.names())
    }

    async fn say(&mut self, from: String, text: String) -> Result<(), ChatError> {
        if !self.members.iter().any(|m| m.name == from) {
            return Err(ChatError::NotAMember { name: from });
        }
        self.tell_others(&from, |l| l.heard(from.clone(), text.clone()).try_tell());
        Ok(())
    }

    async fn members(&self) -> Vec<String> {
        self.names()
    }

    async fn leave(&mut self, name: String) {
        if self.members.iter().any(|m| m.name == name) {
            self.remove(&name, "said goodbye");
        }
    }

    async fn lost(&mut self, name: String, serial: u64, why: String) {
        if self
            .members
            .iter()
            .any(|m| m.name == name && m.serial == serial)
        {
            self.remove(&name, &why);
        }
    }
}

/// A client's listener: prints what it hears, one line each.
struct Screen {
    name: String,
    room: RoomRef,
}

impl Actor for Screen {
    /// A client stopping in an orderly way (Ctrl-C, SIGTERM) leaves the room on its
    /// way out. A killed one never gets here: the room's monitor notices instead.
    async fn on_stop(&mut self, _reason: &StopReason) {
        let room = self.room.with_timeout(LEAVE_WITHIN);
        let _ = room.leave(self.name.clone()).await;
    }
}

impl Listener for Screen {
    async fn heard(&mut self, from: String, text: String) {
        println!("[{from}] {text}");
    }

    async fn joined(&mut self, name: String) {
        println!("* {name} joined");
    }

    async fn left(&mut self, name: String, why: String) {
        println!("* {name} left ({why})");
    }
}

type Failure = Box<dyn std::error::Error>;

/// Every node of this sample: quick to notice a dead peer.
fn tuned(builder: NodeBuilder, name: &str) -> NodeBuilder {
    builder.name(name).peer_timeout(PEER_TIMEOUT)
}

async fn room() -> Result<(), Failure> {
    let node = tuned(node_builder(), "chat-room")
        .listen("127.0.0.1:0")
        .build()
        .await?;
    let registry = RegistryServer::serve(&node, MemoryStore::new())?;
    let me = Arc::new(OnceLock::new());
    let room: RoomRef = node.spawn(ChatRoom {
        node: node.clone(),
        me: me.clone(),
        members: Vec::new(),
        next_serial: 0,
    });
    let _ = me.set(room.clone());
    registry.bind("room", &room).await?;
    let stop = stop_signal()?;
    announce(&node);
    stop.await;
    node.shutdown().await;
    Ok(())
}

async fn client(registry_addr: &str, name: &str, lines: &[String]) -> Result<(), Failure> {
    // It listens so that the room can call its listener back (it also could over the
    // connection this node opens, but a listening node can be reached again later).
    let node = tuned(node_builder(), "chat-client")
        .listen("127.0.0.1:0")
        .build()
        .await?;
    let registry = Registry::connect(&node, registry_addr).await?;
    let room: RoomRef = registry.lookup("room").await?;
    let listener: ListenerRef = node.spawn(Screen {
        name: name.to_owned(),
        room: room.clone(),
    });
    let members = room.join(name.to_owned(), listener.clone()).await??;
    let stop = stop_signal()?;
    {
        // Held over both lines, so that nothing the listener prints comes between.
        let _screen = std::io::stdout().lock();
        announce(&node);
        println!("in the room: {}", members.join(", "));
    }
    if lines.is_empty() {
        say_what_is_typed(room, name.to_owned());
    } else {
        for line in lines {
            room.say(name.to_owned(), line.clone()).await??;
        }
    }
    stop.await;
    node.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM received from the moment it is called (on Unix).
///
/// Call it before `announce`: whoever reads `READY` may signal at once, and
/// `serve_until_signal` only starts listening when it is called, after `READY`;
/// a SIGTERM in between would kill the process instead of shutting it down.
fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Says each line typed on standard input. A thread reads it: a blocking read
/// cannot be cancelled, and must not hold up the runtime's shutdown.
fn say_what_is_typed(room: RoomRef, name: String) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            match room.say(name.clone(), line).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("chat: {err}"),
                Err(err) => eprintln!("chat: the room did not take it: {err}"),
            }
        }
    });
}

/// What the client processes print, line by line, for the scripted run to follow.
struct Screens {
    tx: mpsc::UnboundedSender<(String, String)>,
    rx: mpsc::UnboundedReceiver<(String, String)>,
    unread: HashMap<String, VecDeque<String>>,
}

/// How long the scripted run waits for a line it expects: far longer than it
/// takes, short of hanging.
const LINE_WITHIN: Duration = Duration::from_secs(20);

impl Screens {
    fn new() -> Screens {
        let (tx, rx) = mpsc::unbounded_channel();
        Screens {
            tx,
            rx,
            unread: HashMap::new(),
        }
    }

    /// Starts client `name` in `cluster` and follows its output.
    fn start(
        &mut self,
        cluster: &mut LocalCluster,
        registry: &str,
        name: &str,
        says: &str,
    ) -> Result<u32, Failure> {
        let me = std::env::current_exe()?;
        let args = [
            "client",
            "--registry",
            registry,
            "--name",
            name,
            "--say",
            says,
        ];
        let node = cluster.start(&me, args)?;
        let output = node.output.take().ok_or("a client's output went missing")?;
        let tx = self.tx.clone();
        let who = name.to_owned();
        std::thread::spawn(move || {
            for line in output.lines() {
                let Ok(line) = line else { break };
                if tx.send((who.clone(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(node.child.id())
    }

    /// Waits for `who`'s next line, shows it, and checks that it starts with `expected`.
    async fn expect(&mut self, who: &str, expected: &str) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + LINE_WITHIN;
        let line = loop {
            if let Some(line) = self.unread.get_mut(who).and_then(VecDeque::pop_front) {
                break line;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((name, line))) => self.unread.entry(name).or_default().push_back(line),
                Ok(None) => return Err("every client's output has ended".into()),
                Err(_) => return Err(format!("{who} did not print {expected:?} in time").into()),
            }
        };
        println!("  {who:<5} | {line}");
        if line.starts_with(expected) {
            Ok(())
        } else {
            Err(format!("{who} printed {line:?}, expected {expected:?}").into())
        }
    }
}

/// The room and three clients as processes of a local cluster; one client is
/// killed mid-chat. Client output is shown as `name | line`.
async fn everything() -> Result<(), Failure> {
    let me = std::env::current_exe()?;
    let mut cluster = LocalCluster::new()?;
    let registry_addr = cluster.start(&me, ["room"])?.addr.clone();
    println!(
        "room process listening on {registry_addr}, serving the registry, the room bound as `room`"
    );
    let mut screens = Screens::new();

    let pid = screens.start(&mut cluster, &registry_addr, "alice", "anyone here?")?;
    println!("alice (process {pid}) joined and said \"anyone here?\": nobody else to tell");
    screens.expect("alice", "in the room: alice").await?;

    let pid = screens.start(&mut cluster, &registry_addr, "bob", "hi alice")?;
    println!("bob (process {pid}) joined and said \"hi alice\"");
    screens.expect("bob", "in the room: alice, bob").await?;
    screens.expect("alice", "* bob joined").await?;
    screens.expect("alice", "[bob] hi alice").await?;

    let pid = screens.start(&mut cluster, &registry_addr, "carol", "hello, both of you")?;
    println!("carol (process {pid}) joined and said \"hello, both of you\"");
    screens
        .expect("carol", "in the room: alice, bob, carol")
        .await?;
    for other in ["alice", "bob"] {
        screens.expect(other, "* carol joined").await?;
        screens.expect(other, "[carol] hello, both of you").await?;
    }

    let node = tuned(cluster.builder(), "chat-narrator").build().await?;
    let registry = Registry::connect(&node, &registry_addr).await?;
    let room: RoomRef = registry.lookup("room").await?;
    println!("room members: {}", room.members().await?.join(", "));

    let killed_at = Instant::now();
    cluster.nodes()[3].kill()?;
    println!("killed carol's process (SIGKILL) mid-chat");
    screens.expect("alice", "* carol left (").await?;
    screens.expect("bob", "* carol left (").await?;
    println!(
        "the room's monitor noticed after {:.1} s (peer timeout {} s)",
        killed_at.elapsed().as_secs_f64(),
        PEER_TIMEOUT.as_secs()
    );
    println!("room members: {}", room.members().await?.join(", "));

    node.shutdown().await;
    cluster.terminate();
    println!("stopped the room and the clients");
    Ok(())
}

/// The value after `flag` each time it appears.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => everything().await,
        Some("room") => room().await,
        Some("client") => match (
            required(&args, "--registry", "ADDR"),
            required(&args, "--name", "NAME"),
        ) {
            (Ok(addr), Ok(name)) => client(&addr, &name, &values(&args, "--say")).await,
            (Err(e), _) | (_, Err(e)) => Err(e.into()),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}: use `room`, `client --registry ADDR --name NAME [--say TEXT ...]`, or nothing"
        )
        .into()),
    };
    exit_code("chat", result)
}
