//! Unit tests of `check/service.rs`.

use super::{ReadError, Received, RequestError, read_message};
use crate::check::admission::{Admission, BUSY_READ_TIMEOUT, Limits, READ_TIMEOUT};
use crate::telemetry::metrics::Metrics;
use bytes::Bytes;
use http_body::Frame;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::time::Instant;
use tonic::codegen::tokio_stream::{self as stream, StreamExt};

/// A body that yields these chunks, then ends.
fn body(chunks: Vec<Vec<u8>>) -> impl tonic::codegen::Body<Data = Bytes, Error = Infallible> {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
    http_body_util::StreamBody::new(stream::iter(frames))
}

/// A body that yields these chunks, then nothing ever again.
fn stalled(chunks: Vec<Vec<u8>>) -> impl tonic::codegen::Body<Data = Bytes, Error = Infallible> {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
    http_body_util::StreamBody::new(stream::iter(frames).chain(stream::pending()))
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

fn admission(waiting: usize, busy: usize, bytes: usize) -> Admission {
    let limits = Limits {
        connections: 1,
        per_peer: 1,
        calls: 1,
        waiting,
        busy,
        bytes,
        waiting_bytes: bytes,
    };
    Admission::with_limits(limits, Arc::new(Metrics::new()))
}

/// Reads `chunks` with budgets of its own.
async fn read(chunks: Vec<Vec<u8>>, limit: usize) -> Result<Vec<u8>, ReadError> {
    read_message(
        body(chunks),
        limit,
        &admission(1, 1, 1 << 20),
        Instant::now(),
    )
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
        Err(ReadError::Request(RequestError::TooLarge {
            size: 65,
            limit: 64
        }))
    );
    let mut compressed = framed(b"x");
    compressed[0] = 1;
    assert_eq!(
        read(vec![compressed], 64).await,
        Err(ReadError::Request(RequestError::Compressed))
    );
    let frame = framed(b"hello");
    assert_eq!(
        read(vec![frame[..7].to_vec()], 64).await,
        Err(ReadError::Request(RequestError::Malformed))
    );
    assert_eq!(
        read(vec![], 64).await,
        Err(ReadError::Request(RequestError::Malformed))
    );
}

#[tokio::test(start_paused = true)]
async fn the_read_timeout_counts_from_the_stream_opening() {
    let frame = framed(b"hello");
    let admission = admission(8, 8, 1 << 20);
    // Part of a message, or nothing at all (headers only): the same deadline, from the
    // opening, however late the first byte came.
    for chunks in [vec![frame[..7].to_vec()], vec![]] {
        let opened = Instant::now();
        tokio::time::advance(READ_TIMEOUT / 2).await;
        let result = read_message(stalled(chunks), 64, &admission, opened).await;
        assert_eq!(result.map(|m| m.to_vec()), Err(ReadError::TimedOut));
        assert_eq!(opened.elapsed(), READ_TIMEOUT);
    }
}

#[tokio::test(start_paused = true)]
async fn calls_past_the_waiting_pool_wait_only_briefly() {
    let admission = Arc::new(admission(1, 1, 1 << 20));
    let opened = Instant::now();
    // One call waits in the pool, with the whole read timeout.
    let first = tokio::spawn({
        let admission = admission.clone();
        async move {
            let result = read_message(stalled(vec![]), 64, &admission, opened).await;
            (result.map(|m| m.to_vec()), opened.elapsed())
        }
    });
    tokio::task::yield_now().await;
    // The next waits briefly; while it does, one more has no room at all.
    let second = tokio::spawn({
        let admission = admission.clone();
        async move {
            let result = read_message(stalled(vec![]), 64, &admission, opened).await;
            (result.map(|m| m.to_vec()), opened.elapsed())
        }
    });
    tokio::task::yield_now().await;
    let third = read_message(stalled(vec![]), 64, &admission, opened).await;
    assert_eq!(third.map(|m| m.to_vec()), Err(ReadError::NoRoom));
    assert_eq!(
        second.await.unwrap(),
        (Err(ReadError::TimedOut), BUSY_READ_TIMEOUT)
    );
    assert_eq!(
        first.await.unwrap(),
        (Err(ReadError::TimedOut), READ_TIMEOUT)
    );
    // A message that is there at once never needs the pool.
    let whole = read_message(body(vec![framed(b"hi")]), 64, &admission, opened).await;
    assert_eq!(whole.unwrap().to_vec(), b"hi");
}

#[tokio::test]
async fn bytes_are_held_as_they_arrive_not_as_announced() {
    let admission = admission(64, 64, 100);
    // Ten prefixes announcing 60 bytes each hold 5 bytes each, not 600 together: all fit.
    let mut pending = Vec::new();
    for _ in 0..10 {
        let prefix = framed(&[7; 60])[..5].to_vec();
        let mut received = None;
        assert!(admission.hold_bytes(&mut received, prefix.len(), false));
        pending.push(received);
    }
    // 50 bytes are held: a whole 60-byte message does not fit beside them...
    let message = framed(&[7; 60]);
    let refused = read_message(body(vec![message.clone()]), 64, &admission, Instant::now())
        .await
        .map(|m| m.to_vec());
    assert_eq!(refused, Err(ReadError::Request(RequestError::Overloaded)));
    // ...and does once they are released, and its own bytes come back when it is dropped.
    pending.clear();
    for _ in 0..2 {
        let read = read_message(body(vec![message.clone()]), 64, &admission, Instant::now())
            .await
            .unwrap();
        assert_eq!(read.len(), 60);
    }
}

#[test]
fn received_bytes_keep_their_order() {
    let mut received = Received::Empty;
    assert_eq!(received.prefix(), None);
    received.push(Bytes::from_static(b"ab"));
    received.own();
    received.push(Bytes::from_static(b"cd"));
    received.push(Bytes::from_static(b"ef"));
    assert_eq!(received.prefix(), Some(&b"abcde"[..]));
    assert_eq!(received.len(), 6);
    assert_eq!(received.into_bytes(), &b"abcdef"[..]);
}

#[tokio::test(start_paused = true)]
async fn stalled_messages_hold_bytes_of_their_own_budget() {
    let limits = Limits {
        connections: 1,
        per_peer: 1,
        calls: 1,
        waiting: 8,
        busy: 8,
        bytes: 100,
        waiting_bytes: 100,
    };
    let admission = Arc::new(Admission::with_limits(limits, Arc::new(Metrics::new())));
    // A call that waits with 60 bytes of a 90-byte message holds them in the waiting budget...
    let part = framed(&[7; 90])[..60].to_vec();
    let opened = Instant::now();
    let stalled_call = tokio::spawn({
        let admission = admission.clone();
        async move {
            read_message(stalled(vec![part]), 128, &admission, opened)
                .await
                .map(|m| m.to_vec())
        }
    });
    tokio::task::yield_now().await;
    // ...so a whole message of 90 still fits the other, whatever the stalled ones hold.
    let whole = read_message(
        body(vec![framed(&[7; 85])]),
        128,
        &admission,
        Instant::now(),
    )
    .await;
    assert_eq!(whole.unwrap().len(), 85);
    // A second stalled call finds the waiting budget short, and only it is refused.
    let more = framed(&[7; 90])[..60].to_vec();
    let refused = read_message(stalled(vec![more]), 128, &admission, Instant::now()).await;
    assert_eq!(
        refused.map(|m| m.to_vec()),
        Err(ReadError::Request(RequestError::Overloaded))
    );
    assert_eq!(stalled_call.await.unwrap(), Err(ReadError::TimedOut));
}
