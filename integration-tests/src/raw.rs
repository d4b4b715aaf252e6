//! A hostile member: a QUIC peer holding a valid certificate of the cluster, which
//! completes TLS like a node and then writes whatever bytes a test chooses (or
//! nothing), to check what a node does with a member that misbehaves.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The name every node's certificate is issued for (the TLS server name).
const SERVER_NAME: &str = "remora-node";
/// The ALPN protocol nodes speak.
const ALPN: &[u8] = b"remora/1";

/// One QUIC connection to a node, authenticated with a certificate issued by the
/// cluster root, and nothing else of a node.
#[derive(Debug)]
pub struct RawPeer {
    /// Kept open for as long as the peer lives.
    pub endpoint: quinn::Endpoint,
    /// The connection to the node.
    pub conn: quinn::Connection,
    /// The peer's own credentials (the certificate it presented).
    pub credentials: remora::Credentials,
}

/// The incarnation a raw peer announces unless told otherwise.
pub const INCARNATION: u64 = 1;

impl RawPeer {
    /// Connects to the node at `addr` as a member named `name`, with a certificate
    /// issued by the cluster root in `ca_dir` (it holds `ca.pem` and `ca.key`).
    /// It keeps the connection alive with pings of its own, so only the node can
    /// end it.
    pub async fn connect(ca_dir: &Path, name: &str, addr: SocketAddr) -> RawPeer {
        let dir = tempfile::tempdir().expect("a directory for the peer's certificate");
        remora::Credentials::issue_named_node(ca_dir, dir.path(), name).expect("issued");
        let root = CertificateDer::from_pem_file(dir.path().join("ca.pem")).expect("ca.pem");
        let chain =
            vec![CertificateDer::from_pem_file(dir.path().join("node.pem")).expect("node.pem")];
        let key = PrivateKeyDer::from_pem_file(dir.path().join("node.key")).expect("node.key");
        let credentials =
            remora::Credentials::from_dir(dir.path()).expect("the peer's credentials");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).expect("the root certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("the client certificate");
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_millis(100)));
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address")).expect("bound");
        endpoint.set_default_client_config(config);
        let conn = endpoint
            .connect(addr, SERVER_NAME)
            .expect("connecting")
            .await
            .expect("TLS with a valid certificate");
        RawPeer {
            endpoint,
            conn,
            credentials,
        }
    }

    /// The node id this peer's certificate proves in [`INCARNATION`].
    pub fn id(&self) -> remora::NodeId {
        self.credentials.node_id(INCARNATION)
    }

    /// Says `Hello` as itself (see [`RawPeer::hello_as`]).
    pub async fn hello(&self) -> (quinn::SendStream, quinn::RecvStream) {
        self.hello_as(self.id(), INCARNATION).await
    }

    /// Says `Hello` as node `node` in `incarnation` on the control stream (what a
    /// node does first), announcing the default limits: the node then lets this
    /// peer open its call lanes, if the id is the one the peer's certificate
    /// proves, and closes the connection otherwise. Returns the control stream.
    pub async fn hello_as(
        &self,
        node: remora::NodeId,
        incarnation: u64,
    ) -> (quinn::SendStream, quinn::RecvStream) {
        use remora::wire::codec::encode;
        use remora::wire::{Limits, Session};
        let (mut send, recv) = self.conn.open_bi().await.expect("the control stream");
        let limits = Limits::default();
        let session = Session::new(node, incarnation, None, &limits);
        let mut hello = Vec::new();
        encode(&session.hello(), &mut hello, &limits).expect("a Hello encodes");
        send.write_all(&hello).await.expect("the Hello is written");
        (send, recv)
    }
}

/// Reads the replies to a member's calls 1 to `calls` from `recv`, its stream of
/// replies, each within `within`: they must come in order, each with a value
/// longer than `min_len` bytes (the whole answer, not a cut one).
pub async fn read_replies_in_order(
    recv: &mut quinn::RecvStream,
    limits: remora::wire::Limits,
    calls: u64,
    min_len: usize,
    within: Duration,
) {
    use remora::wire::{Frame, FrameReader};
    let mut reader = FrameReader::new(limits);
    let mut answered = 0;
    while answered < calls {
        let chunk = tokio::time::timeout(within, recv.read_chunk(1 << 20, true))
            .await
            .expect("replies keep coming")
            .unwrap()
            .expect("the stream stays open");
        reader.extend(&chunk.bytes).unwrap();
        while let Some(frame) = reader.next_frame().unwrap() {
            let Frame::Reply { call, value } = frame else {
                panic!("a reply, not {frame:?}");
            };
            assert_eq!(call, answered + 1, "in order");
            assert!(value.len() > min_len, "the whole list: {}", value.len());
            answered += 1;
        }
    }
}
