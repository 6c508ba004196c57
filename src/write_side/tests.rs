//! Unit tests of the write side without a Python transport: the buffer's
//! chunk accounting, sends through a fake `Sink`, the marks, and each
//! transport's admission and lost-count rules.

use std::cell::RefCell;

use pyo3::types::PyBytes;

use super::*;
use crate::pipe::WritePipeCore;
use crate::stream::StreamCore;

const SOCKET: WriteRules = <StreamCore as WriteEnd>::RULES;
const PIPE: WriteRules = <WritePipeCore as WriteEnd>::RULES;

/// What a fake fd takes: per call, at most `room[0]` bytes (`None`:
/// would block; no entry left: everything), or an error if `fail`.
#[derive(Default)]
struct Fake {
    room: Vec<Option<usize>>,
    fail: bool,
    taken: Vec<u8>,
    calls: Vec<&'static str>,
}

#[derive(Clone, Copy)]
struct FakeSink<'a>(&'a RefCell<Fake>);

impl FakeSink<'_> {
    fn take(self, call: &'static str, parts: &[&[u8]]) -> io::Result<Option<usize>> {
        let mut fake = self.0.borrow_mut();
        fake.calls.push(call);
        if fake.fail {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        let room = if fake.room.is_empty() {
            Some(usize::MAX)
        } else {
            fake.room.remove(0)
        };
        let Some(mut room) = room else {
            return Ok(None);
        };
        let mut n = 0;
        for part in parts {
            let k = room.min(part.len());
            fake.taken.extend_from_slice(&part[..k]);
            room -= k;
            n += k;
        }
        Ok(Some(n))
    }
}

impl Sink for FakeSink<'_> {
    fn send(self, data: &[u8]) -> io::Result<Option<usize>> {
        self.take("send", &[data])
    }

    fn send_vectored(self, bufs: &[crate::sys::IoVec]) -> io::Result<Option<usize>> {
        let parts: Vec<&[u8]> = bufs
            .iter()
            // SAFETY: the iovecs point into buffers the caller holds.
            .map(|v| unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) })
            .collect();
        self.take("send_vectored", &parts)
    }
}

fn with_py(f: impl FnOnce(Python<'_>)) {
    Python::initialize();
    Python::attach(f);
}

fn fake(room: &[Option<usize>]) -> RefCell<Fake> {
    RefCell::new(Fake {
        room: room.to_vec(),
        ..Fake::default()
    })
}

#[test]
fn marks_are_crossed_once_each_way() {
    let mut flow = FlowControl::default();
    assert_eq!(flow.limits(), (16 * 1024, 64 * 1024));
    assert!(!flow.should_pause(64 * 1024));
    assert!(flow.should_pause(64 * 1024 + 1));
    assert!(flow.is_paused());
    assert!(!flow.should_pause(100 * 1024), "paused once");
    assert!(!flow.should_resume(16 * 1024 + 1));
    assert!(flow.should_resume(16 * 1024));
    assert!(!flow.is_paused());
    assert!(!flow.should_resume(0), "resumed once");
    flow.set_limits(10, 2);
    assert!(flow.should_pause(11));
    assert!(!flow.should_resume(3));
    assert!(flow.should_resume(2));
}

#[test]
fn buffer_accounts_for_chunks_and_partial_sends() {
    with_py(|py| {
        let big = PyBytes::new(py, &[7u8; 10_000]);
        let mut out = WriteBuffer::default();
        out.push(b"ab", None);
        out.push(b"", None);
        out.push(b"cd", None); // coalesced with "ab"
        out.push(&big.as_bytes()[..5000], Some(&big)); // referenced
        out.push(b"ef", None);
        assert_eq!(out.len(), 5006);
        let sink = FakeSink(&fake(&[Some(3), Some(4999), None]));
        let sent = out.send_with(py, |iov| {
            assert_eq!(iov.len(), 3);
            sink.send_vectored(iov)
        });
        assert_eq!(sent.unwrap(), Some(3));
        assert_eq!(out.len(), 5003);
        assert_eq!(
            out.send_with(py, |iov| sink.send_vectored(iov)).unwrap(),
            Some(4999)
        );
        assert_eq!(out.len(), 4);
        assert_eq!(
            out.send_with(py, |iov| sink.send_vectored(iov)).unwrap(),
            None
        );
        assert_eq!(out.len(), 4);
        assert_eq!(
            out.send_with(py, |iov| sink.send_vectored(iov)).unwrap(),
            Some(4)
        );
        assert!(out.is_empty());
        let taken = &sink.0.borrow().taken;
        assert_eq!(&taken[..4], b"abcd");
        assert!(taken[4..5004].iter().all(|&b| b == 7));
        assert_eq!(&taken[5004..], b"ef");
    });
}

#[test]
fn a_write_goes_out_at_once_and_only_the_rest_is_buffered() {
    with_py(|py| {
        let fake = fake(&[Some(3)]);
        let sink = FakeSink(&fake);
        let mut side = WriteSide::default();
        let step = side.offer(&SOCKET, sink, &[(b"hello", None)], false);
        assert!(matches!(
            step,
            Step::Buffered {
                sent: 3,
                watch: true,
                pause: false
            }
        ));
        assert_eq!(side.out.len(), 2);
        // Something is buffered: no syscall, appended.
        let step = side.offer(&SOCKET, sink, &[(b"abc", None)], false);
        assert!(matches!(
            step,
            Step::Buffered {
                sent: 0,
                watch: false,
                pause: false
            }
        ));
        assert_eq!(fake.borrow().calls, ["send"]);
        assert_eq!(side.send_buffered(py, sink).unwrap(), Some(5));
        assert!(side.out.is_empty());
        assert_eq!(fake.borrow().taken, b"helloabc");
        let step = side.offer(&SOCKET, sink, &[(b"xy", None)], false);
        assert!(matches!(step, Step::Sent(2)));
    });
}

#[test]
fn writelines_is_one_vectored_send_split_where_it_stopped() {
    with_py(|py| {
        let fake = fake(&[Some(4)]);
        let sink = FakeSink(&fake);
        let mut side = WriteSide::default();
        let parts: [Pending<'_, '_>; 3] = [(b"abc", None), (b"def", None), (b"gh", None)];
        let step = side.offer(&PIPE, sink, &parts, false);
        assert!(matches!(step, Step::Buffered { sent: 4, .. }));
        assert_eq!(side.out.len(), 4);
        assert_eq!(fake.borrow().calls, ["send_vectored"]);
        side.send_buffered(py, sink).unwrap();
        assert_eq!(fake.borrow().taken, b"abcdefgh");
    });
}

#[test]
fn the_buffer_crossing_the_marks_pauses_then_resumes() {
    with_py(|py| {
        let fake = fake(&[None, Some(5), Some(5)]);
        let sink = FakeSink(&fake);
        let mut side = WriteSide::default();
        side.flow.set_limits(8, 2);
        let step = side.offer(&PIPE, sink, &[(b"0123456789", None)], false);
        assert!(matches!(
            step,
            Step::Buffered {
                sent: 0,
                watch: true,
                pause: true
            }
        ));
        let step = side.offer(&PIPE, sink, &[(b"ab", None)], false);
        assert!(matches!(step, Step::Buffered { pause: false, .. }));
        assert_eq!(side.send_buffered(py, sink).unwrap(), Some(5));
        assert!(!side.flow.should_resume(side.out.len()), "7 left");
        assert_eq!(side.send_buffered(py, sink).unwrap(), Some(5));
        assert!(side.flow.should_resume(side.out.len()), "2 left");
    });
}

#[test]
fn a_failed_send_drops_the_buffer() {
    with_py(|py| {
        let fake = fake(&[None]);
        let sink = FakeSink(&fake);
        let mut side = WriteSide::default();
        side.offer(&SOCKET, sink, &[(b"abc", None)], false);
        assert_eq!(side.out.len(), 3);
        fake.borrow_mut().fail = true;
        assert!(side.send_buffered(py, sink).is_err());
        assert!(side.out.is_empty());
        let step = side.offer(&SOCKET, sink, &[(b"abc", None)], false);
        assert!(matches!(step, Step::Failed(_)));
        assert!(side.out.is_empty());
    });
}

#[test]
fn writes_are_admitted_by_each_transports_rules() {
    let mut side = WriteSide::default();
    assert_eq!(side.admit(&SOCKET, true), Admit::Nothing);
    assert_eq!(side.admit(&SOCKET, false), Admit::Write);
    side.closing = true;
    // The socket sends what is written before the buffer drains; the
    // pipe drops it.
    assert_eq!(side.admit(&SOCKET, false), Admit::Write);
    assert_eq!(side.admit(&PIPE, false), Admit::Lost);
    assert_eq!(side.conn_lost, 1);
    for _ in 0..4 {
        assert_eq!(side.admit(&PIPE, false), Admit::Lost);
    }
    assert_eq!(side.admit(&PIPE, false), Admit::LostWarn);
    assert_eq!(side.admit(&PIPE, true), Admit::Nothing, "not counted");
    assert_eq!(side.conn_lost, 6);
    side.eof = true;
    assert_eq!(side.admit(&SOCKET, true), Admit::AfterEof);
}

#[test]
fn losing_the_connection_counts_by_the_rules() {
    let mut socket = WriteSide::default();
    socket.mark_lost(&SOCKET);
    assert!(socket.lost);
    assert_eq!(socket.conn_lost, 1);
    socket.detach(&SOCKET);
    assert_eq!(socket.conn_lost, 1);
    let mut pipe = WriteSide::default();
    pipe.mark_lost(&PIPE);
    pipe.detach(&PIPE);
    assert!(pipe.lost && pipe.closing);
    assert_eq!(pipe.conn_lost, 0);
}
