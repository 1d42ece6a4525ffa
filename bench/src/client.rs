//! A minimal blocking MQTT client for the load generator: connect, subscribe, read and decode
//! packets with `tachyon-codec`, and queue small acknowledgements.
//!
//! The hot paths (publishing, receiving) live in `throughput.rs`; this module only owns the
//! connection set-up and the receive buffer.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::BytesMut;
use nix::sys::socket::{recv, MsgFlags};
use tachyon_codec::{
    decode, encode, Connect, Packet, PacketId, Properties, ProtocolVersion, PubResp, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, Utf8Str,
};

/// Largest packet accepted from the broker.
const MAX_PACKET_SIZE: usize = 16 << 20;
/// Bytes asked of the kernel per read.
const READ_CHUNK_SIZE: usize = 256 << 10;

/// The longest a single write may block before the run gives up on the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a blocking read waits before the caller's loop gets to check its clock.
pub const READ_TIMEOUT: Duration = Duration::from_millis(20);

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One connection to the broker under test.
pub struct Client {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    rx: BytesMut,
    chunk: Vec<u8>,
}

impl Client {
    /// Opens the connection, sends CONNECT (Clean Start, no keep-alive) and waits for a
    /// successful CONNACK.
    ///
    /// # Errors
    /// I/O errors, a refused CONNACK, or a broker that says something else first.
    pub fn connect(addr: &str, client_id: &str, version: ProtocolVersion) -> io::Result<Client> {
        Client::connect_session(addr, client_id, version, false)
    }

    /// As [`Client::connect`]; `persistent` asks for a session that outlives the connection
    /// (Clean Start 0; v5: Session Expiry Interval 3600 s).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_session(
        addr: &str,
        client_id: &str,
        version: ProtocolVersion,
        persistent: bool,
    ) -> io::Result<Client> {
        let sock_addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid(format!("{addr} resolves to no address")))?;
        let stream = TcpStream::connect_timeout(&sock_addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        // Bounds every blocking write, so a broker that stops reading cannot hold a run open.
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut client = Client {
            stream,
            version,
            rx: BytesMut::with_capacity(READ_CHUNK_SIZE),
            chunk: vec![0u8; READ_CHUNK_SIZE],
        };
        let mut properties = Properties::default();
        if persistent && version == ProtocolVersion::V5 {
            properties.session_expiry_interval = Some(3600);
        }
        let connect = Connect {
            version,
            clean_start: !persistent,
            keep_alive_secs: 0,
            client_id: Utf8Str::from_string(client_id.to_owned())
                .ok_or_else(|| invalid(format!("client id {client_id:?} is not valid")))?,
            will: None,
            username: None,
            password: None,
            properties,
        };
        client.send(&Packet::Connect(Box::new(connect)))?;
        match client.expect_packet()? {
            Packet::ConnAck(ack) if ack.reason == ReasonCode::SUCCESS => {}
            Packet::ConnAck(ack) => {
                return Err(invalid(format!(
                    "CONNACK refused with code 0x{:02x}",
                    ack.reason.0
                )))
            }
            other => return Err(invalid(format!("expected CONNACK, got {other:?}"))),
        }
        client.stream.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(client)
    }

    /// Subscribes to one Topic Filter at `qos` and waits for the SUBACK.
    ///
    /// # Errors
    /// I/O errors or a SUBACK that refuses or downgrades the subscription.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> io::Result<()> {
        let sub = Subscribe {
            packet_id: PacketId::new(1).expect("1 is non-zero"),
            properties: Properties::default(),
            filters: vec![(
                Utf8Str::from_string(filter.to_owned())
                    .ok_or_else(|| invalid(format!("filter {filter:?} is not valid")))?,
                SubscriptionOptions {
                    qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            )],
        };
        self.send(&Packet::Subscribe(sub))?;
        self.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let reply = self.expect_packet()?;
        self.stream.set_read_timeout(Some(READ_TIMEOUT))?;
        match reply {
            Packet::SubAck(ack) if ack.reasons.first().map(|r| r.0) == Some(qos.as_u8()) => Ok(()),
            other => Err(invalid(format!(
                "SUBSCRIBE {filter} at {qos:?}: got {other:?}"
            ))),
        }
    }

    /// Encodes and writes one packet.
    ///
    /// # Errors
    /// I/O errors.
    pub fn send(&mut self, packet: &Packet) -> io::Result<()> {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out).map_err(|e| invalid(e.to_string()))?;
        self.stream.write_all(&out)
    }

    fn expect_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(p) = self.next_packet()? {
                return Ok(p);
            }
            if self.read_blocking()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "broker sent nothing within 5 s",
                ));
            }
        }
    }

    /// The next whole packet already buffered, if any.
    ///
    /// # Errors
    /// A malformed packet from the broker.
    pub fn next_packet(&mut self) -> io::Result<Option<Packet>> {
        decode(&mut self.rx, Some(self.version), MAX_PACKET_SIZE)
            .map_err(|e| invalid(format!("broker sent a malformed packet: {e}")))
    }

    /// `n` bytes read into `chunk`: keep them; 0 means the broker closed the connection.
    fn took(&mut self, n: usize) -> io::Result<usize> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "broker closed the connection",
            ));
        }
        self.rx.extend_from_slice(&self.chunk[..n]);
        Ok(n)
    }

    /// One read that waits at most the socket's read timeout. Returns the bytes read (0 on
    /// timeout).
    ///
    /// # Errors
    /// I/O errors, and `UnexpectedEof` when the broker closed the connection.
    pub fn read_blocking(&mut self) -> io::Result<usize> {
        match self.stream.read(&mut self.chunk) {
            Ok(n) => self.took(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// One read that never waits. Returns the bytes read (0 if none were ready).
    ///
    /// # Errors
    /// As [`Client::read_blocking`].
    pub fn read_nowait(&mut self) -> io::Result<usize> {
        match recv(
            self.stream.as_raw_fd(),
            &mut self.chunk,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => self.took(n),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

/// Appends a PUBACK/PUBREC/PUBREL/PUBCOMP for `id` to `out`.
pub fn queue_ack(out: &mut BytesMut, kind: AckKind, id: PacketId, version: ProtocolVersion) {
    let resp = PubResp::new(id, ReasonCode::SUCCESS);
    let packet = match kind {
        AckKind::PubAck => Packet::PubAck(resp),
        AckKind::PubRec => Packet::PubRec(resp),
        AckKind::PubRel => Packet::PubRel(resp),
        AckKind::PubComp => Packet::PubComp(resp),
    };
    encode(&packet, version, out).expect("a Success acknowledgement always encodes");
}

/// The four QoS acknowledgements.
// The variants are the specification's packet names; dropping the shared prefix would hide them.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy)]
pub enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

/// Parses the `--version` value.
pub fn protocol_version(level: u8) -> ProtocolVersion {
    if level == 5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }
}
