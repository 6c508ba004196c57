//! A single-threaded epoll (mio) echo server: the ceiling for one event loop.
//!
//! Reads until the socket is drained and writes every chunk straight back.
//! Bytes the kernel does not take yet are kept; the connection then stops
//! reading (back-pressure) and waits for WRITABLE, registered only meanwhile.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::net::{Listener, Stream};

const LISTENER: Token = Token(usize::MAX);
const READ_BUFFER: usize = 256 * 1024;

struct Conn {
    stream: Stream,
    /// Unread data may be waiting: set by a readable event, cleared by a short read.
    can_read: bool,
    pending: Vec<u8>,
    flushed: usize,
}

impl Conn {
    fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            can_read: true,
            pending: Vec::new(),
            flushed: 0,
        }
    }

    /// Handles one readiness event; Ok(false) once the peer has closed.
    fn on_event(&mut self, event: &Event, buf: &mut [u8]) -> io::Result<bool> {
        self.can_read |= event.is_readable() || event.is_read_closed() || event.is_error();
        if event.is_writable() {
            self.stream.flush_output()?;
            self.flush_pending()?;
        }
        while self.can_read && self.pending.is_empty() && !self.stream.has_pending_output() {
            let n = match self.stream.read(buf) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // Edge-triggered: a short read drained the socket, and new data
            // brings a new event.
            self.can_read = n == buf.len();
            let written = write_some(&mut self.stream, &buf[..n])?;
            self.pending.extend_from_slice(&buf[written..n]);
        }
        Ok(true)
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.flushed += write_some(&mut self.stream, &self.pending[self.flushed..])?;
        if self.flushed == self.pending.len() {
            self.pending.clear();
            self.flushed = 0;
        }
        Ok(())
    }

    /// READABLE always; WRITABLE only while echoed bytes wait to be sent.
    fn interest(&self) -> Interest {
        if self.pending.is_empty() && !self.stream.has_pending_output() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        }
    }
}

/// Writes as much of `data` as the socket takes now.
fn write_some(stream: &mut Stream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Connections by token, reusing the slots of closed ones.
#[derive(Default)]
struct Slots {
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Slots {
    fn insert(&mut self, conn: Conn) -> usize {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.conns[slot] = Some(conn);
        slot
    }

    fn remove(&mut self, slot: usize) -> Option<Conn> {
        let conn = self.conns.get_mut(slot)?.take();
        if conn.is_some() {
            self.free.push(slot);
        }
        conn
    }
}

/// Serves connections on `listener` forever, on the calling thread.
pub fn serve(listener: Listener) -> io::Result<()> {
    serve_with(listener, None)
}

/// `serve`, with TLS on every connection when `tls` is given.
pub fn serve_with(
    mut listener: Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut slots = Slots::default();
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
                accept_all(&listener, poll.registry(), &mut slots, tls.as_ref())?;
            } else {
                handle(event, poll.registry(), &mut slots, &mut buf)?;
            }
        }
    }
}

fn handle(event: &Event, registry: &Registry, slots: &mut Slots, buf: &mut [u8]) -> io::Result<()> {
    let slot = event.token().0;
    let Some(Some(conn)) = slots.conns.get_mut(slot) else {
        return Ok(()); // closed earlier in this batch of events
    };
    let before = conn.interest();
    match conn.on_event(event, buf) {
        Ok(true) => {
            let after = conn.interest();
            if after == before {
                return Ok(());
            }
            registry.reregister(&mut conn.stream, event.token(), after)
        }
        Ok(false) | Err(_) => {
            let mut conn = slots.remove(slot).expect("present above");
            registry.deregister(&mut conn.stream)
        }
    }
}

fn accept_all(
    listener: &Listener,
    registry: &Registry,
    slots: &mut Slots,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> io::Result<()> {
    loop {
        let stream = match listener.accept() {
            Ok(stream) => match tls {
                Some(config) => stream.accept_tls(config)?,
                None => stream,
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("echo-server: accept: {e}");
                return Ok(());
            }
        };
        let slot = slots.insert(Conn::new(stream));
        let conn = slots.conns[slot].as_mut().expect("just inserted");
        registry.register(&mut conn.stream, Token(slot), Interest::READABLE)?;
    }
}
