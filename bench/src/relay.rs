//! `relay`: a bare TCP relay that speaks just enough MQTT to be a ceiling for the broker.
//!
//! ```text
//!   publisher ──PUBLISH frame──▶ relay ──same bytes──▶ every subscriber whose filter matches
//!             ◀─PUBACK / PUBREC, PUBCOMP─┘            ◀─PUBACK / PUBREC─┘ (PUBREL answered)
//! ```
//!
//! No sessions, no retained messages, no Packet Identifier rewriting, no wildcards beyond `#`
//! and a trailing `/#`: it measures what the machine can forward with the same load generator,
//! not a broker. One thread per connection; each connection's writes go through a mutex so
//! acknowledgements and forwarded frames never interleave mid-frame.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;

use bytes::BytesMut;
use tachyon_codec::{
    decode, peek_connect_level, peek_fixed_header, Packet, PacketType, ProtocolVersion,
};

#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// Address to listen on, e.g. 127.0.0.1:21885.
    #[arg(long, default_value = "127.0.0.1:21885")]
    pub listen: String,
}

const READ_CHUNK_SIZE: usize = 256 << 10;
const MAX_PACKET_SIZE: usize = 16 << 20;

/// Whether Topic Name `topic` matches Topic Filter `filter` in the relay's reduced sense: equal,
/// `#`, or `prefix/#` matching `prefix` and everything below it.
pub fn filter_matches(filter: &[u8], topic: &[u8]) -> bool {
    if filter == b"#" {
        return true;
    }
    if let Some(prefix) = filter.strip_suffix(b"/#") {
        return topic == prefix
            || (topic.len() > prefix.len()
                && topic.starts_with(prefix)
                && topic[prefix.len()] == b'/');
    }
    filter == topic
}

struct Subscription {
    filter: Vec<u8>,
    conn: Arc<Mutex<TcpStream>>,
    conn_id: u64,
}

#[derive(Default)]
struct Routes {
    list: RwLock<Vec<Arc<Subscription>>>,
    /// Bumped on every change so readers refresh their snapshot only then.
    generation: AtomicU64,
}

/// Runs the relay until the process is stopped.
///
/// # Errors
/// The listen address cannot be bound.
pub fn serve(args: &RelayArgs) -> Result<(), String> {
    let listener = TcpListener::bind(&args.listen).map_err(|e| format!("{}: {e}", args.listen))?;
    eprintln!("relay listening on {}", args.listen);
    let routes = Arc::new(Routes::default());
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        next_id += 1;
        let id = next_id;
        let routes = Arc::clone(&routes);
        thread::spawn(move || {
            let _ = connection(stream, id, &routes);
            let mut list = routes
                .list
                .write()
                .expect("no thread panics holding the lock");
            list.retain(|s| s.conn_id != id);
            routes.generation.fetch_add(1, Ordering::Release);
        });
    }
    Ok(())
}

fn connection(stream: TcpStream, id: u64, routes: &Routes) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    let mut reader = stream;
    let mut rx = BytesMut::with_capacity(READ_CHUNK_SIZE);
    let mut chunk = vec![0u8; READ_CHUNK_SIZE];
    let mut version = ProtocolVersion::V311;
    let mut reply = Vec::with_capacity(4096);
    let mut snapshot: Vec<Arc<Subscription>> = Vec::new();
    let mut snapshot_generation = u64::MAX;
    // Frames to forward in this read, per subscription index in `snapshot`.
    let mut outbound: Vec<Vec<u8>> = Vec::new();
    let mut closing = false;
    while !closing {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        rx.extend_from_slice(&chunk[..n]);
        let generation = routes.generation.load(Ordering::Acquire);
        if generation != snapshot_generation {
            snapshot = routes
                .list
                .read()
                .expect("no panics under the lock")
                .clone();
            snapshot_generation = generation;
        }
        outbound.resize_with(snapshot.len(), Vec::new);
        while let Some(header) = peek_fixed_header(&rx).map_err(io::Error::other)? {
            let total = header.total_len();
            if total > MAX_PACKET_SIZE {
                return Err(io::Error::other("packet too large"));
            }
            if rx.len() < total {
                break;
            }
            let frame = rx.split_to(total);
            let body = &frame[header.header_len..];
            match header.packet_type() {
                t if t == PacketType::Publish as u8 => {
                    let qos = (header.first_byte >> 1) & 3;
                    let Some(topic_len) = body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
                    else {
                        return Err(io::Error::other("short PUBLISH"));
                    };
                    let topic_end = 2 + topic_len as usize;
                    let topic = body.get(2..topic_end).ok_or(io::ErrorKind::InvalidData)?;
                    for (i, sub) in snapshot.iter().enumerate() {
                        if filter_matches(&sub.filter, topic) {
                            outbound[i].extend_from_slice(&frame);
                        }
                    }
                    if qos > 0 {
                        let pid = body
                            .get(topic_end..topic_end + 2)
                            .ok_or(io::ErrorKind::InvalidData)?;
                        // PUBACK for QoS 1, PUBREC for QoS 2 (short forms, Success).
                        let kind = if qos == 1 { 0x40 } else { 0x50 };
                        reply.extend_from_slice(&[kind, 2, pid[0], pid[1]]);
                    }
                }
                t if t == PacketType::PubRec as u8 && body.len() >= 2 => {
                    reply.extend_from_slice(&[0x62, 2, body[0], body[1]]);
                }
                t if t == PacketType::PubRel as u8 && body.len() >= 2 => {
                    reply.extend_from_slice(&[0x70, 2, body[0], body[1]]);
                }
                t if t == PacketType::PingReq as u8 => reply.extend_from_slice(&[0xD0, 0]),
                t if t == PacketType::Disconnect as u8 => {
                    // Forward what came before it in this read, then close.
                    closing = true;
                    break;
                }
                t if t == PacketType::Connect as u8 => {
                    if peek_connect_level(&frame) == Some(5) {
                        version = ProtocolVersion::V5;
                        reply.extend_from_slice(&[0x20, 3, 0, 0, 0]);
                    } else {
                        reply.extend_from_slice(&[0x20, 2, 0, 0]);
                    }
                }
                t if t == PacketType::Subscribe as u8 => {
                    let mut buf = frame;
                    let Ok(Some(Packet::Subscribe(sub))) =
                        decode(&mut buf, Some(version), MAX_PACKET_SIZE)
                    else {
                        return Err(io::Error::other("malformed SUBSCRIBE"));
                    };
                    let mut list = routes.list.write().expect("no panics under the lock");
                    for (filter, _) in &sub.filters {
                        list.push(Arc::new(Subscription {
                            filter: filter.as_bytes().to_vec(),
                            conn: Arc::clone(&writer),
                            conn_id: id,
                        }));
                    }
                    routes.generation.fetch_add(1, Ordering::Release);
                    drop(list);
                    let pid = sub.packet_id.get().to_be_bytes();
                    let props = usize::from(version == ProtocolVersion::V5);
                    let remaining = 2 + props + sub.filters.len();
                    reply.extend_from_slice(&[0x90, remaining as u8, pid[0], pid[1]]);
                    if props == 1 {
                        reply.push(0);
                    }
                    reply.extend(sub.filters.iter().map(|(_, o)| o.qos.as_u8()));
                }
                // PUBACK and PUBCOMP from subscribers end flows the relay does not track.
                _ => {}
            }
        }
        for (i, frames) in outbound.iter_mut().enumerate() {
            if !frames.is_empty() {
                let mut w = snapshot[i].conn.lock().expect("no panics under the lock");
                // A subscriber that went away must not stop the publisher.
                let _ = w.write_all(frames);
                frames.clear();
            }
        }
        if !reply.is_empty() {
            writer
                .lock()
                .expect("no panics under the lock")
                .write_all(&reply)?;
            reply.clear();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_filter_matches_only_equal_topic() {
        assert!(filter_matches(b"a/b", b"a/b"));
        assert!(!filter_matches(b"a/b", b"a/bc"));
        assert!(!filter_matches(b"a/b", b"a"));
    }

    #[test]
    fn hash_filter_matches_everything() {
        assert!(filter_matches(b"#", b"a/b"));
        assert!(filter_matches(b"#", b"x"));
    }

    #[test]
    fn trailing_hash_matches_parent_and_below() {
        assert!(filter_matches(b"a/#", b"a"));
        assert!(filter_matches(b"a/#", b"a/b/c"));
        assert!(!filter_matches(b"a/#", b"ab"));
        assert!(!filter_matches(b"a/#", b"b/a"));
    }
}
