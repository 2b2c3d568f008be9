//! A connection of any of tollgate's gRPC listeners, served within bounds: its end at the
//! shutdown grace, its share of the connections budget, and how it writes.

use crate::check::admission::ConnectionPermit;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection served within bounds: in time, it ends when the shutdown grace is over (its I/O
/// then fails, so hyper drops the connection with whatever streams are still open, and the
/// graceful shutdown completes); in number, it holds its share of the connections budget while it
/// is served.
///
/// It also does not offer vectored writes, so that h2 copies every frame of up to 1 KiB into its
/// write buffer and sends the answers of many checks in one write. With
/// vectored writes h2 keeps each DATA payload over 256 bytes out of its buffer and must write it
/// before it buffers the next frame: every 429 (about 360 bytes) then cost a `writev` of its own
/// (1.09 per check measured, against 0.12 for the small OK answers; BENCHMARKS.md).
pub(crate) struct BoundedConnection {
    stream: TcpStream,
    /// Resolves when the shutdown grace is over; `None` once it has.
    closed: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    _permit: Option<ConnectionPermit>,
    /// Until the client's HTTP/2 preface has arrived: its deadline, and the bytes still due.
    preface: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
}

/// The HTTP/2 client preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`: every client sends it first.
const PREFACE_LEN: usize = 24;

/// How long a new connection may take to send its preface. A gRPC client (Envoy included) sends it
/// as soon as it is connected; a socket that stays silent would hold a share of the connections
/// budget for nothing, and hyper sets no deadline on its handshake.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(1);

impl BoundedConnection {
    pub(crate) fn new(
        stream: TcpStream,
        mut closing: watch::Receiver<bool>,
        permit: impl Into<Option<ConnectionPermit>>,
    ) -> Self {
        let closed = async move {
            // An error means the server is gone, which also ends the connection.
            let _ = closing.wait_for(|closed| *closed).await;
        };
        Self {
            stream,
            closed: Some(Box::pin(closed)),
            _permit: permit.into(),
            preface: Some((Box::pin(tokio::time::sleep(PREFACE_TIMEOUT)), PREFACE_LEN)),
        }
    }

    /// Counts the preface's bytes as they are read, and fails a read still waiting for them past
    /// [`PREFACE_TIMEOUT`].
    fn within_preface(
        &mut self,
        cx: &mut Context<'_>,
        read: usize,
        io: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        let Some((deadline, due)) = &mut self.preface else {
            return io;
        };
        *due = due.saturating_sub(read);
        if *due == 0 {
            self.preface = None;
            return io;
        }
        if io.is_pending() && deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within the preface timeout",
            )));
        }
        io
    }

    /// `io` as it is, unless it is pending and the shutdown grace is over: then an error. Only
    /// pending I/O looks at the grace, so a busy connection pays nothing for it; hyper reads until
    /// the socket would block, so every connection reaches this regularly.
    fn unless_closed<T>(
        &mut self,
        cx: &mut Context<'_>,
        io: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if io.is_ready() {
            return io;
        }
        if let Some(closed) = &mut self.closed {
            if closed.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.closed = None;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "closed at the end of the shutdown grace",
        )))
    }
}

impl Connected for BoundedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for BoundedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let io = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        let io = self.within_preface(cx, read, io);
        self.unless_closed(cx, io)
    }
}

/// `poll_write_vectored` and `is_write_vectored` keep their defaults: not vectored.
impl AsyncWrite for BoundedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let io = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.unless_closed(cx, io)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = Pin::new(&mut self.stream).poll_flush(cx);
        self.unless_closed(cx, io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
