//! `WriteBuffer`: what a stream or pipe transport accepted in `write()` but
//! the kernel has not taken yet, sent with one vectored call over all of it
//! (`sendmsg` for a socket, `writev` for a pipe).
//!
//! Large `bytes` objects are referenced, not copied (they are immutable):
//! an echo of 100 KiB messages that the kernel takes in parts costs no
//! copy in user space. Small writes, and mutable buffers (`bytearray`,
//! `memoryview`, whose contents the caller may change after `write()`),
//! are copied into owned chunks, small ones coalesced.
//!
//! Also here: the views of Python buffers the stream and pipe transports
//! write from (`ByteView`, `as_bytes_obj`, `check_write_type`).

use std::collections::VecDeque;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::sys::fd::io_vec;
use crate::sys::{IoVec, IOV_MAX};

/// Below this, copying is cheaper than holding a reference and an iovec.
const COPY_BELOW: usize = 4096;

/// Small copies are appended to the last owned chunk up to this size.
const COALESCE_UP_TO: usize = 64 * 1024;

enum Chunk {
    Owned {
        data: Vec<u8>,
        start: usize,
    },
    Shared {
        obj: Py<PyBytes>,
        start: usize,
        end: usize,
    },
}

impl Chunk {
    fn bytes<'a>(&'a self, py: Python<'_>) -> &'a [u8] {
        match self {
            Chunk::Owned { data, start } => &data[*start..],
            Chunk::Shared { obj, start, end } => &obj.as_bytes(py)[*start..*end],
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Owned { start, .. } | Chunk::Shared { start, .. } => *start += n,
        }
    }
}

#[derive(Default)]
pub(crate) struct WriteBuffer {
    chunks: VecDeque<Chunk>,
    len: usize,
}

impl WriteBuffer {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Append `data`, which is a slice of `owner` when `owner` is given
    /// (an immutable `bytes`, then referenced instead of copied).
    pub(crate) fn push(&mut self, data: &[u8], owner: Option<&Bound<'_, PyBytes>>) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        let within = |obj: &&Bound<'_, PyBytes>| {
            let whole = obj.as_bytes().as_ptr_range();
            let part = data.as_ptr_range();
            whole.start <= part.start && part.end <= whole.end
        };
        if let Some(obj) = owner.filter(|o| data.len() >= COPY_BELOW && within(o)) {
            let start = data.as_ptr() as usize - obj.as_bytes().as_ptr() as usize;
            self.chunks.push_back(Chunk::Shared {
                obj: obj.clone().unbind(),
                start,
                end: start + data.len(),
            });
            return;
        }
        if let Some(Chunk::Owned { data: tail, .. }) = self.chunks.back_mut() {
            if tail.len() + data.len() <= COALESCE_UP_TO {
                tail.extend_from_slice(data);
                return;
            }
        }
        self.chunks.push_back(Chunk::Owned {
            data: data.to_vec(),
            start: 0,
        });
    }

    /// One vectored `send` (`sendmsg`, `writev`) of the pending bytes:
    /// what it took is dropped; after an error, everything is (asyncio
    /// clears its buffer). Returns what `send` did.
    pub(crate) fn send_with(
        &mut self,
        py: Python<'_>,
        send: impl FnOnce(&[IoVec]) -> std::io::Result<Option<usize>>,
    ) -> std::io::Result<Option<usize>> {
        let mut iov = Vec::new();
        self.iovecs(py, &mut iov);
        let sent = send(&iov);
        match sent {
            Ok(Some(n)) => self.consume(py, n),
            Err(_) => self.clear(),
            Ok(None) => {}
        }
        sent
    }

    /// The pending bytes as iovecs (at most IOV_MAX), valid while `self`
    /// is neither changed nor dropped.
    fn iovecs(&self, py: Python<'_>, out: &mut Vec<IoVec>) {
        out.clear();
        out.extend(
            self.chunks
                .iter()
                .take(IOV_MAX)
                .map(|c| io_vec(c.bytes(py))),
        );
    }

    /// Drop the first `n` bytes (sent).
    fn consume(&mut self, py: Python<'_>, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let size = front.bytes(py).len();
            if n < size {
                front.advance(n);
                break;
            }
            n -= size;
            self.chunks.pop_front();
        }
    }
}

// -- Python buffers ------------------------------------------------------------

/// A contiguous byte view of a buffer object: what `write` sends
/// (`PyBUF_SIMPLE`) or what `recv_into` fills (`PyBUF_WRITABLE`).
pub(crate) struct ByteView {
    view: ffi::Py_buffer,
}

impl ByteView {
    pub(crate) fn new(obj: &Bound<'_, PyAny>, flags: std::os::raw::c_int) -> PyResult<ByteView> {
        // SAFETY: a zeroed Py_buffer is what PyObject_GetBuffer fills in.
        let mut view: ffi::Py_buffer = unsafe { std::mem::zeroed() };
        // SAFETY: `obj` is live; on success the buffer is released in Drop.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut view, flags) } < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(ByteView { view })
    }

    pub(crate) fn len(&self) -> usize {
        self.view.len as usize
    }

    /// Only for a view acquired with `PyBUF_WRITABLE`.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.view.buf.cast()
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: PyBUF_SIMPLE gives `len` contiguous bytes at `buf`, valid
        // until the buffer is released.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for ByteView {
    fn drop(&mut self) {
        // SAFETY: acquired in `new`, released once.
        unsafe { ffi::PyBuffer_Release(&mut self.view) };
    }
}

/// `write()`'s `TypeError` for anything but `bytes`, `bytearray` and
/// `memoryview`, in the running asyncio's own words.
pub(crate) fn check_write_type(data: &Bound<'_, PyAny>) -> PyResult<()> {
    let p = data.as_ptr();
    // SAFETY: type checks on a live object.
    let ok = unsafe {
        ffi::PyBytes_Check(p) != 0
            || ffi::PyByteArray_Check(p) != 0
            || ffi::PyMemoryView_Check(p) != 0
    };
    if ok {
        return Ok(());
    }
    // The running asyncio's own words (3.14.x reworded them).
    let err = crate::handles::glue(data.py(), "write_type_error")?.call1((data,))?;
    Err(PyErr::from_value(err))
}

/// `obj` as `bytes`, if it is exactly one: immutable, so it may be
/// referenced instead of copied, and freeing it runs no Python code (a
/// subclass's `__del__` could call back into a transport whose lock is
/// held; on 3.12+ its `__buffer__` may also export other bytes).
pub(crate) fn as_bytes_obj<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, PyBytes>> {
    obj.cast_exact::<PyBytes>().ok()
}

/// Data not yet sent, and the `bytes` object it is a slice of (if any).
pub(crate) type Pending<'a, 'py> = (&'a [u8], Option<&'a Bound<'py, PyBytes>>);
