//! What the samples' end-to-end tests share: running a sample binary to its end.

use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `binary` without arguments to its end and returns its exit status,
/// standard output and standard error. A run past `limit` is killed and fails the
/// test: the limit only keeps a hung sample from hanging the suite.
pub fn run_to_end(binary: &str, limit: Duration) -> (ExitStatus, String, String) {
    let child = Command::new(binary)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary} does not start: {e}"));
    let pid = child.id().to_string();
    let (finished, watching) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let hung = watching.recv_timeout(limit).is_err();
        if hung {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        hung
    });
    // Reads both pipes while waiting, so a chatty child never blocks on a full pipe.
    let output = child.wait_with_output().expect("waiting for the sample");
    let _ = finished.send(());
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        !watchdog.join().unwrap(),
        "{binary} did not finish within {limit:?}:\n{stdout}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, stdout, stderr)
}
