//! `remora dashboard` in a real browser: Debian's `chromium`, driven headless
//! over WebDriver (`chromedriver`, through `fantoccini`). A registry and three
//! node processes (`remora-fixture-node`) under one `LocalCluster`; the page
//! lists the three nodes, a flooded actor's mailbox bar rises (and falls once
//! it drains), a node frozen with SIGSTOP shows as unreachable while the
//! surveys keep their pace (each node has a deadline), and a node killed with
//! SIGKILL leaves the page within its registry lease.
//!
//! Without chromium and chromedriver (on PATH or in /usr/bin; or named by
//! `REMORA_CHROMIUM` and `REMORA_CHROMEDRIVER`) the browser test is compiled
//! as ignored (the build script says so), unless `REMORA_REQUIRE_BROWSER=1` (as
//! `.ci/test` sets), when it runs and fails with an install hint. (Should the
//! tools vanish between build and run, it says why and returns.)
//! `REMORA_UPDATE_SCREENSHOT=1` writes the page, mid-flood, to
//! `docs/dashboard.png` (the README's screenshot).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use remora::{Node, NodeId};
use remora_registry::Registry;
use remora_testing::LocalCluster;
use serde_json::{json, Value};

include!("../fixture/interface.rs");

const REMORA: &str = env!("CARGO_BIN_EXE_remora");
const FIXTURE: &str = env!("CARGO_BIN_EXE_remora-fixture-node");
/// The registry's longest lease, and the nodes' lease: a killed node's names
/// are gone this long after its last renewal at the latest.
/// Long enough for a node frozen a few surveys to keep its lease.
const LEASE: Duration = Duration::from_secs(8);
/// The dashboard surveys this often, giving each node this long to answer.
const INTERVAL_MS: &str = "400";
const DEADLINE_MS: &str = "400";
/// How long any one wait of the test may take.
const PATIENCE: Duration = Duration::from_secs(20);
/// Knocks queued behind the held turnstile.
const FLOOD: u32 = 600;
const CAPACITY: u32 = 1024;

fn truthy(var: &str) -> bool {
    std::env::var(var)
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// `name` as `var` names it, else on PATH, else in /usr/bin.
fn find_tool(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Chromium and its driver, or None after saying why the test does not run
/// (a failure instead when REMORA_REQUIRE_BROWSER is set).
fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_tool("REMORA_CHROMIUM", "chromium");
    let driver = find_tool("REMORA_CHROMEDRIVER", "chromedriver");
    if let (Some(chromium), Some(driver)) = (&chromium, &driver) {
        return Some((chromium.clone(), driver.clone()));
    }
    let missing = [
        ("chromium", chromium.is_none()),
        ("chromedriver", driver.is_none()),
    ]
    .iter()
    .filter(|(_, gone)| *gone)
    .map(|(name, _)| *name)
    .collect::<Vec<_>>()
    .join(" and ");
    let hint = "install them (Debian: apt-get install chromium chromium-driver, or run \
                bash .ci/packages), or name them in REMORA_CHROMIUM and REMORA_CHROMEDRIVER";
    assert!(
        !truthy("REMORA_REQUIRE_BROWSER"),
        "REMORA_REQUIRE_BROWSER is set but {missing} cannot be found: {hint}"
    );
    eprintln!("skipping the dashboard's browser test: {missing} not found; {hint}");
    None
}

/// A child process killed (with its process group) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // chromedriver leads its own process group, chromium in it.
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line `child` prints, within PATIENCE.
fn first_line(child: &mut Child) -> String {
    let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send(line);
        // Keep reading, so that the child never blocks on a full pipe.
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    rx.recv_timeout(PATIENCE).unwrap_or_default()
}

/// `remora dashboard` for the registry at `registry`, on a free loopback port;
/// returns the process and the page's URL.
fn start_dashboard(registry: &str, credentials: &Path) -> (Killed, String) {
    let mut child = Command::new(REMORA)
        .args([
            "dashboard",
            "--registry",
            registry,
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--interval-ms", INTERVAL_MS, "--deadline-ms", DEADLINE_MS])
        .arg("--credentials")
        .arg(credentials)
        .stdout(Stdio::piped())
        .spawn()
        .expect("remora dashboard starts");
    let line = first_line(&mut child);
    let url = line
        .trim()
        .strip_prefix("dashboard listening on ")
        .unwrap_or_else(|| panic!("not the dashboard's first line: {line:?}"))
        .to_owned();
    (Killed(child), url)
}

/// chromedriver on a free port, and a headless chromium session through it.
async fn start_browser(chromium: &Path, driver: &Path) -> (Killed, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = std::os::unix::process::CommandExt::process_group(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        0,
    )
    .spawn()
    .expect("chromedriver starts");
    let driver_process = Killed(child);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1720,900",
                     "--hide-scrollbars", "--force-device-scale-factor=1"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    // chromedriver takes a moment to listen: a hundred tries, 100 ms apart.
    let mut last = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver_process, client),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no WebDriver session from {}: {last:?}", driver.display());
}

/// Runs `script` in the page until `done` accepts its value; PATIENCE at most.
async fn until(client: &Client, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    let mut last = Value::Null;
    while started.elapsed() < PATIENCE {
        last = client
            .execute(script, vec![])
            .await
            .expect("the script runs");
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {PATIENCE:?}; the page last said {last}");
}

const LISTED: &str = "return Array.from(document.querySelectorAll('#nodes [data-node]'))
    .map(e => ({ id: e.dataset.node, name: e.dataset.name, up: e.classList.contains('up') }));";

const SURVEYED_AT: &str = "return Number(document.getElementById('status').dataset.at) || null;";

fn listed(page: &Value, id: NodeId) -> bool {
    let id = id.to_string();
    page.as_array().is_some_and(|nodes| {
        nodes
            .iter()
            .any(|n| n["id"] == id.as_str() && n["up"] == true)
    })
}

/// The mailbox bar of the actor with object `object`: its data attributes, and
/// the fill's width as a share of the bar's, as drawn.
fn bar_script(object: &str) -> String {
    format!(
        "const bar = document.querySelector('[data-object=\"{object}\"] .bar');
         if (!bar) return null;
         const row = bar.closest('tr');
         return {{ length: Number(bar.dataset.length), capacity: Number(bar.dataset.capacity),
                   drawn: bar.querySelector('.fill').getBoundingClientRect().width
                          / bar.getBoundingClientRect().width,
                   busy: !!row.querySelector('.busy') }};"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    no_browser,
    ignore = "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
)]
async fn the_dashboard_shows_the_cluster_a_flood_and_a_killed_node_leaving() {
    let Some((chromium, driver)) = browser_or_skip() else {
        return;
    };
    let mut cluster = LocalCluster::new().unwrap();
    let lease_ms = LEASE.as_millis().to_string();
    let registry = cluster
        .start(
            FIXTURE,
            ["--name", "registry", "--serve-registry", &lease_ms],
        )
        .unwrap()
        .addr
        .clone();
    let mut ids = Vec::new();
    for name in ["north", "south", "east"] {
        let node = cluster
            .start(
                FIXTURE,
                [
                    "--name",
                    name,
                    "--registry",
                    &registry,
                    "--bind",
                    name,
                    "--lease-ms",
                    &lease_ms,
                ],
            )
            .unwrap();
        ids.push(node.ready[0].parse::<NodeId>().unwrap());
    }
    let (north_id, south_id, east_id) = (ids[0], ids[1], ids[2]);
    let (_dashboard, url) = start_dashboard(&registry, cluster.credentials());
    let (_driver, client) = start_browser(&chromium, &driver).await;
    client.goto(&url).await.expect("the page loads");

    // The three nodes, up.
    until(&client, "the three nodes listed", LISTED, |page| {
        ids.iter().all(|id| listed(page, *id))
    })
    .await;

    // North floods south's turnstile, held busy: the knocks queue in its mailbox.
    let me: Node = cluster.builder().name("test").build().await.unwrap();
    let names = Registry::connect(&me, &registry).await.unwrap();
    let north: TurnstileRef = names.lookup("north").await.unwrap();
    let south: TurnstileRef = names.lookup("south").await.unwrap();
    let east: TurnstileRef = names.lookup("east").await.unwrap();
    let object = me.wire_ref(&south).object.to_string();
    let bar = bar_script(&object);
    let before = until(&client, "south's turnstile listed", &bar, |b| !b.is_null()).await;
    assert_eq!(before["length"], 0, "{before}");
    assert_eq!(
        before["drawn"], 0.0,
        "an empty mailbox draws no bar: {before}"
    );
    // Its registry name and group, under its label.
    let row = format!(
        "const row = document.querySelector('[data-object=\"{object}\"]');
         return row ? [row.dataset.names, row.querySelector('.bound')?.textContent ?? null] : null;"
    );
    let shown = until(&client, "south's name on its row", &row, |r| !r.is_null()).await;
    assert_eq!(shown, json!(["south", "south [turnstiles]"]), "{shown}");
    let holding = tokio::spawn({
        let south = south.clone();
        async move { south.hold(PATIENCE.as_millis() as u64).await }
    });
    until(&client, "south's turnstile busy", &bar, |b| {
        b["busy"] == true
    })
    .await;
    north.pass_on(south.clone(), FLOOD).await.unwrap().unwrap();
    let flooded = until(&client, "the mailbox bar risen", &bar, |b| {
        b["length"] == FLOOD
    })
    .await;
    assert_eq!(flooded["capacity"], CAPACITY, "{flooded}");
    let share = flooded["drawn"].as_f64().unwrap();
    let expected = f64::from(FLOOD) / f64::from(CAPACITY);
    assert!(
        (share - expected).abs() < 0.02,
        "the bar is drawn {share:.3} full, not {expected:.3}: {flooded}"
    );

    // Traffic between the other nodes meanwhile, for the graph and the rates.
    let traffic = tokio::spawn({
        let (north, east) = (north.clone(), east.clone());
        async move {
            loop {
                let _ = north.pass_on(east.clone(), 40).await;
                let _ = east.pass_on(north.clone(), 20).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    if truthy("REMORA_UPDATE_SCREENSHOT") {
        // Once the north-east traffic shows on its edge.
        let edge = format!(
            "const e = document.querySelector('#graph .edge[data-from=\"{north_id}\"][data-to=\"{east_id}\"]');
             return e ? Number(e.dataset.frames) : 0;"
        );
        until(&client, "traffic on the graph", &edge, |f| {
            f.as_f64() > Some(20.0)
        })
        .await;
        let png = client.screenshot().await.expect("a screenshot");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &png).unwrap();
        eprintln!("wrote {} ({} bytes)", path.display(), png.len());
    }

    // Released, the turnstile drains and the bar falls.
    let releaser: TurnstileRef = me.spawn_on(south_id, "turnstile", ()).await.unwrap();
    releaser.release_all().await.unwrap();
    assert_eq!(holding.await.unwrap(), Ok(0));
    let drained = until(&client, "the bar fallen", &bar, |b| b["length"] == 0).await;
    assert_eq!(drained["drawn"], 0.0, "{drained}");

    // South frozen (SIGSTOP: its socket open, nothing answers) for less than
    // its lease: the page shows it unreachable, and the surveys keep their
    // pace meanwhile, each node given its deadline and no more.
    traffic.abort();
    let south_pid = cluster.nodes()[2].child.id().to_string();
    let signal = |name: &str| {
        let sent = Command::new("kill")
            .args([name, &south_pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {name} {south_pid}");
    };
    signal("-STOP");
    let frozen = Instant::now();
    let south_name = south_id.to_string();
    until(&client, "the frozen node unreachable", LISTED, |page| {
        page.as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["id"] == south_name.as_str() && n["up"] == false)
        })
    })
    .await;
    let mut at = until(&client, "a survey", SURVEYED_AT, |at| at.as_u64().is_some())
        .await
        .as_u64()
        .unwrap();
    // A survey sleeps its interval, then reads the registry and the nodes,
    // each under the deadline.
    let (interval, deadline): (u64, u64) =
        (INTERVAL_MS.parse().unwrap(), DEADLINE_MS.parse().unwrap());
    let pace = interval + 2 * deadline + 500;
    for _ in 0..5 {
        let next = until(&client, "the next survey", SURVEYED_AT, |next| {
            next.as_u64() > Some(at)
        })
        .await
        .as_u64()
        .unwrap();
        assert!(
            next - at <= pace,
            "surveys {} ms apart while a node is frozen, more than {pace} ms",
            next - at
        );
        at = next;
    }
    signal("-CONT");
    assert!(frozen.elapsed() < LEASE, "south was frozen past its lease");
    until(&client, "the thawed node up again", LISTED, |page| {
        listed(page, south_id)
    })
    .await;

    // East killed: it leaves the page within its lease (and a survey or two).
    let east_name = east_id.to_string();
    cluster.nodes()[3].kill().unwrap();
    let killed = Instant::now();
    let within = LEASE + Duration::from_secs(3);
    let page = until(&client, "the killed node gone", LISTED, |page| {
        page.as_array().is_some_and(|nodes| {
            !nodes.is_empty() && nodes.iter().all(|n| n["id"] != east_name.as_str())
        })
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= within,
        "east left the page after {took:?}, not within {within:?}"
    );
    eprintln!("the killed node left the page {took:?} after SIGKILL (lease {LEASE:?})");
    assert!(listed(&page, north_id) && listed(&page, south_id), "{page}");

    client.close().await.expect("the session ends");
    me.shutdown().await;
}

/// `GET path` from the dashboard at `url` (`http://ADDR/`), over plain
/// HTTP/1.1: the status line and the body (bounded reads, off the runtime).
async fn get(url: &str, path: &str) -> (String, String) {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).expect("the dashboard answers");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("a response");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.lines().next().unwrap_or_default().to_owned();
        (status, body.to_owned())
    })
    .await
    .unwrap()
}

/// Without a browser: the page, its assets and the latest survey over HTTP;
/// the survey lists the registry's node and the node bound in it, its names
/// and its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_serves_its_page_and_the_latest_survey() {
    let mut cluster = LocalCluster::new().unwrap();
    let lease_ms = LEASE.as_millis().to_string();
    let registry = cluster
        .start(
            FIXTURE,
            ["--name", "registry", "--serve-registry", &lease_ms],
        )
        .unwrap()
        .addr
        .clone();
    let north = cluster
        .start(
            FIXTURE,
            [
                "--name",
                "north",
                "--registry",
                &registry,
                "--bind",
                "north",
                "--lease-ms",
                &lease_ms,
            ],
        )
        .unwrap();
    let north_id = north.ready[0].clone();
    let (_dashboard, url) = start_dashboard(&registry, cluster.credentials());

    let (status, page) = get(&url, "/").await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        page.contains("app.js") && page.contains("app.css"),
        "{page}"
    );
    for asset in ["/app.js", "/app.css"] {
        let (status, body) = get(&url, asset).await;
        assert!(
            status.contains(" 200 ") && !body.is_empty(),
            "{asset}: {status}"
        );
    }

    let (status, body) = get(&url, "/snapshot.json").await;
    assert!(status.contains(" 200 "), "{status}");
    let survey: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let nodes = survey["nodes"].as_array().expect("nodes");
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["north", "registry"], "{survey}");
    assert!(nodes.iter().all(|n| n["status"] == "up"), "{survey}");
    assert!(
        nodes.iter().any(|n| n["id"] == north_id.as_str()),
        "{survey}"
    );
    assert_eq!(survey["names"][0]["name"], "north", "{survey}");
    // The bound turnstile carries its name and group in its node's actor list.
    let north_node = nodes.iter().find(|n| n["id"] == north_id.as_str());
    let actors = north_node
        .and_then(|n| n["actors"].as_array())
        .expect("actors");
    let bound: Vec<&Value> = actors
        .iter()
        .filter(|a| a["names"] == json!(["north"]))
        .collect();
    assert_eq!(bound.len(), 1, "{survey}");
    assert_eq!(bound[0]["groups"], json!(["turnstiles"]), "{survey}");
    assert_eq!(survey["groups"][0]["group"], "turnstiles", "{survey}");
    assert_eq!(
        survey["groups"][0]["members"][0],
        north_id.as_str(),
        "{survey}"
    );
}
