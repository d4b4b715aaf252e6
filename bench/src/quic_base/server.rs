//! The raw-QUIC baselines' server: the bench re-executes itself as this child
//! (`remora-bench __quic-echo-server`). It binds 127.0.0.1:0, makes a self-signed
//! certificate, prints `PORT CERT_DER_HEX` on one stdout line, then serves two
//! protocols, one a connection, told apart by ALPN. On an echo connection
//! ([`ALPN`]) it echoes every bidi stream (read to the end, write it all back,
//! finish); a unidirectional stream from the client asks for frames (see
//! [`send_frames`]): the server answers on a unidirectional stream of its own, as
//! a pipe's producer does. On a framed connection ([`FRAMED_ALPN`]) it echoes each
//! bidi stream's frames as they come (see [`echo_frames`]). It exits when its
//! stdin closes, so it never outlives the bench, even one that is killed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{Connection, Endpoint};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::{
    provider, transport, BoxError, ALPN, FRAMED_ALPN, FRAMED_READ, MAX_MESSAGE, SERVER_NAME,
    UNI_REQUEST,
};
use crate::frames::{self, Frames};

/// The hidden subcommand that runs the echo server.
pub const SERVER_COMMAND: &str = "__quic-echo-server";

/// Runs the echo server; the entry point of `remora-bench __quic-echo-server`.
pub fn serve() -> ! {
    // The parent holds our stdin: when it goes (exit, kill, crash) so do we.
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    match runtime.block_on(server()) {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            eprintln!("{SERVER_COMMAND}: {err}");
            std::process::exit(1)
        }
    }
}

async fn server() -> Result<(), BoxError> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())?;
    tls.alpn_protocols = vec![ALPN.to_vec(), FRAMED_ALPN.to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    config.transport_config(transport());
    let endpoint = Endpoint::server(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;

    let port = endpoint.local_addr()?.port();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{port} {}", hex(&cert))?;
    stdout.flush()?;
    drop(stdout);

    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(err) => return eprintln!("{SERVER_COMMAND}: handshake failed: {err}"),
            };
            if protocol(&conn).as_deref() == Some(FRAMED_ALPN) {
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        if let Err(err) = echo_frames(send, recv).await {
                            eprintln!("{SERVER_COMMAND}: framed echo: {err}");
                        }
                    });
                }
                return;
            }
            let frames = conn.clone();
            tokio::spawn(async move {
                while let Ok(request) = frames.accept_uni().await {
                    let frames = frames.clone();
                    tokio::spawn(async move {
                        if let Err(err) = send_frames(&frames, request).await {
                            eprintln!("{SERVER_COMMAND}: frames: {err}");
                        }
                    });
                }
            });
            // Ends when the client closes the connection.
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(echo_stream(send, recv));
            }
        });
    }
    Ok(())
}

/// The protocol `conn` agreed on through ALPN.
fn protocol(conn: &Connection) -> Option<Vec<u8>> {
    let data = conn.handshake_data()?.downcast::<HandshakeData>().ok()?;
    data.protocol
}

/// A framed connection's stream: reads all that has arrived, echoes every frame
/// it completes in one write (as a framed protocol's server batches its replies),
/// and finishes when the client does.
async fn echo_frames(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), BoxError> {
    let mut frames = Frames::default();
    let mut buf = vec![0u8; FRAMED_READ];
    let mut echoes = Vec::new();
    while let Some(read) = recv.read(&mut buf).await? {
        frames.push(&buf[..read], |body| frames::put(&mut echoes, body));
        send.write_all(&echoes).await?;
        echoes.clear();
    }
    if frames.is_partial() {
        return Err("the framed stream ended inside a frame".into());
    }
    send.finish()?;
    Ok(())
}

/// One stream, one task (as quinn's own server example does): read to the end,
/// write it all back, finish.
async fn echo_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let Ok(data) = recv.read_to_end(MAX_MESSAGE).await else {
        return;
    };
    if send.write_all(&data).await.is_ok() {
        let _ = send.finish();
    }
}

/// Answers a `base.quic.uni` request (`n`, `size` and `batch`, little-endian
/// u64s): `n` frames, each a little-endian u32 length and `size` bytes, on a
/// unidirectional stream of its own, then finishes it. 8-byte frames carry their
/// number and go out one write each (as a pipe hands QUIC each item), or
/// gathered into writes of `batch` bytes; larger ones go out one write each,
/// without a copy.
async fn send_frames(conn: &Connection, mut request: quinn::RecvStream) -> Result<(), BoxError> {
    let request = request.read_to_end(UNI_REQUEST).await?;
    let field = |at: usize| -> Result<u64, BoxError> {
        let bytes = request.get(at..at + 8).ok_or("a short frames request")?;
        Ok(u64::from_le_bytes(bytes.try_into()?))
    };
    let (n, size, batch) = (field(0)?, usize::try_from(field(8)?)?, field(16)?);
    let batch = usize::try_from(batch)?;
    let mut send = conn.open_uni().await?;
    if size == 8 {
        let mut pending = Vec::with_capacity(batch + 12);
        for i in 0..n {
            frames::put(&mut pending, &i.to_le_bytes());
            if pending.len() >= batch {
                send.write_all(&pending).await?;
                pending.clear();
            }
        }
        send.write_all(&pending).await?;
    } else {
        let header = Bytes::copy_from_slice(&u32::try_from(size)?.to_le_bytes());
        let blob: Bytes = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        for _ in 0..n {
            send.write_all_chunks(&mut [header.clone(), blob.clone()])
                .await?;
        }
    }
    send.finish()?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
