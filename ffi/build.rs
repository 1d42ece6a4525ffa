//! Without the `dpdk` feature: nothing (the crate is empty). With it: find libdpdk with
//! pkg-config, generate allowlisted bindings with bindgen, compile the C shim with DPDK's own
//! flags, and link every DPDK library pkg-config names.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::path::PathBuf;
    use std::process::Command;

    const MISSING: &str =
        "the `dpdk` feature needs DPDK 22.11 development files, libclang and pkg-config.\n\
        On Debian 12: apt-get install -y libdpdk-dev dpdk libclang-dev pkg-config\n\
        (or build without `--features dpdk`: the kernel and TAP drivers need no DPDK)";

    fn pkg_config(args: &[&str]) -> Vec<String> {
        let out = Command::new("pkg-config")
            .args(args)
            .arg("libdpdk")
            .output()
            .unwrap_or_else(|e| panic!("cannot run pkg-config ({e}).\n{MISSING}"));
        if !out.status.success() {
            panic!(
                "pkg-config does not find libdpdk: {}\n{MISSING}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    pub fn build() {
        println!("cargo:rerun-if-changed=shim/shim.c");
        println!("cargo:rerun-if-changed=shim/shim.h");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
        let version = pkg_config(&["--modversion"]).join(" ");
        if !version.starts_with("22.") {
            println!(
                "cargo:warning=libdpdk {version} found; Tachyon is built and tested against 22.11"
            );
        }
        // Passed unchanged: they include `-include rte_config.h` and `-march=...`, which
        // rte_memcpy.h needs under gcc 12.
        let mut cflags = pkg_config(&["--cflags"]);
        cflags.push("-DALLOW_EXPERIMENTAL_API".into());

        let mut shim = cc::Build::new();
        shim.file("shim/shim.c").include("shim").warnings(false);
        for f in &cflags {
            shim.flag(f);
        }
        shim.compile("tachyon_dpdk_shim");

        let bindings = bindgen::Builder::default()
            .header("shim/shim.h")
            .clang_args(&cflags)
            .clang_arg("-Ishim")
            .allowlist_function("tachyon_.*")
            .allowlist_function("rte_eal_(init|cleanup|process_type)")
            .allowlist_function("rte_thread_register")
            .allowlist_function("rte_strerror")
            .allowlist_function("rte_socket_id")
            .allowlist_function("rte_lcore_count")
            .allowlist_function("rte_pktmbuf_pool_create")
            .allowlist_function("rte_mempool_(free|avail_count|in_use_count)")
            .allowlist_function("rte_eth_dev_(count_avail|configure|start|stop|close|info_get|socket_id|get_port_by_name|set_mtu)")
            .allowlist_function("rte_eth_(rx|tx)_queue_setup")
            .allowlist_function("rte_eth_macaddr_get")
            .allowlist_function("rte_eth_dev_default_mac_addr_set")
            .allowlist_function("rte_eth_link_get_nowait")
            .allowlist_function("rte_eth_promiscuous_enable")
            .allowlist_function("rte_eth_stats_get")
            .allowlist_type("rte_eth_conf|rte_eth_dev_info|rte_ether_addr|rte_eth_link|rte_eth_stats|rte_eth_rxconf|rte_eth_txconf")
            .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE|RTE_ETH_LINK_UP|RTE_MAX_LCORE")
            .opaque_type("rte_mbuf|rte_mempool")
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .generate()
            .unwrap_or_else(|e| panic!("bindgen failed on DPDK's headers: {e}\n{MISSING}"));
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        bindings
            .write_to_file(out.join("dpdk.rs"))
            .expect("writing the generated bindings into OUT_DIR");

        // Every library pkg-config lists; --as-needed keeps only those used. Drivers (PMDs)
        // are loaded at run time from DPDK's driver directory.
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
        for lib in pkg_config(&["--libs"]) {
            if let Some(name) = lib.strip_prefix("-l") {
                println!("cargo:rustc-link-lib=dylib={name}");
            } else if let Some(dir) = lib.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={dir}");
            }
        }
    }
}
