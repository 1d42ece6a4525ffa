//! Configuration of the user-space dataplane: which driver, the smoltcp stack, the TAP device,
//! and DPDK (EAL arguments, ports, core map). Validated without DPDK, so `tachyon
//! check-config` catches mistakes on any machine.
//!
//! ```toml
//! [dataplane]
//! driver = "dpdk"                # "kernel" (default), "tap" or "dpdk"
//!
//! [userspace]
//! ports = [1883]
//! idle = "spin"
//!
//! [dpdk]
//! eal_args = ["--no-huge", "-m", "128", "--no-pci", "--no-shconf", "--no-telemetry"]
//! [[dpdk.ports]]
//! device = "net_tap0,iface=dtap0"
//! address = "10.78.0.2/24"
//! [[dpdk.core_map]]              # shard 0 (one entry per shard, in order)
//! lcore = 1
//! port = 0
//! queue = 0
//! ```

use std::net::Ipv4Addr;

use serde::Deserialize;
use tachyon_net::userspace::dpdk_config::{DpdkConfig, PortConfig, ShardQueue};
use tachyon_net::userspace::tap::TapConfig;
use tachyon_net::userspace::{parse_mac, InterfaceConfig, PollIdle, StackConfig};

use crate::config::{invalid, ConfigError};

/// Mbufs beyond the rings that a queue needs: a TX burst being built and one received.
const MEMPOOL_MARGIN: u32 = 64;
/// DPDK's largest per-lcore mempool cache (RTE_MEMPOOL_CACHE_MAX_SIZE).
const MEMPOOL_CACHE_MAX: u32 = 512;
/// The largest MTU whose frame fits one default mbuf (2048 bytes of data room, no chains).
const DPDK_MTU_MAX: usize = 2048 - 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Kernel,
    Tap,
    Dpdk,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dataplane {
    /// "kernel" (sockets, epoll), "tap" (smoltcp over a TAP device) or "dpdk" (smoltcp over
    /// DPDK port queues; needs a binary built with `--features dpdk`).
    pub driver: String,
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            driver: "kernel".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Userspace {
    /// TCP ports the broker listens on, on every user-space interface.
    pub ports: Vec<u16>,
    pub listen_pool: usize,
    pub socket_rx_buffer: usize,
    pub socket_tx_buffer: usize,
    pub max_connections_per_shard: usize,
    /// smoltcp interfaces per shard, each holding the connections that hash to it: smoltcp's
    /// per-socket scans then cover one bucket, not the whole shard.
    pub socket_buckets: usize,
    /// "spin", "pause" or "sleep" (development).
    pub idle: String,
}

impl Default for Userspace {
    fn default() -> Self {
        Userspace {
            ports: vec![1883],
            listen_pool: 16,
            socket_rx_buffer: 65536,
            socket_tx_buffer: 65536,
            max_connections_per_shard: 1024,
            socket_buckets: 16,
            idle: "spin".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tap {
    pub interface: String,
    /// The broker's address and prefix on the TAP link, e.g. "10.77.0.2/24".
    pub address: String,
    pub gateway: Option<String>,
    pub mac: String,
    pub mtu: usize,
    /// CPU of the TAP shard; none = unpinned.
    pub core: Option<usize>,
}

impl Default for Tap {
    fn default() -> Self {
        Tap {
            interface: "tachyon0".into(),
            address: "10.77.0.2/24".into(),
            gateway: None,
            mac: "02:00:00:00:00:01".into(),
            mtu: 1500,
            core: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dpdk {
    /// EAL arguments; the core map adds `-l`, the ports add `-a` / `--vdev`.
    pub eal_args: Vec<String>,
    pub ports: Vec<DpdkPort>,
    /// Shard i polls `core_map[i]`.
    pub core_map: Vec<CoreMapEntry>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkPort {
    /// PCI address of a NIC (or VF) bound to vfio-pci, or a vdev string.
    pub device: String,
    /// The port's MAC address; left out, the device keeps its own.
    #[serde(default)]
    pub mac: Option<String>,
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default = "default_mtu")]
    pub mtu: usize,
    #[serde(default = "one")]
    pub rx_queues: u16,
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "default_descriptors")]
    pub tx_descriptors: u16,
    #[serde(default = "default_mbufs")]
    pub mempool_mbufs: u32,
    #[serde(default = "default_cache")]
    pub mempool_cache: u32,
}

fn default_mtu() -> usize {
    PortConfig::DEFAULT_MTU
}
fn one() -> u16 {
    1
}
fn default_descriptors() -> u16 {
    PortConfig::DEFAULT_DESCRIPTORS
}
fn default_mbufs() -> u32 {
    PortConfig::DEFAULT_MEMPOOL_MBUFS
}
fn default_cache() -> u32 {
    PortConfig::DEFAULT_MEMPOOL_CACHE
}

/// One shard: the core it polls from and the queue it polls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreMapEntry {
    pub lcore: usize,
    pub port: usize,
    pub queue: u16,
}

/// "10.0.0.2/24" -> (address, prefix length).
fn parse_cidr(key: &str, text: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let bad = || {
        invalid(
            key,
            format!("{text:?}"),
            "use an IPv4 address with its prefix length, e.g. \"10.77.0.2/24\"",
        )
    };
    let (a, p) = text.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    if !(1..=30).contains(&prefix) || addr.is_unspecified() || addr.is_broadcast() {
        return Err(bad());
    }
    Ok((addr, prefix))
}

fn parse_gateway(key: &str, text: &Option<String>) -> Result<Option<Ipv4Addr>, ConfigError> {
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| {
            invalid(
                key,
                format!("{t:?}"),
                "use an IPv4 address, e.g. \"10.77.0.1\", or leave it out",
            )
        }),
    }
}

fn parse_unicast_mac(key: &str, text: &str) -> Result<[u8; 6], ConfigError> {
    parse_mac(text)
        .filter(|m| m[0] & 1 == 0 && *m != [0; 6])
        .ok_or_else(|| {
            invalid(
                key,
                format!("{text:?}"),
                "use a unicast MAC address, e.g. \"02:00:00:00:00:01\" (locally administered)",
            )
        })
}

impl Dataplane {
    pub fn driver(&self) -> Driver {
        match self.driver.as_str() {
            "tap" => Driver::Tap,
            "dpdk" => Driver::Dpdk,
            _ => Driver::Kernel,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.driver.as_str(), "kernel" | "tap" | "dpdk") {
            return Err(invalid(
                "dataplane.driver",
                format!("{:?}", self.driver),
                "use \"kernel\", \"tap\" or \"dpdk\"",
            ));
        }
        Ok(())
    }
}

impl Userspace {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.ports.is_empty() || self.ports.contains(&0) {
            return Err(invalid(
                "userspace.ports",
                format!("{:?}", self.ports),
                "list at least one TCP port, e.g. [1883]",
            ));
        }
        if self.listen_pool == 0 || self.listen_pool > 4096 {
            return Err(invalid(
                "userspace.listen_pool",
                self.listen_pool,
                "use 1 ..= 4096 sockets kept listening per port",
            ));
        }
        for (key, v) in [
            ("userspace.socket_rx_buffer", self.socket_rx_buffer),
            ("userspace.socket_tx_buffer", self.socket_tx_buffer),
        ] {
            // smoltcp's window scaling reaches 1 GiB; below a segment nothing flows.
            if !(2048..=(1 << 30)).contains(&v) {
                return Err(invalid(key, v, "use 2048 ..= 1073741824 bytes"));
            }
        }
        if self.max_connections_per_shard == 0 || self.max_connections_per_shard > 1 << 24 {
            return Err(invalid(
                "userspace.max_connections_per_shard",
                self.max_connections_per_shard,
                "use 1 ..= 16777216 (each costs its two socket buffers)",
            ));
        }
        if self.listen_pool > self.max_connections_per_shard {
            return Err(invalid(
                "userspace.listen_pool",
                self.listen_pool,
                "use at most userspace.max_connections_per_shard",
            ));
        }
        if self.socket_buckets == 0 || self.socket_buckets > 1024 {
            return Err(invalid(
                "userspace.socket_buckets",
                self.socket_buckets,
                "use 1 ..= 1024 (about one per 64 connections a shard holds)",
            ));
        }
        if !matches!(self.idle.as_str(), "spin" | "pause" | "sleep") {
            return Err(invalid(
                "userspace.idle",
                format!("{:?}", self.idle),
                "use \"spin\", \"pause\" or \"sleep\"",
            ));
        }
        Ok(())
    }

    pub fn stack_config(
        &self,
        ring_capacity: usize,
        shutdown_drain_ms: u64,
        ports: usize,
    ) -> StackConfig {
        StackConfig {
            ports: self.ports.clone(),
            listen_pool: self.listen_pool,
            socket_rx_buffer: self.socket_rx_buffer,
            socket_tx_buffer: self.socket_tx_buffer,
            // The pool counts against the limit: room for the listening sockets too.
            // The pools count against the limit: room for the listening sockets too (at least
            // two per bucket and port).
            max_connections: self.max_connections_per_shard
                + self.listen_pool.max(2 * self.socket_buckets) * ports,
            socket_buckets: self.socket_buckets,
            idle: match self.idle.as_str() {
                "pause" => PollIdle::Pause,
                "sleep" => PollIdle::Sleep,
                _ => PollIdle::Spin,
            },
            ring_capacity,
            shutdown_drain_ms,
        }
    }
}

impl Tap {
    pub(crate) fn validate(&self, ncpu: usize) -> Result<(), ConfigError> {
        self.tap_config(ncpu).map(|_| ())
    }

    /// The TAP driver's settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `[tap]` key at fault.
    pub fn tap_config(&self, ncpu: usize) -> Result<TapConfig, ConfigError> {
        if self.interface.is_empty() || self.interface.len() > 15 {
            return Err(invalid(
                "tap.interface",
                format!("{:?}", self.interface),
                "use an interface name of 1 to 15 bytes",
            ));
        }
        let (address, prefix_len) = parse_cidr("tap.address", &self.address)?;
        let gateway = parse_gateway("tap.gateway", &self.gateway)?;
        let mac = parse_unicast_mac("tap.mac", &self.mac)?;
        if !(576..=9000).contains(&self.mtu) {
            return Err(invalid("tap.mtu", self.mtu, "use 576 ..= 9000"));
        }
        if let Some(c) = self.core.filter(|&c| c >= ncpu) {
            return Err(invalid(
                "tap.core",
                c,
                &format!("this host has cores 0..{}; use one of those", ncpu - 1),
            ));
        }
        Ok(TapConfig {
            interface: self.interface.clone(),
            iface: InterfaceConfig {
                mac,
                address,
                prefix_len,
                gateway,
                mtu: self.mtu,
            },
            core: self.core,
        })
    }
}

impl Dpdk {
    pub(crate) fn validate(&self, ncpu: usize) -> Result<(), ConfigError> {
        self.dpdk_config(ncpu).map(|_| ())
    }

    /// The DPDK driver's settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `[dpdk]` key at fault: no ports, a core map with
    /// more shards than queues or queues nobody polls, an lcore the host lacks, a mempool too
    /// small for its rings, EAL arguments that the core map owns.
    pub fn dpdk_config(&self, ncpu: usize) -> Result<DpdkConfig, ConfigError> {
        if let Some(a) = self.eal_args.iter().find(|a| {
            matches!(a.as_str(), "-l" | "-c" | "--lcores" | "--main-lcore")
                || a.starts_with("--lcores=")
                || a.starts_with("--main-lcore=")
        }) {
            return Err(invalid(
                "dpdk.eal_args",
                format!("{a:?}"),
                "remove it: [[dpdk.core_map]] sets the lcores",
            ));
        }
        if self.ports.is_empty() {
            return Err(invalid(
                "dpdk.ports",
                "[]",
                "add a [[dpdk.ports]] with device (a PCI address or a vdev such as \"net_tap0,iface=dtap0\") and address",
            ));
        }
        let mut ports = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            let key = |k: &str| format!("dpdk.ports[{i}].{k}");
            if p.device.trim().is_empty() {
                return Err(invalid(
                    &key("device"),
                    "\"\"",
                    "use a PCI address (\"0000:03:00.0\") or a vdev (\"net_tap0,iface=dtap0\")",
                ));
            }
            let (address, prefix_len) = parse_cidr(&key("address"), &p.address)?;
            let gateway = parse_gateway(&key("gateway"), &p.gateway)?;
            let mac = match &p.mac {
                None => None,
                Some(text) => Some(parse_unicast_mac(&key("mac"), text)?),
            };
            if !(576..=DPDK_MTU_MAX).contains(&p.mtu) {
                return Err(invalid(
                    &key("mtu"),
                    p.mtu,
                    &format!("use 576 ..= {DPDK_MTU_MAX} (a frame must fit one mbuf)"),
                ));
            }
            if p.rx_queues == 0 || p.rx_queues > 64 {
                return Err(invalid(&key("rx_queues"), p.rx_queues, "use 1 ..= 64"));
            }
            for (k, v) in [
                ("rx_descriptors", p.rx_descriptors),
                ("tx_descriptors", p.tx_descriptors),
            ] {
                if !(64..=16384).contains(&v) {
                    return Err(invalid(
                        &key(k),
                        v,
                        "use 64 ..= 16384 (a power of two suits most NICs)",
                    ));
                }
            }
            if p.mempool_cache > MEMPOOL_CACHE_MAX {
                return Err(invalid(
                    &key("mempool_cache"),
                    p.mempool_cache,
                    &format!("use at most {MEMPOOL_CACHE_MAX} (DPDK's limit)"),
                ));
            }
            let needed = p.rx_descriptors as u32
                + p.tx_descriptors as u32
                + p.mempool_cache
                + MEMPOOL_MARGIN;
            if p.mempool_mbufs < needed {
                return Err(invalid(
                    &key("mempool_mbufs"),
                    p.mempool_mbufs,
                    &format!(
                        "too small for the rings: each queue's mempool needs at least rx_descriptors + tx_descriptors + mempool_cache + {MEMPOOL_MARGIN} = {needed}; raise it (2^n - 1 uses memory best, e.g. 4095) or shrink the rings"
                    ),
                ));
            }
            ports.push(PortConfig {
                device: p.device.clone(),
                mac,
                address,
                prefix_len,
                gateway,
                mtu: p.mtu,
                rx_queues: p.rx_queues,
                rx_descriptors: p.rx_descriptors,
                tx_descriptors: p.tx_descriptors,
                mempool_mbufs: p.mempool_mbufs,
                mempool_cache: p.mempool_cache,
            });
        }
        if self.core_map.is_empty() {
            return Err(invalid(
                "dpdk.core_map",
                "[]",
                "add one [[dpdk.core_map]] per shard with lcore, port and queue",
            ));
        }
        let queues: usize = self.ports.iter().map(|p| p.rx_queues as usize).sum();
        if self.core_map.len() > queues {
            return Err(invalid(
                "dpdk.core_map",
                format!("{} shards", self.core_map.len()),
                &format!("more shards than queues ({queues}): raise rx_queues of a port or remove shards"),
            ));
        }
        if self.core_map.len() > tachyon_engine::SHARDS_MAX {
            return Err(invalid(
                "dpdk.core_map",
                self.core_map.len(),
                "use at most 64 shards",
            ));
        }
        let mut shards = Vec::new();
        for (i, e) in self.core_map.iter().enumerate() {
            let key = |k: &str| format!("dpdk.core_map[{i}].{k}");
            if e.lcore >= ncpu {
                return Err(invalid(
                    &key("lcore"),
                    e.lcore,
                    &format!(
                        "this host has lcores (CPUs) 0..{}; use one of those",
                        ncpu - 1
                    ),
                ));
            }
            let Some(p) = self.ports.get(e.port) else {
                return Err(invalid(
                    &key("port"),
                    e.port,
                    &format!(
                        "there are {} [[dpdk.ports]]; use an index below that",
                        self.ports.len()
                    ),
                ));
            };
            if e.queue >= p.rx_queues {
                return Err(invalid(
                    &key("queue"),
                    e.queue,
                    &format!(
                        "port {} has {} queues (rx_queues); use 0 ..= {}",
                        e.port,
                        p.rx_queues,
                        p.rx_queues - 1
                    ),
                ));
            }
            if let Some(j) = self.core_map[..i]
                .iter()
                .position(|o| o.port == e.port && o.queue == e.queue)
            {
                return Err(invalid(
                    &key("queue"),
                    e.queue,
                    &format!(
                        "shard {j} already polls port {} queue {}; give each shard its own queue",
                        e.port, e.queue
                    ),
                ));
            }
            if let Some(j) = self.core_map[..i].iter().position(|o| o.lcore == e.lcore) {
                return Err(invalid(
                    &key("lcore"),
                    e.lcore,
                    &format!("shard {j} already polls on lcore {}; a poll-mode shard needs a core of its own", e.lcore),
                ));
            }
            shards.push(ShardQueue {
                lcore: e.lcore,
                port: e.port,
                queue: e.queue,
            });
        }
        for (pi, p) in self.ports.iter().enumerate() {
            for q in 0..p.rx_queues {
                if !self.core_map.iter().any(|e| e.port == pi && e.queue == q) {
                    return Err(invalid(
                        "dpdk.core_map",
                        format!("no shard for port {pi} queue {q}"),
                        "RSS sends connections to every queue: map each queue to a shard, or lower rx_queues",
                    ));
                }
            }
        }
        Ok(DpdkConfig {
            eal_args: self.eal_args.clone(),
            ports,
            shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const DPDK: &str = r#"
[dataplane]
driver = "dpdk"
[dpdk]
eal_args = ["--no-huge", "-m", "128"]
[[dpdk.ports]]
device = "net_tap0,iface=dtap0"
address = "10.78.0.2/24"
rx_queues = 1
[[dpdk.core_map]]
lcore = 0
port = 0
queue = 0
"#;

    fn err(text: &str) -> String {
        Config::parse(text, "t").unwrap_err().to_string()
    }

    #[test]
    fn a_dpdk_configuration_maps_shards_to_queues() {
        let c = Config::parse(DPDK, "t").unwrap();
        assert_eq!(c.shard_count(), 1);
        let d = c.dpdk_config().unwrap();
        assert_eq!(d.shards.len(), 1);
        assert_eq!(d.ports[0].address, std::net::Ipv4Addr::new(10, 78, 0, 2));
        assert_eq!(d.ports[0].prefix_len, 24);
        assert_eq!(d.ports[0].mempool_mbufs, 4095);
    }

    #[test]
    fn more_shards_than_queues_is_refused() {
        let text = format!("{DPDK}[[dpdk.core_map]]\nlcore = 0\nport = 0\nqueue = 0\n");
        let e = err(&text);
        assert!(
            e.starts_with(
                "config: dpdk.core_map = 2 shards is not usable — more shards than queues (1)"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_queue_without_a_shard_is_refused() {
        let e = err(&DPDK.replace("rx_queues = 1", "rx_queues = 2"));
        assert!(e.contains("no shard for port 0 queue 1"), "{e}");
    }

    #[test]
    fn an_lcore_the_host_lacks_is_refused() {
        let e = err(&DPDK.replace("lcore = 0", "lcore = 4096"));
        assert!(e.starts_with("config: dpdk.core_map[0].lcore = 4096 is not usable — this host has lcores (CPUs) 0.."), "{e}");
    }

    #[test]
    fn a_mempool_too_small_for_its_rings_is_refused() {
        let e = err(&DPDK.replace("rx_queues = 1", "rx_queues = 1\nmempool_mbufs = 1000"));
        assert!(
            e.contains(
                "dpdk.ports[0].mempool_mbufs = 1000 is not usable — too small for the rings"
            ),
            "{e}"
        );
        assert!(e.contains("= 1344"), "{e}");
    }

    #[test]
    fn lcores_in_eal_args_are_refused() {
        let e = err(&DPDK.replace(r#""-m", "128""#, r#""-m", "128", "-l", "0-1""#));
        assert!(
            e.contains("dpdk.eal_args = \"-l\" is not usable — remove it"),
            "{e}"
        );
    }

    #[test]
    fn a_port_needs_an_address_with_a_prefix() {
        let e = err(&DPDK.replace("10.78.0.2/24", "10.78.0.2"));
        assert!(e.contains("dpdk.ports[0].address = \"10.78.0.2\""), "{e}");
    }

    #[test]
    fn tap_settings_are_checked_when_tap_is_the_driver() {
        let c = Config::parse("[dataplane]\ndriver = \"tap\"\n", "t").unwrap();
        assert_eq!(c.shard_count(), 1);
        let t = c.tap_config().unwrap();
        assert_eq!(t.interface, "tachyon0");
        let e = err("[dataplane]\ndriver = \"tap\"\n[tap]\nmac = \"01:00:00:00:00:01\"\n");
        assert!(e.contains("tap.mac"), "{e}");
        let e = err("[dataplane]\ndriver = \"tap\"\n[tap]\ninterface = \"a-name-far-too-long\"\n");
        assert!(e.contains("tap.interface"), "{e}");
        // Not the driver: only parsed.
        Config::parse("[tap]\nmac = \"01:00:00:00:00:01\"\n", "t").unwrap();
    }

    #[test]
    fn the_driver_and_idle_strategy_are_named() {
        let e = err("[dataplane]\ndriver = \"netmap\"\n");
        assert_eq!(e, "config: dataplane.driver = \"netmap\" is not usable — use \"kernel\", \"tap\" or \"dpdk\"");
        let e = err("[userspace]\nidle = \"yield\"\n");
        assert!(e.contains("userspace.idle"), "{e}");
        let e = err("[userspace]\nports = []\n");
        assert!(e.contains("userspace.ports"), "{e}");
    }
}
