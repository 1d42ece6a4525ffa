//! A small HTTP/1.1 server for the admin API: one request per connection
//! (`Connection: close`), a thread per connection up to `MAX_CONNECTIONS`, bounded header and
//! body sizes, and one deadline for reading the whole request (a client that trickles bytes
//! cannot hold a connection slot for longer). Enough for `curl`, Prometheus and `tachyon ctl` on a
//! loopback listener; not a general web server.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;
const MAX_CONNECTIONS: usize = 64;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Percent-decoded path, without the query.
    pub path: String,
    /// Percent-decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub extra_headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            extra_headers: Vec::new(),
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body: body.into_bytes(),
            extra_headers: Vec::new(),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Decodes `%XX` escapes (and `+` as space in queries). Invalid escapes stay as they are.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one request from `r`. `Err` carries the status and the reason to answer with.
pub fn read_request(r: &mut impl BufRead) -> Result<Request, (u16, String)> {
    let mut head = Vec::new();
    loop {
        // At most the head's bound per line: a line without an end cannot grow without limit.
        let n = r
            .by_ref()
            .take((MAX_HEAD + 1 - head.len().min(MAX_HEAD)) as u64)
            .read_until(b'\n', &mut head)
            .map_err(|e| (400, format!("reading the request: {e}")))?;
        if n == 0 {
            return Err((400, "connection closed before the request ended".into()));
        }
        if head.len() > MAX_HEAD {
            return Err((431, format!("request head over {MAX_HEAD} bytes")));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let head = String::from_utf8(head).map_err(|_| (400, "request head is not UTF-8".into()))?;
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err((400, format!("malformed request line {first:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err((400, format!("unsupported protocol {version:?}")));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err((400, format!("malformed header line {line:?}")));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    let mut req = Request {
        method: method.to_owned(),
        path: percent_decode(raw_path, false),
        query,
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err((
            400,
            "chunked bodies are not supported; send Content-Length".into(),
        ));
    }
    let len: usize = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| (400, format!("Content-Length {v:?} is not a number")))?,
    };
    if len > MAX_BODY {
        return Err((413, format!("body over {MAX_BODY} bytes")));
    }
    req.body = vec![0; len];
    r.read_exact(&mut req.body)
        .map_err(|e| (400, format!("reading the body: {e}")))?;
    Ok(req)
}

pub fn write_response(w: &mut impl Write, resp: &Response) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (k, v) in &resp.extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(&resp.body)?;
    w.flush()
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Accepts connections on `listener` forever, each answered on its own thread.
pub fn serve(listener: TcpListener, handler: Handler) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(stream) = conn else {
            // Out of descriptors, or the like: do not spin on the error.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let mut s = stream;
            let _ = write_response(&mut s, &Response::error(503, "too many admin connections"));
            continue;
        }
        let handler = handler.clone();
        let active2 = active.clone();
        let spawned = std::thread::Builder::new()
            .name("tachyon-admin".into())
            .spawn(move || {
                answer(stream, &handler);
                active2.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn answer(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let resp = match read_raw(&mut stream, Instant::now() + IO_TIMEOUT)
        .and_then(|raw| read_request(&mut &raw[..]))
    {
        Ok(req) => handler(&req),
        Err((status, why)) => Response::error(status, &why),
    };
    let _ = write_response(&mut stream, &resp);
}

/// Reads one request's bytes (head and `Content-Length` body) by `deadline`, within the size
/// bounds.
fn read_raw(r: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, (u16, String)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut need: Option<usize> = None;
    loop {
        if let Some(n) = need {
            if buf.len() >= n {
                return Ok(buf);
            }
        } else if let Some(end) = head_end(&buf) {
            let len = content_length(&buf[..end])?;
            if len > MAX_BODY {
                return Err((413, format!("body over {MAX_BODY} bytes")));
            }
            need = Some(end + len);
            continue;
        } else if buf.len() > MAX_HEAD {
            return Err((431, format!("request head over {MAX_HEAD} bytes")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((400, "request not complete in time".into()));
        }
        let _ = r.set_read_timeout(Some(left));
        match r.read(&mut chunk) {
            Ok(0) => return Err((400, "connection closed before the request ended".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A timed-out read: the deadline check above answers.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err((400, format!("reading the request: {e}"))),
        }
    }
}

/// Where the head ends (after its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn content_length(head: &[u8]) -> Result<usize, (u16, String)> {
    let text = String::from_utf8_lossy(head);
    for line in text.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                return v.trim().parse().map_err(|_| {
                    (
                        400,
                        format!("Content-Length {:?} is not a number", v.trim()),
                    )
                });
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_with_query_headers_and_body() {
        let raw = b"POST /api/v1/retained/a%2Fb%23?filter=%24SYS%2F%23&limit=5&x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 3\r\n\r\nabcEXTRA";
        let req = read_request(&mut &raw[..]).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/api/v1/retained/a/b#");
        assert_eq!(req.query("filter"), Some("$SYS/#"));
        assert_eq!(req.query("limit"), Some("5"));
        assert_eq!(req.query("x"), Some(""));
        assert_eq!(req.header("authorization"), Some("Bearer t"));
        assert_eq!(req.body, b"abc");
    }

    #[test]
    fn refuses_what_it_cannot_handle_with_a_status() {
        let cases: [(&[u8], u16); 5] = [
            (b"GET / HTTP/2\r\n\r\n", 400),
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost", 400),
        ];
        for (raw, status) in cases {
            let e = read_request(&mut &raw[..]).unwrap_err();
            assert_eq!(e.0, status, "{:?}: {}", String::from_utf8_lossy(raw), e.1);
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(read_request(&mut big.as_bytes()).unwrap_err().0, 431);
    }

    #[test]
    fn a_request_is_read_whole_by_one_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            c.write_all(b"cd").unwrap();
            // Then a second request that trickles and never ends.
            let mut slow = TcpStream::connect(addr).unwrap();
            for _ in 0..100 {
                if slow.write_all(b"G").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (mut s, _) = l.accept().unwrap();
        let raw = read_raw(&mut s, Instant::now() + Duration::from_secs(5)).unwrap();
        let req = read_request(&mut &raw[..]).unwrap();
        assert_eq!(req.body, b"abcd");
        let (mut s, _) = l.accept().unwrap();
        let e = read_raw(&mut s, Instant::now() + Duration::from_millis(150)).unwrap_err();
        assert_eq!(e.0, 400, "{}", e.1);
        assert!(
            e.1.contains("not complete"),
            "the deadline, not the close: {}",
            e.1
        );
        drop(s);
        client.join().unwrap();
        // A head line that never ends is cut at the bound.
        let endless = vec![b'a'; MAX_HEAD * 4];
        assert_eq!(read_request(&mut &endless[..]).unwrap_err().0, 431);
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%", false), "a/b%zz%");
        assert_eq!(percent_decode("a+b%2B", true), "a b+");
        assert_eq!(percent_decode("a+b", false), "a+b");
    }
}
