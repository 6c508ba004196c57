//! The load generator: `concurrency` connections on one mio thread, each in a
//! closed loop of request/response round trips of `size` bytes.
//!
//! A round trip starts when the previous one on the same connection ended and
//! ends when all `size` bytes have come back (each byte is checked). Round trips
//! ending inside the measured window (after the warm-up) are counted.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::cpu;
use crate::net::{retry_later, Endpoint, Stream};
use crate::stats::Report;

pub struct Config {
    pub endpoint: Endpoint,
    pub size: usize,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Compare the echoed bytes of every n-th round trip of each connection
    /// (1: all).
    pub verify_every: u64,
    /// TLS: the client configuration and the server name to verify.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

/// The measured window, and what completed inside it.
struct Window {
    start: Instant,
    end: Instant,
    requests: u64,
    latencies_us: Vec<u32>,
}

impl Window {
    fn record(&mut self, started: Instant, now: Instant) {
        if now >= self.start && now < self.end {
            self.requests += 1;
            let micros = now.duration_since(started).as_micros();
            self.latencies_us.push(micros.min(u32::MAX as u128) as u32);
        }
    }
}

/// What all connections share: the message, a receive buffer, the window.
struct Load {
    msg: Vec<u8>,
    buf: Vec<u8>,
    window: Window,
    verify_every: u64,
}

struct Conn {
    stream: Stream,
    sent: usize,
    received: usize,
    started: Instant,
    round_trips: u64,
    /// WRITABLE is registered only while a send is blocked, so that the peer
    /// consuming data does not wake the client for nothing.
    writable_interest: bool,
}

impl Conn {
    /// Sends and receives until neither direction can make progress.
    ///
    /// `can_read` / `can_write` come from the readiness event. With
    /// edge-triggered polling a short read or write means the socket is
    /// drained or full and the next change brings a new event, so no side is
    /// retried just to see EAGAIN.
    fn drive(
        &mut self,
        mut can_read: bool,
        mut can_write: bool,
        load: &mut Load,
    ) -> io::Result<()> {
        let Load {
            msg,
            buf,
            window,
            verify_every,
        } = load;
        loop {
            if can_write && self.stream.has_pending_output() {
                can_write = self.stream.flush_output()?;
            }
            let write_now = can_write && self.sent < msg.len();
            // The server can only echo what it got; reading while still sending
            // keeps large messages from filling both directions' buffers.
            let read_now = can_read && self.received < self.sent;
            if !write_now && !read_now {
                return Ok(());
            }
            if write_now {
                let want = msg.len() - self.sent;
                let n = retry_later(self.stream.write(&msg[self.sent..]))?.unwrap_or(0);
                can_write = n == want;
                self.sent += n;
            }
            if read_now {
                let want = msg.len() - self.received;
                let n = match retry_later(self.stream.read(&mut buf[..want]))? {
                    Some(0) => return Err(ErrorKind::UnexpectedEof.into()),
                    Some(n) => n,
                    None => 0,
                };
                let full = self.round_trips.is_multiple_of(*verify_every);
                if !echoed_ok(&buf[..n], &msg[self.received..self.received + n], full) {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        "echoed bytes differ from the sent ones",
                    ));
                }
                can_read = n == want;
                self.received += n;
            }
            if self.received == msg.len() {
                let now = Instant::now();
                window.record(self.started, now);
                self.started = now;
                self.round_trips += 1;
                self.sent = 0;
                self.received = 0;
                can_write = true;
                can_read = false; // drained: the echo's arrival brings an event
            }
        }
    }

    /// Registers WRITABLE exactly while part of the request is still unsent.
    fn update_interest(
        &mut self,
        registry: &Registry,
        token: Token,
        size: usize,
    ) -> io::Result<()> {
        let blocked = self.sent < size || self.stream.has_pending_output();
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

/// Whether `got` equals `expected`: every byte when `full`, else only the
/// first and last `SPOT` bytes (enough to catch lost, repeated or misplaced
/// chunks, since the message's bytes vary with the offset).
fn echoed_ok(got: &[u8], expected: &[u8], full: bool) -> bool {
    const SPOT: usize = 32;
    if full || got.len() <= 2 * SPOT {
        return got == expected;
    }
    let tail = got.len() - SPOT;
    got[..SPOT] == expected[..SPOT] && got[tail..] == expected[tail..]
}

/// Errors and hang-ups count as readable: the read then reports them.
fn readable(event: &Event) -> bool {
    event.is_readable() || event.is_read_closed() || event.is_error()
}

/// A message whose bytes vary, so a misplaced chunk does not compare equal.
fn message(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

pub fn run(config: &Config) -> io::Result<Report> {
    run_reporting(config).map(|(report, _)| report)
}

/// `run`, and the negotiated TLS cipher suite when `config.tls` is set.
pub fn run_reporting(config: &Config) -> io::Result<(Report, Option<String>)> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(config.concurrency);
    for i in 0..config.concurrency {
        let mut stream = match &config.tls {
            Some((tls, name)) => Stream::connect_tls(&config.endpoint, tls, name)?,
            None => Stream::connect(&config.endpoint)?,
        };
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        conns.push(Conn {
            stream,
            sent: 0,
            received: 0,
            started: Instant::now(),
            round_trips: 0,
            writable_interest: false,
        });
    }
    let begin = Instant::now();
    let mut load = Load {
        msg: message(config.size),
        buf: vec![0u8; config.size],
        window: Window {
            start: begin + config.warmup,
            end: begin + config.warmup + config.duration,
            requests: 0,
            latencies_us: Vec::with_capacity(1 << 20),
        },
        verify_every: config.verify_every.max(1),
    };
    let (start, end) = (load.window.start, load.window.end);
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.started = begin;
        conn.drive(false, true, &mut load)?;
        conn.update_interest(poll.registry(), Token(i), config.size)?;
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
            conn.drive(readable(event), event.is_writable(), &mut load)?;
            conn.update_interest(poll.registry(), event.token(), config.size)?;
        }
    }
    let cpu_seconds = cpu::process_seconds() - cpu_at_start.unwrap_or_else(cpu::process_seconds);
    let cipher = conns.first().and_then(|conn| conn.stream.cipher_suite());
    let report = Report {
        size: config.size,
        concurrency: config.concurrency,
        requests: load.window.requests,
        seconds: config.duration.as_secs_f64(),
        cpu_seconds,
        latencies_us: load.window.latencies_us,
    };
    Ok((report, cipher))
}
