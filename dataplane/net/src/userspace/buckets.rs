//! Socket buckets: a shard's TCP sockets split over several smoltcp `Interface`s by a hash
//! of each connection's addresses, so that smoltcp's per-socket work stays within a bucket.
//!
//! smoltcp finds the socket of an incoming segment by a linear scan, and every egress pass
//! visits every socket of its `SocketSet`: with one set, each message pays for every
//! connection of the shard. The shard therefore reads frames off the device itself, hashes
//! each TCP frame's (source address, source port, destination port) to a bucket, and lets
//! only that bucket's `Interface` process it; egress runs only for buckets that had traffic
//! (and for all once per millisecond, for TCP's timers). A message then pays for the
//! connections of one bucket.
//!
//! Frames that are not TCP over IPv4 (ARP, ICMP) go to bucket 0. The other buckets never see
//! ARP, so each feeds its stack a synthetic ARP request built from a peer's frame before that
//! frame when the peer is new, its MAC changed, or every 20 s: smoltcp learns the neighbour
//! from it (and answers it, which the peer ignores or takes as a refresh).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::Duration;

use smoltcp::iface::{Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, RxToken};
use smoltcp::time::Instant as NetInstant;

use super::Frames;

/// A peer's neighbour entry is refreshed this often (smoltcp keeps entries for 60 s).
const NEIGHBOR_REFRESH: Duration = Duration::from_secs(20);
/// Peers remembered per bucket before the table is cleared.
const NEIGHBORS_MAX: usize = 65_536;

/// A frame waiting for its bucket's `Interface`.
pub(super) enum Queued<F> {
    Device(F),
    /// A synthetic ARP request (see the module comment).
    Arp([u8; 42]),
}

pub(super) struct Bucket<F> {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub rx: VecDeque<Queued<F>>,
    /// Had traffic or writes since its last egress.
    pub dirty: bool,
    /// Listening sockets per port.
    pub listening: Vec<usize>,
    neighbors: Neighbors,
}

impl<F> Bucket<F> {
    pub fn new(iface: Interface, ports: usize) -> Bucket<F> {
        Bucket {
            iface,
            sockets: SocketSet::new(Vec::new()),
            rx: VecDeque::new(),
            dirty: false,
            listening: vec![0; ports],
            neighbors: Neighbors::default(),
        }
    }

    /// Queues `frame`, preceded by a synthetic ARP request when its sender is new to this
    /// bucket, changed its MAC or was last refreshed long ago (buckets that do not receive
    /// ARP).
    pub fn push(&mut self, frame: F, arp_from_frames: bool, now_ms: u64)
    where
        F: AsRef<[u8]>,
    {
        if arp_from_frames {
            if let Some(arp) = self.neighbors.tell(frame.as_ref(), now_ms) {
                self.rx.push_back(Queued::Arp(arp));
            }
        }
        self.rx.push_back(Queued::Device(frame));
    }
}

/// The peers a bucket's stack was told about: IPv4 address -> (MAC, when in ms).
#[derive(Default)]
pub(super) struct Neighbors(HashMap<u32, ([u8; 6], u64), BuildHasherDefault<AddrHasher>>);

impl Neighbors {
    /// For an IPv4 frame from a new peer, a peer whose MAC changed (a restarted client on a
    /// virtual device, a moved address) or one due for refresh: the synthetic ARP request
    /// to feed the stack first. One lookup per frame otherwise.
    pub fn tell(&mut self, frame: &[u8], now_ms: u64) -> Option<[u8; 42]> {
        let ip = ipv4_source(frame)?;
        let mac: [u8; 6] = frame[6..12].try_into().expect("checked by ipv4_source");
        let fresh = self.0.get(&ip).is_some_and(|&(known, t)| {
            known == mac && now_ms < t + NEIGHBOR_REFRESH.as_millis() as u64
        });
        if fresh {
            return None;
        }
        if self.0.len() >= NEIGHBORS_MAX {
            self.0.clear();
        }
        self.0.insert(ip, (mac, now_ms));
        Some(synthetic_arp(frame))
    }
}

/// The bucket for `frame` among `n`: TCP over IPv4 by (source address, source port,
/// destination port); anything else bucket 0.
pub(super) fn bucket_of(frame: &[u8], n: usize) -> usize {
    if n <= 1 || frame.len() < 14 + 20 + 4 || frame[12..14] != [0x08, 0x00] {
        return 0;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0F) * 4;
    if ip[9] != 6 || ihl < 20 || ip.len() < ihl + 4 {
        return 0;
    }
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let ports = u32::from_be_bytes([ip[ihl], ip[ihl + 1], ip[ihl + 2], ip[ihl + 3]]);
    // A multiplicative hash of the two words (the peer chooses ports, but a bucket is only a
    // share of one shard's work: skew costs time, not correctness).
    let h = (u64::from(src) << 32 | u64::from(ports)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 32) as usize) % n
}

/// The IPv4 source address of an Ethernet frame carrying IPv4.
fn ipv4_source(frame: &[u8]) -> Option<u32> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    Some(u32::from_be_bytes([
        frame[26], frame[27], frame[28], frame[29],
    ]))
}

/// For an IPv4 frame (checked by `ipv4_source`): an ARP request from its sender (MAC and IP)
/// for its destination IP (ours).
fn synthetic_arp(frame: &[u8]) -> [u8; 42] {
    let mut a = [0u8; 42];
    a[0..6].copy_from_slice(&frame[0..6]); // to us
    a[6..12].copy_from_slice(&frame[6..12]); // from the peer
    a[12..14].copy_from_slice(&[0x08, 0x06]);
    a[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    a[22..28].copy_from_slice(&frame[6..12]); // sender MAC
    a[28..32].copy_from_slice(&frame[26..30]); // sender IP
    a[38..42].copy_from_slice(&frame[30..34]); // target IP: ours
    a
}

/// Hashes a peer's IPv4 address with one multiplication (the peer does not choose its
/// address freely, and a collision only costs a probe).
#[derive(Default)]
pub(super) struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A bucket's view of the shard's device: it receives the frames queued for the bucket and
/// transmits through the device.
pub(super) struct BucketDevice<'a, D: Frames> {
    pub rx: &'a mut VecDeque<Queued<D::Frame>>,
    pub dev: &'a mut D,
}

pub(super) struct QueuedToken<F>(Queued<F>);

impl<F: AsRef<[u8]>> RxToken for QueuedToken<F> {
    fn consume<R, G: FnOnce(&[u8]) -> R>(self, f: G) -> R {
        match &self.0 {
            Queued::Device(frame) => f(frame.as_ref()),
            Queued::Arp(a) => f(a),
        }
        // The device frame (an mbuf) is released when the token drops here.
    }
}

impl<D: Frames> Device for BucketDevice<'_, D> {
    type RxToken<'b>
        = QueuedToken<D::Frame>
    where
        Self: 'b;
    type TxToken<'b>
        = D::TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, ts: NetInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        let tx = self.dev.transmit(ts)?;
        Some((QueuedToken(frame), tx))
    }

    fn transmit(&mut self, ts: NetInstant) -> Option<Self::TxToken<'_>> {
        self.dev.transmit(ts)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.dev.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn a_connection_always_lands_in_the_same_bucket_and_connections_spread() {
        let mut counts = [0usize; 16];
        for port in 40_000..41_000u16 {
            let f = tcp_frame([10, 0, 0, 1], port, 1883);
            let b = bucket_of(&f, 16);
            assert_eq!(b, bucket_of(&f, 16));
            counts[b] += 1;
        }
        // 1000 connections over 16 buckets: none empty, none with more than twice its share.
        assert!(counts.iter().all(|&c| c > 0 && c < 125), "{counts:?}");
    }

    #[test]
    fn arp_and_short_frames_go_to_bucket_zero() {
        let mut arp = tcp_frame([10, 0, 0, 1], 1, 2);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(bucket_of(&arp, 16), 0);
        assert_eq!(bucket_of(&[0u8; 20], 16), 0);
        let mut udp = tcp_frame([10, 0, 0, 1], 1, 2);
        udp[23] = 17;
        assert_eq!(bucket_of(&udp, 16), 0);
    }

    #[test]
    fn a_bucket_is_told_of_a_peer_once_and_again_when_its_mac_changes() {
        let mut n = Neighbors::default();
        let f = tcp_frame([10, 0, 0, 7], 1, 2);
        assert!(n.tell(&f, 0).is_some(), "a new peer");
        assert!(n.tell(&f, 10).is_none(), "known");
        let mut moved = f.clone();
        moved[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        let arp = n.tell(&moved, 20).expect("the peer's MAC changed");
        assert_eq!(&arp[22..28], &[2, 0, 0, 0, 0, 9]);
        assert!(n.tell(&moved, 30).is_none());
        assert!(
            n.tell(&moved, 40 + NEIGHBOR_REFRESH.as_millis() as u64)
                .is_some(),
            "refresh"
        );
        let mut arp_frame = f;
        arp_frame[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(n.tell(&arp_frame, 50).is_none(), "not IPv4");
    }

    #[test]
    fn a_synthetic_arp_request_comes_from_the_frames_sender() {
        let f = tcp_frame([10, 0, 0, 7], 1, 2);
        assert_eq!(ipv4_source(&f), Some(u32::from_be_bytes([10, 0, 0, 7])));
        assert_eq!(ipv4_source(&f[..20]), None);
        let a = synthetic_arp(&f);
        assert_eq!(&a[22..28], &f[6..12]);
        assert_eq!(&a[28..32], &[10, 0, 0, 7]);
        assert_eq!(&a[38..42], &[10, 0, 0, 2]);
        assert_eq!(&a[20..22], &[0, 1], "a request");
    }
}
