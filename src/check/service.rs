//! The `envoy.service.auth.v3.Authorization` gRPC service: reads the one request message of a
//! `Check` call itself and answers every well-behaved call with a well-formed `CheckResponse`.
//!
//! tonic's generated server (and its `Grpc::unary`) turns every message it cannot take into a gRPC
//! error: a message over its size limit, a compressed one, one prost rejects. Envoy answers a gRPC
//! error with its failure mode and drops every header, so a client could choose to skip its rate
//! limit. Here the call's body is read directly: the gRPC frame's 5-byte prefix is checked before
//! anything else is buffered, so a message over `max_request_bytes` is refused without being read,
//! and every unusable message becomes a 400 like any other bad request.
//!
//! Refusals for want of room are gRPC errors on purpose, sent as a trailers-only response (one
//! HEADERS frame, no DATA, so no flow control can hold it and the call's memory is freed at once):
//! a call past the process's calls budget or one that must wait for its message while the waiting
//! pools are full (`UNAVAILABLE`), and a call whose message did not arrive within its read timeout
//! (`DEADLINE_EXCEEDED`); see [`crate::check::admission`]. Envoy applies its own
//! `failure_mode_allow` to them. None happens to Envoy's own checks unless tollgate is overloaded
//! far past what one replica serves.

use crate::check::admission::{Admission, Share};
use crate::check::authz::RateLimiter;
use crate::check::request::RequestError;
use crate::check::response::{PREFIX_LEN, Rendered};
use crate::store::QuotaStore;
use bytes::{Buf, Bytes, BytesMut};
use http_body::Frame;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tonic::Status;
use tonic::codegen::Body as HttpBody;
use tonic::codegen::http;

/// The gRPC service name, also used for its health status.
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The W3C trace context of the call itself: Envoy puts its ext_authz client span's there.
const TRACEPARENT: &str = "traceparent";

/// `Authorization/Check` over a [`RateLimiter`].
pub struct AuthorizationService<S> {
    limiter: Arc<RateLimiter<S>>,
    max_request_bytes: usize,
    admission: Arc<Admission>,
}

impl<S> AuthorizationService<S> {
    /// Serves `limiter` (shared with the admin API), refusing request messages over
    /// `max_request_bytes` and calls past the budgets of `admission`.
    pub fn new(
        limiter: Arc<RateLimiter<S>>,
        max_request_bytes: usize,
        admission: Arc<Admission>,
    ) -> Self {
        Self {
            limiter,
            max_request_bytes,
            admission,
        }
    }
}

impl<S> Clone for AuthorizationService<S> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            max_request_bytes: self.max_request_bytes,
            admission: self.admission.clone(),
        }
    }
}

impl<S: QuotaStore> AuthorizationService<S> {
    /// Answers one call: a `Check` with its `CheckResponse`, any other method of the service with
    /// `UNIMPLEMENTED`, and a call refused for want of room or time with its gRPC error.
    pub fn call<B>(
        &self,
        request: http::Request<B>,
    ) -> impl Future<Output = http::Response<UnaryBody>> + Send + 'static
    where
        B: HttpBody + Send + 'static,
    {
        let opened = Instant::now();
        let limiter = self.limiter.clone();
        let limit = self.max_request_bytes;
        let admission = self.admission.clone();
        let is_check = request.uri().path() == CHECK_PATH;
        // Envoy's ext_authz client span, when Envoy traces: the check's parent.
        let traceparent = limiter
            .traced()
            .then(|| request.headers().get(TRACEPARENT).cloned())
            .flatten();
        // The headers and extensions are dropped now: a call waiting for its message holds only
        // its body (and a trace context of 55 bytes).
        let body = request.into_body();
        async move {
            if !is_check {
                return Status::unimplemented(format!("{SERVICE_NAME} has only Check")).into_http();
            }
            let message = match read_message(body, limit, &admission, opened).await {
                Ok(message) => Ok(message),
                Err(ReadError::Request(e)) => Err(e),
                Err(ReadError::NoRoom) => {
                    return Status::unavailable("too many calls are waiting for their message")
                        .into_http();
                }
                Err(ReadError::TimedOut) => {
                    admission.timed_out();
                    return Status::deadline_exceeded(
                        "the check request did not arrive within the read timeout",
                    )
                    .into_http();
                }
            };
            let Some(call) = admission.call() else {
                return Status::unavailable("tollgate is answering as many calls as it can")
                    .into_http();
            };
            // Boxed: a call waiting for its message then holds only the small future above.
            let call_context = traceparent.as_ref().map(http::HeaderValue::as_bytes);
            let answer = Box::pin(limiter.answer_traced(message.as_deref(), call_context)).await;
            // The call's share ends with its answer handed to HTTP/2: held until the answer is
            // written, a client that never reads (or opens no window) would keep it for good, and
            // 64 such connections would take the whole budget. What unsent answers hold is bounded
            // per connection instead, by its stream limit.
            drop((message, call));
            unary_response(answer)
        }
    }
}

/// Why a call's message could not be read.
#[derive(Debug, PartialEq)]
enum ReadError {
    /// An unusable message: answered with a 400 (or a 503 for the bytes budget).
    Request(RequestError),
    /// The message did not arrive whole within the read timeout.
    TimedOut,
    /// The message was not there at once, and the calls that wait for theirs fill every pool.
    NoRoom,
}

impl From<RequestError> for ReadError {
    fn from(e: RequestError) -> Self {
        Self::Request(e)
    }
}

/// A call's message, and its share of the bytes budget.
struct CallMessage {
    bytes: Bytes,
    _budget: Option<Share>,
}

impl std::ops::Deref for CallMessage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads the first gRPC message of a call opened at `opened`. Every byte is reserved from the
/// bytes budget of `admission` as it arrives, and at most `limit` bytes of message are waited for.
/// The common case (the whole message already there when the call starts) copies nothing and
/// sets no timer; a call that has to wait does so until its read timeout, counted from `opened`.
async fn read_message<B>(
    body: B,
    limit: usize,
    admission: &Admission,
    opened: Instant,
) -> Result<CallMessage, ReadError>
where
    B: HttpBody,
{
    let mut body = std::pin::pin!(body);
    let mut received = Received::Empty;
    let mut held = None;
    let mut waiting = None;
    loop {
        if let Some(size) = received.announced(limit)?
            && received.len() >= PREFIX_LEN + size
        {
            return Ok(CallMessage {
                bytes: received.into_bytes().slice(PREFIX_LEN..PREFIX_LEN + size),
                _budget: held,
            });
        }
        let mut next = |cx: &mut Context<'_>| body.as_mut().poll_frame(cx).map(Chunk::of);
        let chunk = match std::future::poll_fn(|cx| Poll::Ready(next(cx))).await {
            Poll::Ready(chunk) => chunk,
            Poll::Pending => {
                // What is held is copied out of the connection's read buffer, which it would
                // otherwise keep alive whole.
                received.own();
                if waiting.is_none() {
                    waiting = Some(admission.wait(opened).ok_or(ReadError::NoRoom)?);
                    if !admission.start_waiting(&mut held) {
                        return Err(RequestError::Overloaded.into());
                    }
                }
                let (deadline, _) = waiting.as_ref().expect("set above");
                tokio::time::timeout_at(*deadline, std::future::poll_fn(next))
                    .await
                    .map_err(|_| ReadError::TimedOut)?
            }
        };
        match chunk {
            // The body ended (or broke) before the message did.
            Chunk::End => return Err(RequestError::Malformed.into()),
            Chunk::Other => {}
            Chunk::Data(data) => {
                if !admission.hold_bytes(&mut held, data.len(), waiting.is_some()) {
                    return Err(RequestError::Overloaded.into());
                }
                received.push(data);
            }
        }
    }
}

/// What one poll of a call's body brought.
enum Chunk {
    Data(Bytes),
    /// Trailers, or any frame that is not data.
    Other,
    /// The end of the body, or an error that ends it.
    End,
}

impl Chunk {
    fn of<D: Buf, E>(frame: Option<Result<Frame<D>, E>>) -> Self {
        match frame {
            None | Some(Err(_)) => Chunk::End,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => Chunk::Data(data.copy_to_bytes(data.remaining())),
                Err(_) => Chunk::Other,
            },
        }
    }
}

/// The body received so far: one chunk as it came, or several copied together.
enum Received {
    Empty,
    One(Bytes),
    Several(BytesMut),
}

impl Received {
    fn push(&mut self, chunk: Bytes) {
        *self = match std::mem::replace(self, Received::Empty) {
            Received::Empty => Received::One(chunk),
            Received::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + chunk.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
                Received::Several(joined)
            }
            Received::Several(mut joined) => {
                joined.extend_from_slice(&chunk);
                Received::Several(joined)
            }
        };
    }

    /// Holds what was received in a buffer of its own.
    fn own(&mut self) {
        if let Received::One(first) = self {
            *self = Received::Several(BytesMut::from(&first[..]));
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Received::Empty => &[],
            Received::One(bytes) => bytes,
            Received::Several(joined) => joined,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// The message size the gRPC prefix announces, once it has arrived; an error for a compressed
    /// message or one over `limit`, judged before the message is read.
    fn announced(&self, limit: usize) -> Result<Option<usize>, RequestError> {
        let Some(prefix) = self.prefix() else {
            return Ok(None);
        };
        if prefix[0] != 0 {
            return Err(RequestError::Compressed);
        }
        let size = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if size > limit {
            return Err(RequestError::TooLarge { size, limit });
        }
        Ok(Some(size))
    }

    /// The gRPC length prefix, once it has arrived.
    fn prefix(&self) -> Option<&[u8]> {
        self.as_slice().get(..PREFIX_LEN)
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Received::Empty => Bytes::new(),
            Received::One(bytes) => bytes,
            Received::Several(joined) => joined.freeze(),
        }
    }
}

/// A successful unary gRPC response carrying `message`.
fn unary_response(message: Rendered) -> http::Response<UnaryBody> {
    let mut response = http::Response::new(UnaryBody {
        message: Some(message.into_frame().into()),
        trailers_sent: false,
    });
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The body of a call's answer: one message, then the trailers `grpc-status: 0`; or nothing at
/// all (the default) after a trailers-only response, whose status is in its headers.
pub struct UnaryBody {
    message: Option<Bytes>,
    trailers_sent: bool,
}

impl Default for UnaryBody {
    fn default() -> Self {
        Self {
            message: None,
            trailers_sent: true,
        }
    }
}

impl HttpBody for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if self.trailers_sent {
            return Poll::Ready(None);
        }
        self.trailers_sent = true;
        let mut trailers = http::HeaderMap::with_capacity(1);
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers_sent
    }
}

#[cfg(test)]
mod tests;
