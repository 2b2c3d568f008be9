//! Checks against tollgate over a lean gRPC client.

use crate::check_request::envoy_request;
use crate::cpu::cpu_seconds;
use crate::measure::{Keys, Outcome, Tally, drive};
use crate::processes::{TollgateProcess, Window};
use crate::redis_server::{RedisServer, script_calls};
use crate::{Options, Shape};
use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub async fn drive_tollgate(
    tollgate: &TollgateProcess,
    redis: &RedisServer,
    shape: Shape,
    o: &Options,
) -> (Tally, Window) {
    let mut connections = Vec::new();
    for _ in 0..shape.connections {
        connections.push(GrpcConnection::connect(tollgate.port).await);
    }
    let connections = Arc::new(connections);
    let states: Arc<Vec<std::sync::Mutex<Keys>>> = Arc::new(
        (0..shape.callers)
            .map(|c| std::sync::Mutex::new(Keys::new(c as u64 + 7, shape.keys)))
            .collect(),
    );
    // Every key's message is encoded before the clock starts, so that the load tool spends its
    // share of the shared CPU on the calls, not on building requests.
    let messages: Arc<Vec<Bytes>> = Arc::new(
        (0..shape.keys)
            .map(|key| grpc_message(&check_request(key, shape.unlimited)))
            .collect(),
    );
    let allowed_total = Arc::new(AtomicU64::new(0));
    let counted = allowed_total.clone();
    // Script calls are read around the measurement window, from a task that wakes at its edges.
    let before_after = {
        let mut connection = redis.connection();
        let (warmup, duration) = (o.warmup, o.duration);
        let pids = [tollgate.child.id(), redis.pid(), std::process::id()];
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            let calls = script_calls(&mut connection);
            let cpu = pids.map(cpu_seconds);
            tokio::time::sleep(duration).await;
            let after = pids.map(cpu_seconds);
            Window {
                script_calls: script_calls(&mut connection) - calls,
                cpu_seconds: [0, 1, 2].map(|i| after[i] - cpu[i]),
            }
        })
    };
    let tally = drive(shape.callers, o.rate, o.warmup, o.duration, move |caller| {
        let (connections, states, counted, messages) = (
            connections.clone(),
            states.clone(),
            counted.clone(),
            messages.clone(),
        );
        async move {
            let key = states[caller].lock().unwrap().next();
            let connection = &connections[caller % connections.len()];
            match connection.check(messages[key as usize].clone()).await {
                Some(HttpResponse::OkResponse(ok))
                    if shape.unlimited || !ok.response_headers_to_add.is_empty() =>
                {
                    counted.fetch_add(1, Ordering::Relaxed);
                    Outcome::Allowed
                }
                Some(HttpResponse::DeniedResponse(d))
                    if d.status.is_some_and(|s| s.code == 429) =>
                {
                    Outcome::Denied
                }
                _ => Outcome::Error,
            }
        }
    })
    .await;
    let window = before_after.await.unwrap();
    if shape.keys == 1 {
        let admitted = allowed_total.load(Ordering::Relaxed);
        println!(
            "<!-- hot key: {admitted} admitted over warm-up and measurement (limit {}) -->",
            shape.limit
        );
        assert_eq!(
            admitted,
            u64::from(shape.limit),
            "one hot key must admit exactly its limit"
        );
    }
    (tally, window)
}

/// A gRPC client reduced to what the load needs: one HTTP/2 connection (the `h2` crate directly,
/// without tonic's buffering layer, so the load tool spends as little of the shared CPU as it can)
/// and unary `Check` calls on it.
pub struct GrpcConnection {
    pub sender: h2::client::SendRequest<Bytes>,
    pub uri: http::Uri,
}

impl GrpcConnection {
    pub async fn connect(port: u16) -> Self {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let uri = format!("http://127.0.0.1:{port}/envoy.service.auth.v3.Authorization/Check")
            .parse()
            .unwrap();
        Self { sender, uri }
    }

    /// One unary call with a message from [`grpc_message`]; `None` for any transport or gRPC
    /// error.
    pub async fn check(&self, message: Bytes) -> Option<HttpResponse> {
        let head = http::Request::post(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .ok()?;
        let mut sender = self.sender.clone().ready().await.ok()?;
        let (response, mut stream) = sender.send_request(head, false).ok()?;
        stream.send_data(message, true).ok()?;
        let mut body = response.await.ok()?.into_body();
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.ok()?;
            let _ = body.flow_control().release_capacity(chunk.len());
            message.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.ok()??;
        if trailers.get("grpc-status")? != "0" || message.len() < 5 {
            return None;
        }
        CheckResponse::decode(&message[5..]).ok()?.http_response
    }
}

/// `request` as the body of a gRPC call: the 5-byte length prefix, then the message.
pub fn grpc_message(request: &CheckRequest) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + request.encoded_len());
    frame.put_u8(0); // not compressed
    frame.put_u32(request.encoded_len() as u32);
    request
        .encode(&mut frame)
        .expect("the buffer has room for the message");
    frame.freeze()
}

/// A check as Envoy sends it (`tests/common/check_request.rs`), inside or outside the prefix, with
/// a `traceparent` of a trace of its own (a trace id per key, spread over the id space, so that
/// tollgate's ratio sampler picks its share of them; the same number of bytes for every key).
pub fn check_request(key: u64, unlimited: bool) -> CheckRequest {
    let prefix = if unlimited { "/outside" } else { "/v1" };
    let mut request = envoy_request(
        "GET",
        &format!("{prefix}/bench/{}", key % 1000),
        Some(&format!("bench-key-{key}")),
    );
    if let Some(traceparent) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .and_then(|http| http.headers.get_mut("traceparent"))
    {
        let spread = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        *traceparent = format!("00-{key:016x}{spread:016x}-00f067aa0ba902b7-01");
    }
    request
}
