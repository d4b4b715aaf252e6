//! A real etcd for tests: [`EtcdServer`] runs one `etcd` process on free loopback
//! ports with a throwaway data directory.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use remora_registry::{EtcdOptions, EtcdStore};

/// How long etcd gets to answer its health check after it starts.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// How often the health check is tried while waiting.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Starts tried before giving up; a retry covers a port taken between picking it
/// and etcd binding it.
const START_ATTEMPTS: usize = 3;

/// One etcd process, killed and reaped when dropped.
///
/// It runs with a 50 ms heartbeat and a 500 ms election timeout (faster to start
/// than etcd's defaults, and its minimum lease time to live is then 1 s instead of
/// 2 s). Its log is in `etcd.log` in its data directory, and is printed when it
/// fails to start.
pub struct EtcdServer {
    child: Child,
    url: String,
    data: tempfile::TempDir,
    /// How long the last start took, until etcd answered.
    pub started_in: Duration,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers. For tests, which the build compiles
    /// as ignored where etcd is not installed (see `etcd_probe.rs`): so a missing
    /// etcd here is an error, and so is an etcd that does not start.
    pub fn start() -> EtcdServer {
        EtcdServer::start_if_installed().unwrap_or_else(|| {
            panic!(
                "no etcd binary is on PATH or at /usr/bin/etcd; install it \
                 (Debian: apt-get install etcd-server, or bash .ci/packages)"
            )
        })
    }

    /// [`EtcdServer::start`], or `None` when no `etcd` binary is installed (the
    /// benchmark then skips its etcd figure). Panics if etcd does not start.
    pub fn start_if_installed() -> Option<EtcdServer> {
        let binary = find_etcd()?;
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match EtcdServer::try_start(&binary) {
                Ok(server) => return Some(server),
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "etcd ({}) did not start in {START_ATTEMPTS} attempts:\n{}",
            binary.display(),
            failures.join("\n---\n")
        );
    }

    fn try_start(binary: &Path) -> Result<EtcdServer, String> {
        let data = tempfile::Builder::new()
            .prefix("remora-etcd-")
            .tempdir()
            .map_err(|e| format!("cannot make a data directory: {e}"))?;
        let [client_port, peer_port] = free_ports()?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = data.path().join("etcd.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log_path.display()))?;
        let begun = Instant::now();
        let child = Command::new(binary)
            .arg("--name=remora-test")
            .arg(format!("--data-dir={}", data.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=remora-test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut server = EtcdServer {
            child,
            url: client,
            data,
            started_in: Duration::ZERO,
        };
        // Dropping `server` on failure kills the process.
        server.wait_until_healthy(client_port)?;
        server.started_in = begun.elapsed();
        Ok(server)
    }

    /// Polls etcd's `/health` (it says true once it has a leader and serves reads).
    fn wait_until_healthy(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited ({status})\n{}", self.log()));
            }
            match health(port) {
                Ok(true) => return Ok(()),
                Ok(false) => last = "etcd answered, not healthy yet".to_owned(),
                Err(e) => last = e,
            }
            std::thread::sleep(POLL_EVERY);
        }
        Err(format!(
            "etcd at {} was not healthy within {READY_WITHIN:?} ({last})\n{}",
            self.url,
            self.log()
        ))
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A store on this server under a prefix of its own (`/test-<uuid>/`), so that
    /// stores made by one test never see each other's records.
    pub async fn store(&self) -> EtcdStore {
        let prefix = format!("/test-{}/", uuid::Uuid::new_v4());
        EtcdStore::connect_with(EtcdOptions::new([self.url.clone()]).with_prefix(prefix))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test etcd at {}: {e}", self.url))
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        let path = self.data.path().join("etcd.log");
        match std::fs::read_to_string(&path) {
            Ok(log) => format!("etcd log ({}):\n{log}", path.display()),
            Err(e) => format!("(no etcd log at {}: {e})", path.display()),
        }
    }

    /// Kills etcd at once (SIGKILL) and reaps it; what was connected sees the
    /// connection fail.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `etcd` binary: the first on PATH, else `/usr/bin/etcd`.
fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|candidate| candidate.is_file())
}

/// Two distinct ports that were free a moment ago (held together while picked).
fn free_ports() -> Result<[u16; 2], String> {
    let bind =
        || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("cannot bind: {e}"));
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| {
        l.local_addr()
            .map(|addr| addr.port())
            .map_err(|e| e.to_string())
    };
    Ok([port(&a)?, port(&b)?])
}

/// One `GET /health` on the client port: `Ok(true)` when etcd says it is healthy.
fn health(port: u16) -> Result<bool, String> {
    let timeout = Duration::from_secs(1);
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    Ok(answer.contains("\"health\":\"true\""))
}
