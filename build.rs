//! Build script of the `tachyon` binary: records the git revision for `--version` and logs.
//! Also names the dataplane drivers built in (the `dpdk` feature; ffi/build.rs finds DPDK).
use std::process::Command;

fn main() {
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TACHYON_GIT_REV={rev}");
    // `tachyon --version` names the dataplane drivers compiled in (tests look for "dpdk").
    let drivers = if std::env::var_os("CARGO_FEATURE_DPDK").is_some() {
        "kernel tap dpdk"
    } else {
        "kernel tap"
    };
    println!("cargo:rustc-env=TACHYON_DRIVERS={drivers}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    // HEAD names a branch whose ref file changes on every commit: watch that file too.
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{r}");
        }
    }
    println!("cargo:rerun-if-changed=.git/packed-refs");
    println!("cargo:rerun-if-changed=build.rs");
}
