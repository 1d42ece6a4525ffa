//! The user-space path over a Linux TAP device: the broker's own TCP/IP stack (smoltcp) on
//! Ethernet frames read from and written to `/dev/net/tun`. No DPDK is needed, so this is the
//! way to develop and test the user-space path anywhere. One read or write system call per
//! frame: it is for development, not speed.
//!
//! The broker creates the interface (or attaches to an existing persistent one of that
//! name); the kernel side then needs an address and the link up, e.g.
//! `ip addr add 10.77.0.1/24 dev tachyon0 && ip link set tachyon0 up`, with the broker at
//! another address of that subnet (`[tap] address`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::libc;
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant as NetInstant;
use tachyon_engine::EngineConfig;

use crate::durable::DurabilityConfig;
use tachyon_shard::Waker;

use super::{Frames, InterfaceConfig, ShardDevice, StackConfig};
use crate::shutdown::Shutdown;
use crate::wake::{drain, eventfd_waker};
use crate::NetError;

const ETHERNET_HEADER: usize = 14;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, the flags, padding to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Settings of the TAP driver.
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// Interface name, at most 15 bytes.
    pub interface: String,
    pub iface: InterfaceConfig,
    pub core: Option<usize>,
}

/// A TAP interface opened for Ethernet frames, non-blocking.
pub struct TapDevice {
    fd: OwnedFd,
    mtu: usize,
    rx: Vec<u8>,
    tx: Vec<u8>,
    wake_fd: OwnedFd,
    waker: Arc<dyn Waker>,
    rx_frames: u64,
    tx_frames: u64,
    tx_dropped: u64,
}

impl TapDevice {
    /// Creates (or attaches to) TAP interface `name`.
    ///
    /// # Errors
    /// [`NetError::Device`] with what to do (missing /dev/net/tun, no CAP_NET_ADMIN, ...).
    pub fn open(name: &str, mtu: usize) -> Result<TapDevice, NetError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(NetError::Device(format!(
                "tap interface name {name:?}: use 1 to 15 bytes"
            )));
        }
        // SAFETY: a NUL-terminated path; the result is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            return Err(NetError::Device(format!(
                "cannot open /dev/net/tun: {e} — load the tun module (modprobe tun) and run as root or with CAP_NET_ADMIN"
            )));
        }
        // SAFETY: open(2) returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads a `struct ifreq`, which `IfReq` lays out.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
            let e = std::io::Error::last_os_error();
            return Err(NetError::Device(format!(
                "cannot create tap interface {name}: {e} — run as root or with CAP_NET_ADMIN; an existing interface of that name must be a TAP device not in use"
            )));
        }
        let (waker, wake_fd) = eventfd_waker()?;
        Ok(TapDevice {
            fd,
            mtu,
            rx: vec![0; mtu + ETHERNET_HEADER],
            tx: vec![0; mtu + ETHERNET_HEADER],
            wake_fd,
            waker,
            rx_frames: 0,
            tx_frames: 0,
            tx_dropped: 0,
        })
    }
}

pub struct TapRx<'a>(&'a [u8]);

impl RxToken for TapRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub struct TapTx<'a> {
    fd: &'a OwnedFd,
    buf: &'a mut [u8],
    sent: &'a mut u64,
    dropped: &'a mut u64,
}

impl TxToken for TapTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len());
        let frame = &mut self.buf[..len];
        let r = f(frame);
        // SAFETY: writes `len` initialised bytes from our buffer.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), len) };
        if n == len as isize {
            *self.sent += 1;
        } else {
            // The kernel queue is full (or the interface is down): TCP retransmits.
            *self.dropped += 1;
        }
        r
    }
}

impl Device for TapDevice {
    type RxToken<'a> = TapRx<'a>;
    type TxToken<'a> = TapTx<'a>;

    fn receive(&mut self, _: NetInstant) -> Option<(TapRx<'_>, TapTx<'_>)> {
        // SAFETY: reads at most `rx.len()` bytes into our buffer.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                self.rx.as_mut_ptr().cast(),
                self.rx.len(),
            )
        };
        if n <= 0 {
            return None; // EAGAIN (nothing queued), EINTR, or an interface going away
        }
        self.rx_frames += 1;
        Some((
            TapRx(&self.rx[..n as usize]),
            TapTx {
                fd: &self.fd,
                buf: &mut self.tx,
                sent: &mut self.tx_frames,
                dropped: &mut self.tx_dropped,
            },
        ))
    }

    fn transmit(&mut self, _: NetInstant) -> Option<TapTx<'_>> {
        Some(TapTx {
            fd: &self.fd,
            buf: &mut self.tx,
            sent: &mut self.tx_frames,
            dropped: &mut self.tx_dropped,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + ETHERNET_HEADER;
        caps
    }
}

impl Frames for TapDevice {
    /// A copy of the frame (one allocation per frame: TAP is the development path).
    type Frame = Vec<u8>;

    fn receive_frame(&mut self) -> Option<Vec<u8>> {
        let (rx, _) = self.receive(NetInstant::from_micros(0))?;
        Some(rx.0.to_vec())
    }

    fn flush_tx(&mut self) {
        // Every frame was written as it was built.
    }

    fn wait(&mut self, max: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = libc::timespec {
            tv_sec: max.as_secs() as libc::time_t,
            tv_nsec: max.subsec_nanos() as libc::c_long,
        };
        // SAFETY: two valid pollfds; a null signal mask keeps the current one.
        unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        if fds[1].revents != 0 {
            drain(&self.wake_fd);
        }
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.waker.clone()
    }

    fn dropped_frames(&self) -> u64 {
        self.tx_dropped
    }

    fn report(&self) -> String {
        format!(
            "tap: {} frames received, {} sent, {} dropped on send",
            self.rx_frames, self.tx_frames, self.tx_dropped
        )
    }
}

/// Runs the broker on one user-space shard over TAP interface `cfg.interface`.
///
/// # Errors
/// [`NetError`] when the interface cannot be opened or the shard cannot start.
pub fn run(
    cfg: TapConfig,
    stack: StackConfig,
    engine_cfg: Arc<EngineConfig>,
    durability: Option<&DurabilityConfig>,
    shutdown: Arc<Shutdown>,
    hooks: crate::ControlHooks,
) -> Result<(), NetError> {
    let device = TapDevice::open(&cfg.interface, cfg.iface.mtu)?;
    tracing::info!(interface = %cfg.interface, "tap interface open; give the kernel side an address of the subnet and bring it up");
    super::run(
        vec![ShardDevice {
            device,
            iface: cfg.iface,
            core: cfg.core,
        }],
        stack,
        engine_cfg,
        durability,
        shutdown,
        hooks,
    )
}
