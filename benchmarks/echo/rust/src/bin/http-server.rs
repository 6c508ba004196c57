//! Pure-Rust HTTP/1.1 keep-alive responder, one thread: the ceiling of the
//! suite's HTTP workloads. `http-server [--addr HOST:PORT]` prints
//! `READY <address>` once listening (port 0 picks a free port).
//!
//! It answers every request head (up to the blank line) with the same bytes as
//! benchmarks/http/server.py's RESPONSE, in order, pipelined ones included. It
//! reads no request bodies: the benchmark's clients send `GET`s. Like
//! echo-server it reads until the socket is drained, writes the responses
//! straight away, keeps what the socket does not take and stops reading that
//! connection until it has been flushed.

use std::io::{self, ErrorKind, Read, Write};

use mio::{Events, Interest, Poll, Registry, Token};

use echo_bench::args::Args;
use echo_bench::net::{Endpoint, Listener, Stream};

const USAGE: &str = "usage: http-server [--addr HOST:PORT (default 127.0.0.1:0)]";
const LISTENER: Token = Token(usize::MAX);
const READ_BUFFER: usize = 64 * 1024;
const BODY: &[u8] = b"Hello, World! Hello, World! Hello, World! Hello, World! \
Hello, World! Hello, World! Hello, World! Hello, World! ";

fn response() -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: keep-alive\r\n\r\n",
        BODY.len()
    )
    .into_bytes();
    out.extend_from_slice(BODY);
    out
}

struct Conn {
    stream: Stream,
    can_read: bool,
    /// Bytes of an incomplete request head.
    partial: Vec<u8>,
    pending: Vec<u8>,
    flushed: usize,
}

impl Conn {
    /// Ok(false) once the peer has closed.
    fn on_event(&mut self, readable: bool, buf: &mut [u8], response: &[u8]) -> io::Result<bool> {
        self.can_read |= readable;
        self.flush()?;
        while self.can_read && self.pending.is_empty() {
            let n = match self.stream.read(buf) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.can_read = n == buf.len();
            self.partial.extend_from_slice(&buf[..n]);
            let mut consumed = 0;
            while let Some(end) = find_blank_line(&self.partial[consumed..]) {
                consumed += end;
                self.pending.extend_from_slice(response);
            }
            self.partial.drain(..consumed);
            self.flush()?;
        }
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.flushed < self.pending.len() {
            match self.stream.write(&self.pending[self.flushed..]) {
                Ok(n) => self.flushed += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pending.clear();
        self.flushed = 0;
        Ok(())
    }

    fn interest(&self) -> Interest {
        if self.pending.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        }
    }
}

/// The length of the first request head in `data` (through "\r\n\r\n").
fn find_blank_line(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

fn serve(mut listener: Listener) -> io::Result<()> {
    let response = response();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, poll.registry(), &mut conns)?;
                continue;
            }
            let slot = event.token().0;
            let Some(Some(conn)) = conns.get_mut(slot) else {
                continue;
            };
            let before = conn.interest();
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            match conn.on_event(readable, &mut buf, &response) {
                Ok(true) if conn.interest() != before => {
                    let interest = conn.interest();
                    poll.registry()
                        .reregister(&mut conn.stream, event.token(), interest)?;
                }
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    let mut conn = conns[slot].take().expect("present above");
                    poll.registry().deregister(&mut conn.stream)?;
                }
            }
        }
    }
}

fn accept_all(
    listener: &Listener,
    registry: &Registry,
    conns: &mut Vec<Option<Conn>>,
) -> io::Result<()> {
    loop {
        let stream = match listener.accept() {
            Ok(stream) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("http-server: accept: {e}");
                return Ok(());
            }
        };
        let slot = conns.iter().position(Option::is_none).unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        let conn = conns[slot].insert(Conn {
            stream,
            can_read: true,
            partial: Vec::new(),
            pending: Vec::new(),
            flushed: 0,
        });
        registry.register(&mut conn.stream, Token(slot), Interest::READABLE)?;
    }
}

fn main() {
    if let Err(message) = run() {
        eprintln!("http-server: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse(std::env::args().skip(1), &["addr"], USAGE)?;
    let endpoint = Endpoint::from_args(&args, Some("127.0.0.1:0"))?;
    let listener = Listener::bind(&endpoint).map_err(|e| format!("bind {endpoint}: {e}"))?;
    let bound = listener
        .local_endpoint(&endpoint)
        .map_err(|e| e.to_string())?;
    println!("READY {bound}");
    io::stdout().flush().map_err(|e| e.to_string())?;
    serve(listener).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_counted() {
        let data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\nGET /";
        let first = find_blank_line(data).unwrap();
        assert_eq!(&data[first - 4..first], b"\r\n\r\n");
        let second = first + find_blank_line(&data[first..]).unwrap();
        assert_eq!(&data[second..], b"GET /");
        assert_eq!(find_blank_line(&data[second..]), None);
    }

    #[test]
    fn response_has_content_length() {
        let text = String::from_utf8(response()).unwrap();
        assert!(text.contains("Content-Length: 112\r\n"));
        assert!(text.ends_with("World! "));
    }
}
