//! # tachyon-ffi — DPDK 22.11 bindings
//!
//! With the `dpdk` feature: bindgen's output for an allowlist of EAL, ethdev, mempool and mbuf
//! functions (generated from the headers `pkg-config libdpdk` names), plus `tachyon_*`
//! wrappers from `shim/shim.c` for DPDK's inline functions and macros (`rte_eth_rx_burst`,
//! `rte_pktmbuf_mtod`, `rte_errno`, ...). Without the feature the crate is empty, and the
//! workspace builds on hosts without DPDK.
//!
//! Everything here is raw and `unsafe`; `tachyon-net`'s `dpdk` module is the safe layer.

#[cfg(feature = "dpdk")]
#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/dpdk.rs"));
}

#[cfg(feature = "dpdk")]
pub use bindings::*;

/// The text of DPDK's error number `errno` (`rte_strerror`).
#[cfg(feature = "dpdk")]
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    unsafe {
        let p = rte_strerror(errno);
        if p.is_null() {
            return format!("error {errno}");
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
