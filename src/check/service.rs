//! The `envoy.service.auth.v3.Authorization` gRPC service: reads the one request message of a
//! `Check` call itself and always answers with a well-formed `CheckResponse`.
//!
//! tonic's generated server (and its `Grpc::unary`) turns every message it cannot take into a gRPC
//! error: a message over its size limit, a compressed one, one prost rejects. Envoy answers a gRPC
//! error with its failure mode and drops every header, so a client could choose to skip its rate
//! limit. Here the call's body is read directly: the gRPC frame's 5-byte prefix is checked before
//! anything else is buffered, so a message over `max_request_bytes` is refused without being read,
//! and every unusable message becomes a 400 like any other bad request.

use crate::check::authz::RateLimiter;
use crate::check::request::RequestError;
use crate::store::QuotaStore;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::ext_authz::v3::pb::CheckResponse;
use http_body::Frame;
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Body as HttpBody;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::NamedService;

/// The gRPC service name, also used for its health status.
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The gRPC length prefix: a compression flag and a big-endian `u32` length.
const PREFIX_LEN: usize = 5;

/// How long a message may take to arrive whole once its first bytes have. Envoy sends a check at
/// once and gives up on it after its own timeout (0.25 s as shipped); a slower sender only holds
/// memory, and is answered 400.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Messages larger than this are held against [`BUFFER_BUDGET`]. Envoy's are about 1 KiB, so
/// real checks never touch the budget.
const LARGE_MESSAGE: usize = 16 << 10;

/// Bytes of large messages that all calls together may hold at once: with many connections and
/// streams, `max_request_bytes` alone bounds nothing. Past it a large message is answered 503,
/// never read.
const BUFFER_BUDGET: usize = 64 << 20;

/// `Authorization/Check` over a [`RateLimiter`].
pub struct AuthorizationService<S> {
    limiter: Arc<RateLimiter<S>>,
    max_request_bytes: usize,
    budget: Arc<Semaphore>,
}

impl<S> AuthorizationService<S> {
    /// Serves `limiter` (shared with the admin API), refusing request messages over
    /// `max_request_bytes`.
    pub fn new(limiter: Arc<RateLimiter<S>>, max_request_bytes: usize) -> Self {
        Self {
            limiter,
            max_request_bytes,
            budget: Arc::new(Semaphore::new(BUFFER_BUDGET)),
        }
    }
}

impl<S> Clone for AuthorizationService<S> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            max_request_bytes: self.max_request_bytes,
            budget: self.budget.clone(),
        }
    }
}

impl<S> NamedService for AuthorizationService<S> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<S, B> Service<http::Request<B>> for AuthorizationService<S>
where
    S: QuotaStore,
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            let status = Status::unimplemented(format!("{SERVICE_NAME} has only Check"));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let limiter = self.limiter.clone();
        let limit = self.max_request_bytes;
        let budget = self.budget.clone();
        Box::pin(async move {
            let message = read_message(request.into_body(), limit, &budget).await;
            let answer = limiter.respond(message.as_deref()).await;
            Ok(unary_response(&answer))
        })
    }
}

/// A call's message, and its share of the buffer budget when it is a large one.
struct CallMessage {
    bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for CallMessage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads the first gRPC message of a call's body. Buffers at most `limit` bytes of message, and
/// a large one only within the shared `budget`; the common case (the whole message in one DATA
/// frame) copies nothing and sets no timer.
async fn read_message<B>(
    body: B,
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<CallMessage, RequestError>
where
    B: HttpBody,
{
    let mut body = std::pin::pin!(body);
    let mut received = Received::Empty;
    let mut deadline = None;
    let mut permit = None;
    loop {
        if let Some(prefix) = received.prefix() {
            if prefix[0] != 0 {
                return Err(RequestError::Compressed);
            }
            let size = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            if size > limit {
                return Err(RequestError::TooLarge { size, limit });
            }
            if received.len() >= PREFIX_LEN + size {
                return Ok(CallMessage {
                    bytes: received.into_bytes().slice(PREFIX_LEN..PREFIX_LEN + size),
                    _budget: permit,
                });
            }
            if size > LARGE_MESSAGE && permit.is_none() {
                let bytes = u32::try_from(size).unwrap_or(u32::MAX);
                permit = Some(
                    budget
                        .clone()
                        .try_acquire_many_owned(bytes)
                        .map_err(|_| RequestError::Overloaded)?,
                );
            }
            received.reserve_exact(PREFIX_LEN + size);
        }
        let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
        let frame = if received.len() == 0 {
            // Nothing held yet: waiting costs no memory, and no timer on the common path.
            next.await
        } else {
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + READ_TIMEOUT);
            tokio::time::timeout_at(deadline, next)
                .await
                .map_err(|_| RequestError::Incomplete)?
        };
        match frame {
            // The body ended (or broke) before the message did.
            None | Some(Err(_)) => return Err(RequestError::Malformed),
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    received.push(data.copy_to_bytes(data.remaining()));
                }
            }
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

    /// Makes room for the whole message at once, so a message that arrives in many frames is
    /// copied into one buffer of its exact size instead of one that doubles.
    fn reserve_exact(&mut self, total: usize) {
        match self {
            Received::Empty => {}
            Received::One(first) => {
                let mut joined = BytesMut::with_capacity(total);
                joined.extend_from_slice(first);
                *self = Received::Several(joined);
            }
            Received::Several(joined) => joined.reserve(total.saturating_sub(joined.len())),
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
fn unary_response(message: &CheckResponse) -> http::Response<Body> {
    let len = message.encoded_len();
    let mut frame = BytesMut::with_capacity(PREFIX_LEN + len);
    frame.put_u8(0);
    frame.put_u32(len as u32);
    message
        .encode(&mut frame)
        .expect("the buffer was sized by encoded_len");
    let mut response = http::Response::new(Body::new(UnaryBody {
        message: Some(frame.freeze()),
        trailers_sent: false,
    }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// One message, then the trailers `grpc-status: 0`.
struct UnaryBody {
    message: Option<Bytes>,
    trailers_sent: bool,
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
mod tests {
    use super::{LARGE_MESSAGE, READ_TIMEOUT, Received, RequestError, read_message};
    use bytes::Bytes;
    use http_body::Frame;
    use std::convert::Infallible;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    /// A body that yields these chunks, then ends.
    fn body(chunks: Vec<Vec<u8>>) -> impl tonic::codegen::Body<Data = Bytes, Error = Infallible> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
        http_body_util::StreamBody::new(tonic::codegen::tokio_stream::iter(frames))
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        frame
    }

    /// Reads `chunks` with a budget of its own.
    async fn read(chunks: Vec<Vec<u8>>, limit: usize) -> Result<Vec<u8>, RequestError> {
        let budget = Arc::new(Semaphore::new(1 << 20));
        read_message(body(chunks), limit, &budget)
            .await
            .map(|m| m.to_vec())
    }

    #[tokio::test]
    async fn a_message_split_anywhere_is_read_whole() {
        let frame = framed(b"hello world");
        for a in 0..frame.len() {
            for b in a..frame.len() {
                let chunks = vec![
                    frame[..a].to_vec(),
                    frame[a..b].to_vec(),
                    frame[b..].to_vec(),
                ];
                assert_eq!(read(chunks, 64).await.unwrap(), b"hello world");
            }
        }
    }

    #[tokio::test]
    async fn oversized_compressed_and_truncated_messages_are_refused() {
        // Only the prefix is sent: the size is judged before the message is read.
        let prefix = framed(&[0; 65])[..5].to_vec();
        assert_eq!(
            read(vec![prefix], 64).await,
            Err(RequestError::TooLarge {
                size: 65,
                limit: 64
            })
        );
        let mut compressed = framed(b"x");
        compressed[0] = 1;
        assert_eq!(
            read(vec![compressed], 64).await,
            Err(RequestError::Compressed)
        );
        let frame = framed(b"hello");
        assert_eq!(
            read(vec![frame[..7].to_vec()], 64).await,
            Err(RequestError::Malformed)
        );
        assert_eq!(read(vec![], 64).await, Err(RequestError::Malformed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_stalls_is_refused_after_the_read_timeout() {
        let frame = framed(b"hello");
        let stalled =
            http_body_util::StreamBody::new(tonic::codegen::tokio_stream::StreamExt::chain(
                tonic::codegen::tokio_stream::iter([Ok::<_, Infallible>(Frame::data(
                    Bytes::from(frame[..7].to_vec()),
                ))]),
                tonic::codegen::tokio_stream::pending(),
            ));
        let budget = Arc::new(Semaphore::new(1 << 20));
        let started = tokio::time::Instant::now();
        let result = read_message(stalled, 64, &budget).await.map(|m| m.to_vec());
        assert_eq!(result, Err(RequestError::Incomplete));
        assert_eq!(started.elapsed(), READ_TIMEOUT);
    }

    #[tokio::test]
    async fn large_messages_share_one_budget() {
        let size = LARGE_MESSAGE + 1;
        let frame = framed(&vec![7; size]);
        // Room for one large message: a second one read at the same time is refused.
        let budget = Arc::new(Semaphore::new(size + size / 2));
        let first = read_message(
            body(vec![frame[..10].to_vec(), frame[10..].to_vec()]),
            1 << 20,
            &budget,
        )
        .await
        .unwrap();
        assert_eq!(first.len(), size);
        let second = read_message(
            body(vec![frame[..10].to_vec(), frame[10..].to_vec()]),
            1 << 20,
            &budget,
        )
        .await;
        assert_eq!(second.err(), Some(RequestError::Overloaded));
        drop(first);
        let third = read_message(
            body(vec![frame[..10].to_vec(), frame[10..].to_vec()]),
            1 << 20,
            &budget,
        )
        .await;
        assert!(
            third.is_ok(),
            "the budget comes back when a message is dropped"
        );
    }

    #[test]
    fn received_bytes_keep_their_order() {
        let mut received = Received::Empty;
        assert_eq!(received.prefix(), None);
        received.push(Bytes::from_static(b"ab"));
        received.reserve_exact(6);
        received.push(Bytes::from_static(b"cd"));
        received.push(Bytes::from_static(b"ef"));
        assert_eq!(received.prefix(), Some(&b"abcde"[..]));
        assert_eq!(received.len(), 6);
        assert_eq!(received.into_bytes(), &b"abcdef"[..]);
    }
}
