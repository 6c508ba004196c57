//! HTTP/1.1 keep-alive load generator: `concurrency` connections on one mio
//! thread, each a closed loop of `GET` requests without pipelining (send one
//! request, read its whole response, send the next).
//!
//! Responses must be `200` with a `Content-Length` body (no chunked encoding),
//! the same body as the first response's, and must keep the connection open;
//! anything else, or bytes beyond the response, fails the run. A request's latency runs from the end of the
//! previous response on the same connection to the end of its own; requests
//! ending inside the measured window (after the warm-up) are counted.
//!
//! A module of the `http-client` binary (included with `#[path]`), built on
//! the `echo_bench` library.

use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token};

use echo_bench::cpu;
use echo_bench::net::{retry_later, Endpoint, Stream};
use echo_bench::stats::Report;

pub struct Config {
    pub endpoint: Endpoint,
    pub path: String,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

/// The longest response head accepted (status line and headers).
const MAX_HEAD: usize = 16 * 1024;
const READ_CHUNK: usize = 64 * 1024;

fn invalid(message: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message)
}

/// A complete response head: where the body starts and how long it is.
#[derive(Debug, PartialEq)]
struct Head {
    body_start: usize,
    content_length: usize,
}

/// Parses the head at the start of `data`: Ok(None) while it is incomplete.
fn parse_head(data: &[u8]) -> io::Result<Option<Head>> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        if data.len() > MAX_HEAD {
            return Err(invalid(format!("response head over {MAX_HEAD} bytes")));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&data[..end])
        .map_err(|_| invalid("response head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut words = status.split(' ');
    let (version, code) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if version != "HTTP/1.1" || code != "200" {
        return Err(invalid(format!("unexpected status line {status:?}")));
    }
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("malformed header {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid(format!("unsupported Transfer-Encoding {value:?}")));
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            return Err(invalid(
                "the server closes the connection (no keep-alive)".into(),
            ));
        }
    }
    let content_length =
        content_length.ok_or_else(|| invalid("response without Content-Length".into()))?;
    Ok(Some(Head {
        body_start: end + 4,
        content_length,
    }))
}

/// The measured window, and what completed inside it.
struct Window {
    start: Instant,
    end: Instant,
    requests: u64,
    latencies_us: Vec<u32>,
    body_bytes: usize,
    /// The first response's body: every later one must be the same.
    expected_body: Option<Vec<u8>>,
}

impl Window {
    fn record(&mut self, started: Instant, now: Instant, body: usize) {
        if now >= self.start && now < self.end {
            self.requests += 1;
            self.body_bytes = body;
            let micros = now.duration_since(started).as_micros();
            self.latencies_us.push(micros.min(u32::MAX as u128) as u32);
        }
    }
}

struct Conn {
    stream: Stream,
    sent: usize,
    /// Bytes of the current response received so far.
    response: Vec<u8>,
    head: Option<Head>,
    started: Instant,
    /// WRITABLE is registered only while a request is partly sent.
    writable_interest: bool,
}

impl Conn {
    /// Sends and receives until neither direction can make progress.
    fn drive(
        &mut self,
        mut can_read: bool,
        mut can_write: bool,
        request: &[u8],
        scratch: &mut [u8],
        window: &mut Window,
    ) -> io::Result<()> {
        loop {
            let write_now = can_write && self.sent < request.len();
            let read_now = can_read && self.sent == request.len();
            if !write_now && !read_now {
                return Ok(());
            }
            if write_now {
                let want = request.len() - self.sent;
                let n = retry_later(self.stream.write(&request[self.sent..]))?.unwrap_or(0);
                can_write = n == want;
                self.sent += n;
                continue;
            }
            let n = match retry_later(self.stream.read(scratch))? {
                Some(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Some(n) => n,
                None => 0,
            };
            // Edge-triggered: a short read drained the socket.
            can_read = n == scratch.len();
            self.response.extend_from_slice(&scratch[..n]);
            if self.head.is_none() {
                self.head = parse_head(&self.response)?;
            }
            let Some(head) = &self.head else { continue };
            let total = head.body_start + head.content_length;
            if self.response.len() > total {
                return Err(invalid(format!(
                    "{} bytes after the response (none requested)",
                    self.response.len() - total
                )));
            }
            if self.response.len() == total {
                let body = &self.response[head.body_start..];
                match &window.expected_body {
                    None => window.expected_body = Some(body.to_vec()),
                    Some(expected) if expected.as_slice() != body => {
                        return Err(invalid("a response body differs from the first one".into()));
                    }
                    Some(_) => {}
                }
                let now = Instant::now();
                window.record(self.started, now, head.content_length);
                self.started = now;
                self.sent = 0;
                self.response.clear();
                self.head = None;
                can_write = true;
                can_read = false; // drained: the next response brings an event
            }
        }
    }

    /// Registers WRITABLE exactly while part of the request is still unsent.
    fn update_interest(
        &mut self,
        registry: &Registry,
        token: Token,
        request_len: usize,
    ) -> io::Result<()> {
        let blocked = self.sent < request_len;
        if blocked != self.writable_interest {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.stream, token, interest)?;
            self.writable_interest = blocked;
        }
        Ok(())
    }
}

/// Errors and hang-ups count as readable: the read then reports them.
fn readable(event: &Event) -> bool {
    event.is_readable() || event.is_read_closed() || event.is_error()
}

fn request(config: &Config) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: http-client\r\n\r\n",
        config.path, config.endpoint
    )
    .into_bytes()
}

pub fn run(config: &Config) -> io::Result<Report> {
    let request = request(config);
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(config.concurrency);
    for i in 0..config.concurrency {
        let mut stream = Stream::connect(&config.endpoint)?;
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        conns.push(Conn {
            stream,
            sent: 0,
            response: Vec::with_capacity(4096),
            head: None,
            started: Instant::now(),
            writable_interest: false,
        });
    }
    let begin = Instant::now();
    let mut window = Window {
        start: begin + config.warmup,
        end: begin + config.warmup + config.duration,
        requests: 0,
        latencies_us: Vec::with_capacity(1 << 20),
        body_bytes: 0,
        expected_body: None,
    };
    let mut scratch = vec![0u8; READ_CHUNK];
    let (start, end) = (window.start, window.end);
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.started = begin;
        conn.drive(false, true, &request, &mut scratch, &mut window)?;
        conn.update_interest(poll.registry(), Token(i), request.len())?;
    }
    let mut events = Events::with_capacity(config.concurrency.max(16));
    let mut cpu_at_start = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if cpu_at_start.is_none() && now >= start {
            cpu_at_start = Some(cpu::process_seconds());
        }
        let deadline = if now < start { start } else { end };
        match poll.poll(&mut events, Some(deadline - now)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            result => result?,
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            conn.drive(
                readable(event),
                event.is_writable(),
                &request,
                &mut scratch,
                &mut window,
            )?;
            conn.update_interest(poll.registry(), event.token(), request.len())?;
        }
    }
    let cpu_seconds = cpu::process_seconds() - cpu_at_start.unwrap_or_else(cpu::process_seconds);
    Ok(Report {
        size: window.body_bytes,
        concurrency: config.concurrency,
        requests: window.requests,
        seconds: config.duration.as_secs_f64(),
        cpu_seconds,
        latencies_us: window.latencies_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_complete_and_incomplete() {
        let response =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";
        let head = parse_head(response).unwrap().unwrap();
        assert_eq!(head.content_length, 5);
        assert_eq!(&response[head.body_start..], b"hello");
        assert_eq!(parse_head(&response[..20]).unwrap(), None);
    }

    #[test]
    fn head_rejections() {
        for bad in [
            &b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(
                parse_head(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
