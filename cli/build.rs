// Whether the etcd test can run: see ../integration-tests/etcd_probe.rs.
mod etcd {
    include!("../integration-tests/etcd_probe.rs");
}

fn main() {
    etcd::main();
    browser();
}

/// Sets `cfg(no_browser)` when chromium or chromedriver is missing (on PATH, in
/// /usr/bin, or where REMORA_CHROMIUM / REMORA_CHROMEDRIVER name them) and
/// REMORA_REQUIRE_BROWSER is not set: the dashboard's browser test is then
/// compiled as ignored, so that `cargo test` counts it as not run rather than
/// passed, and this script says so in a cargo warning. With
/// REMORA_REQUIRE_BROWSER=1 (`.ci/test`) the test is compiled as usual and
/// fails with an install hint.
fn browser() {
    println!("cargo::rustc-check-cfg=cfg(no_browser)");
    for var in [
        "REMORA_REQUIRE_BROWSER",
        "REMORA_CHROMIUM",
        "REMORA_CHROMEDRIVER",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    // Installing them later is noticed: a missing file makes cargo rerun this.
    println!("cargo::rerun-if-changed=/usr/bin/chromium");
    println!("cargo::rerun-if-changed=/usr/bin/chromedriver");
    let found = |var: &str, name: &str| -> bool {
        if let Some(path) = std::env::var_os(var) {
            return std::path::Path::new(&path).is_file();
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([std::path::PathBuf::from("/usr/bin")])
            .any(|dir| dir.join(name).is_file())
    };
    if found("REMORA_CHROMIUM", "chromium") && found("REMORA_CHROMEDRIVER", "chromedriver") {
        return;
    }
    let required = std::env::var("REMORA_REQUIRE_BROWSER")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    if !required {
        println!("cargo::rustc-cfg=no_browser");
        println!(
            "cargo::warning=chromium or chromedriver is not installed: the dashboard's browser \
             test is compiled as ignored and does not run (apt-get install chromium \
             chromium-driver; REMORA_REQUIRE_BROWSER=1 makes it fail instead)"
        );
    }
}
