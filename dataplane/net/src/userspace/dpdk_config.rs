//! What the DPDK driver is told: EAL arguments, ports and the core map. Plain data, built
//! without DPDK, so that `tachyon check-config` validates a DPDK configuration anywhere.

/// One DPDK port: the device, its stack's addresses, queues and buffers.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// A PCI address (`0000:03:00.0`, passed to EAL with `-a`) or a virtual device string
    /// (`net_tap0,iface=dtap0`, passed with `--vdev`).
    pub device: String,
    /// The port's MAC address; `None` keeps the one the device has.
    pub mac: Option<[u8; 6]>,
    pub address: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<std::net::Ipv4Addr>,
    pub mtu: usize,
    pub rx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Mbufs in each queue's mempool.
    pub mempool_mbufs: u32,
    pub mempool_cache: u32,
}

impl PortConfig {
    pub const DEFAULT_MTU: usize = 1500;
    pub const DEFAULT_DESCRIPTORS: u16 = 512;
    /// 2^n - 1 mbufs use a mempool's memory best.
    pub const DEFAULT_MEMPOOL_MBUFS: u32 = 4095;
    pub const DEFAULT_MEMPOOL_CACHE: u32 = 256;

    /// One queue, default rings and mempool, the device's own MAC, no gateway.
    pub fn with_defaults(device: &str, address: std::net::Ipv4Addr, prefix_len: u8) -> PortConfig {
        PortConfig {
            device: device.into(),
            mac: None,
            address,
            prefix_len,
            gateway: None,
            mtu: Self::DEFAULT_MTU,
            rx_queues: 1,
            rx_descriptors: Self::DEFAULT_DESCRIPTORS,
            tx_descriptors: Self::DEFAULT_DESCRIPTORS,
            mempool_mbufs: Self::DEFAULT_MEMPOOL_MBUFS,
            mempool_cache: Self::DEFAULT_MEMPOOL_CACHE,
        }
    }
}

/// Which core polls which queue.
#[derive(Debug, Clone, Copy)]
pub struct ShardQueue {
    /// The CPU (lcore) the shard runs on.
    pub lcore: usize,
    /// Index into [`DpdkConfig::ports`].
    pub port: usize,
    pub queue: u16,
}

#[derive(Debug, Clone)]
pub struct DpdkConfig {
    /// EAL arguments (memory, `--no-huge`, `--file-prefix`, ...); the core map adds `-l`.
    pub eal_args: Vec<String>,
    pub ports: Vec<PortConfig>,
    /// Shard i polls `shards[i]`.
    pub shards: Vec<ShardQueue>,
}

pub fn is_pci_address(device: &str) -> bool {
    // dddd:bb:dd.f or bb:dd.f
    let b = device.as_bytes();
    device.contains(':')
        && device.contains('.')
        && b.iter()
            .all(|c| c.is_ascii_hexdigit() || *c == b':' || *c == b'.')
}

/// The EAL name of a port: the PCI address, or a vdev string up to its first comma.
pub fn port_name(device: &str) -> &str {
    device.split(',').next().unwrap_or(device)
}

/// The EAL command line for `cfg`.
pub fn eal_argv(cfg: &DpdkConfig) -> Vec<String> {
    let mut args = vec!["tachyon".to_string()];
    args.extend(cfg.eal_args.iter().cloned());
    // The main lcore is the first shard's: the main thread only waits there.
    let main = cfg.shards.first().map_or(0, |s| s.lcore);
    args.push("-l".into());
    args.push(main.to_string());
    for p in &cfg.ports {
        if is_pci_address(&p.device) {
            args.push("-a".into());
            args.push(p.device.clone());
        } else {
            args.push(format!("--vdev={}", p.device));
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_arguments_follow_the_core_map_and_ports() {
        let port = |device: &str| PortConfig::with_defaults(device, [10, 0, 0, 2].into(), 24);
        let cfg = DpdkConfig {
            eal_args: vec!["--no-huge".into(), "-m".into(), "128".into()],
            ports: vec![port("net_tap0,iface=dtap0"), port("0000:03:00.1")],
            shards: vec![ShardQueue {
                lcore: 1,
                port: 0,
                queue: 0,
            }],
        };
        assert_eq!(
            eal_argv(&cfg),
            [
                "tachyon",
                "--no-huge",
                "-m",
                "128",
                "-l",
                "1",
                "--vdev=net_tap0,iface=dtap0",
                "-a",
                "0000:03:00.1"
            ]
        );
        assert_eq!(port_name("net_tap0,iface=dtap0"), "net_tap0");
        assert!(is_pci_address("0000:03:00.1") && is_pci_address("03:00.1"));
        assert!(!is_pci_address("net_memif0,role=server"));
    }
}
