// Shared by the build scripts of the packages whose tests need a real etcd
// (`integration-tests`, `cli`): `include!`d, not a crate (`cli/build.rs` includes
// it in a module beside its own probe, and calls `etcd::main`).
//
// Sets `cfg(etcd)` when an `etcd` binary is installed (on PATH or at
// /usr/bin/etcd). Without one, the tests that need it are compiled as ignored
// (`#[cfg_attr(not(etcd), ignore = ...)]`), so that `cargo test` reports them as
// not run instead of passing them, and this script says so in a cargo warning;
// with `REMORA_REQUIRE_ETCD` set to 1, true or yes (as `.ci/test` does), a
// missing etcd fails the build instead.

pub fn main() {
    println!("cargo::rustc-check-cfg=cfg(etcd)");
    println!("cargo::rerun-if-env-changed=REMORA_REQUIRE_ETCD");
    println!("cargo::rerun-if-env-changed=PATH");
    // Installing etcd later is noticed: a missing file makes cargo rerun this.
    println!("cargo::rerun-if-changed=/usr/bin/etcd");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let installed = std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .chain([std::path::PathBuf::from("/usr/bin/etcd")])
        .find(|candidate| candidate.is_file());
    if let Some(etcd) = installed {
        println!("cargo::rerun-if-changed={}", etcd.display());
        println!("cargo::rustc-cfg=etcd");
        return;
    }
    let required = std::env::var("REMORA_REQUIRE_ETCD")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    if required {
        panic!(
            "REMORA_REQUIRE_ETCD is set but no etcd binary is on PATH or at /usr/bin/etcd; \
             install it (Debian: apt-get install etcd-server, or run bash .ci/packages)"
        );
    }
    println!(
        "cargo::warning=etcd is not installed: the tests that need it are compiled as ignored \
         and do not run (apt-get install etcd-server; REMORA_REQUIRE_ETCD=1 makes this an error)"
    );
}
