//! Shared helpers of the integration tests: a real `redis-server` on a free port, tollgate on
//! `127.0.0.1:0`, and check requests shaped the way Envoy sends them.
//!
//! The one home of test support, for the benches too: `check_request.rs`, `redis_server.rs`
//! (with `ports.rs`), `temp.rs` and `poll.rs` depend on nothing else of this module, so a bench
//! (or a test that needs no more, like `deploy.rs`) includes just those files with `#[path]`.
//! Keep them that way.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

pub mod check_request;
pub mod envoy;
pub mod fault_proxy;
pub mod fuzz_bodies;
pub mod http;
pub mod otlp;
pub mod poll;
pub mod process;
pub mod redis_cluster;
pub mod redis_server;
pub mod sliding_model;
pub mod temp;

pub use check_request::envoy_request;
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;
pub use redis_server::ports;
pub use redis_server::ports::free_port;

use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate::admin::pb::admin_client::AdminClient;
use tollgate::admin::pb::{GetQuotaRequest, Quota};
use tollgate::config::{Config, Overrides, StoreSettings};
use tonic::transport::Channel;

/// Defines, for each named body `async fn body(backend: Backend)`, one test with the in-memory
/// store, one with each supported server (Redis 7.x, Redis 6.2, Valkey 8) and one with a real
/// three-node Redis 7.x Cluster: the same body for every store. A standalone server starts in
/// milliseconds, so every body runs on every flavour (about 8 s more per flavour).
#[macro_export]
macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::redis()).await;
                }
            )*
        }
        mod redis_6_2 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::redis_of(
                        $crate::common::redis_server::Flavour::Redis62,
                    ))
                    .await;
                }
            )*
        }
        mod valkey_8 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::redis_of(
                        $crate::common::redis_server::Flavour::Valkey8,
                    ))
                    .await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::cluster()).await;
                }
            )*
        }
    };
}

/// Where a test's quotas live.
pub enum Backend {
    /// tollgate's in-memory store.
    Memory,
    /// A server of the test's own (Redis 7.x, 6.2 or Valkey 8).
    Redis(RedisServer),
    /// A three-node Redis Cluster of the test's own.
    Cluster(RedisCluster),
}

impl Backend {
    pub fn memory() -> Self {
        Self::Memory
    }

    pub fn redis() -> Self {
        Self::Redis(RedisServer::start())
    }

    /// A server of `flavour`.
    pub fn redis_of(flavour: redis_server::Flavour) -> Self {
        Self::Redis(RedisServer::start_flavour(flavour))
    }

    pub fn cluster() -> Self {
        Self::Cluster(RedisCluster::start())
    }

    /// Whether several tollgate instances can share this backend.
    pub fn is_shared(&self) -> bool {
        !matches!(self, Self::Memory)
    }

    /// Parses `yaml`, pointing it at this backend's Redis when there is one. The Redis timeout is
    /// raised to 1 s so that a loaded CI machine does not turn checks into fail-open answers; the
    /// timeout itself has its own test.
    pub fn config(&self, yaml: &str) -> Config {
        let mut config = self.config_as_written(yaml);
        if let Some(redis) = config.store.redis_mut() {
            redis.timeout = Duration::from_secs(1);
        }
        config
    }

    /// Parses `yaml` as it is, pointing it at this backend's Redis when there is one.
    pub fn config_as_written(&self, yaml: &str) -> Config {
        let overrides = Overrides {
            redis_url: match self {
                Self::Memory => None,
                Self::Redis(redis) => Some(redis.url()),
                Self::Cluster(cluster) => Some(cluster.url()),
            },
            ..loopback()
        };
        let mut config = Config::from_yaml(yaml, "test", &overrides).expect("test configuration");
        if let (Self::Cluster(_), StoreSettings::Redis(redis)) = (self, &config.store) {
            config.store = StoreSettings::Cluster(redis.clone());
        }
        config
    }

    pub fn redis_server(&mut self) -> Option<&mut RedisServer> {
        match self {
            Self::Redis(redis) => Some(redis),
            Self::Memory | Self::Cluster(_) => None,
        }
    }
}

/// Listeners on free loopback ports: tests run side by side, never on the defaults (the metrics'
/// 0.0.0.0:9090 included).
pub fn loopback() -> Overrides {
    Overrides {
        listen: Some("127.0.0.1:0".into()),
        redis_url: None,
        admin_listen: None,
        metrics_listen: Some("127.0.0.1:0".into()),
    }
}

/// `yaml` parsed as a test's configuration, with [`loopback`] listeners.
pub fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, "test", &loopback()).expect("test configuration")
}

/// What `grpc.health.v1` reports for `service` on `channel`.
pub async fn health(
    channel: &Channel,
    service: &str,
) -> tonic_health::pb::health_check_response::ServingStatus {
    let response = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner();
    tonic_health::pb::health_check_response::ServingStatus::try_from(response.status).unwrap()
}

/// A client of `tollgate`'s admin API.
pub async fn admin(tollgate: &Tollgate) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{}", tollgate.admin_addr))
        .await
        .expect("connect to the admin listener")
}

/// `GetQuota` of `key` on `method path`.
pub async fn quota(
    client: &mut AdminClient<Channel>,
    key: &str,
    method: &str,
    path: &str,
) -> Quota {
    client
        .get_quota(GetQuotaRequest {
            api_key: key.into(),
            method: method.into(),
            path: path.into(),
            ..Default::default()
        })
        .await
        .expect("GetQuota answers")
        .into_inner()
}

/// tollgate serving on a real socket, in this process.
pub struct Tollgate {
    pub addr: SocketAddr,
    /// The admin API's listener.
    pub admin_addr: SocketAddr,
    /// The metrics listener, when metrics are on.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Tollgate {
    pub async fn start(config: Config) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on a given address (to restart on the port an Envoy points at).
    pub async fn start_on(config: Config, addr: SocketAddr) -> Self {
        let listeners = tollgate::server::Listeners {
            ext_authz: tokio::net::TcpListener::bind(addr).await.unwrap(),
            // A port of its own whatever the configuration says, so that tests never meet on
            // the default one.
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            metrics: match config.metrics_listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.unwrap()),
                None => None,
            },
        };
        let addr = listeners.ext_authz.local_addr().unwrap();
        let admin_addr = listeners.admin.local_addr().unwrap();
        let metrics_addr = listeners.metrics.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tollgate::server::run(config, listeners, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            addr,
            admin_addr,
            metrics_addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to tollgate")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Sends the shutdown signal and returns the server task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("not yet shut down")
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Spellings of `/v1/analytics/daily` (limit 30 in the contract) that some upstream routes to the
/// same handler; every one must land in that route's bucket, directly and through Envoy.
pub const ANALYTICS_DAILY_SPELLINGS: &[&str] = &[
    "/v1/analytics/daily",
    "/v1/analytics/daily?from=2026-01-01",
    "/v1/analytics/daily/",
    "//v1//analytics///daily",
    "/V1/ANALYTICS/Daily",
    "/v1/analytics%2Fdaily",
    "/v1/analytics%2fdaily?x=%2F",
    "/v1/analytics%5Cdaily",
    "/v1/%61nalytics/daily",
    "/v1/./analytics/x/../daily",
    "/v1;x/analytics/daily",
    "/v1/analytics/daily;jsessionid=0A1B",
    "/v1/analytics;a=1/daily;b=2/",
    "/v1/analytics/x/..;/daily",
];

/// A `CheckRequest` encoded field by field, for messages no protobuf library builds: header
/// values that are not UTF-8, one map key sent twice.
pub struct WireRequest {
    http: Vec<u8>,
}

impl WireRequest {
    pub fn new(method: &str, path: &str) -> Self {
        let mut http = Vec::new();
        prost::encoding::string::encode(2, &method.to_owned(), &mut http);
        prost::encoding::string::encode(4, &path.to_owned(), &mut http);
        Self { http }
    }

    /// An entry of the `headers` map, as Envoy sends by default.
    pub fn header(mut self, name: &str, value: &[u8]) -> Self {
        let mut entry = Vec::new();
        prost::encoding::bytes::encode(1, &name.as_bytes().to_vec(), &mut entry);
        prost::encoding::bytes::encode(2, &value.to_vec(), &mut entry);
        prost::encoding::bytes::encode(3, &entry, &mut self.http);
        self
    }

    /// `count` empty `headers` entries, two bytes each on the wire: the cheapest flood.
    pub fn empty_headers(mut self, count: usize) -> Self {
        for _ in 0..count {
            self.http.extend_from_slice(&[3 << 3 | 2, 0]);
        }
        self
    }

    /// An entry of `header_map`, as Envoy sends with `encode_raw_headers` (value in `raw_value`).
    pub fn raw_header(mut self, name: &str, value: &[u8]) -> Self {
        let mut header = Vec::new();
        prost::encoding::bytes::encode(1, &name.as_bytes().to_vec(), &mut header);
        prost::encoding::bytes::encode(3, &value.to_vec(), &mut header);
        let mut map = Vec::new();
        prost::encoding::bytes::encode(1, &header, &mut map);
        prost::encoding::bytes::encode(13, &map, &mut self.http);
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let nest = |number: u32, inner: &[u8]| {
            let mut outer = Vec::new();
            prost::encoding::bytes::encode(number, &inner.to_vec(), &mut outer);
            outer
        };
        nest(1, &nest(4, &nest(2, &self.http)))
    }
}

/// What the client of Envoy would see.
#[derive(Debug, Clone)]
pub struct Answer {
    /// 200 for an allowed request (the upstream's status in reality), else the denied status.
    pub status: u16,
    /// Headers tollgate makes Envoy send to the client.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Answer {
    pub fn from_response(response: CheckResponse) -> Self {
        let grpc_code = response.status.as_ref().map_or(0, |s| s.code);
        match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                assert_eq!(grpc_code, 0, "an OK response must carry status 0");
                Self {
                    status: 200,
                    headers: header_map(&ok.response_headers_to_add),
                    body: String::new(),
                }
            }
            Some(HttpResponse::DeniedResponse(denied)) => {
                assert_ne!(
                    grpc_code, 0,
                    "a denied response must carry a non-zero status"
                );
                Self {
                    status: denied.status.map_or(403, |s| s.code as u16),
                    headers: header_map(&denied.headers),
                    body: denied.body,
                }
            }
            other => panic!("unexpected http_response {other:?}"),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn number(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("{name} missing in {self:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in {self:?}"))
    }

    pub fn has_rate_limit_headers(&self) -> bool {
        self.headers.keys().any(|k| k.starts_with("x-ratelimit-"))
    }
}

fn header_map(
    options: &[envoy_types::ext_authz::v3::pb::HeaderValueOption],
) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for option in options {
        let header = option.header.as_ref().expect("header");
        assert!(
            map.insert(header.key.clone(), header.value.clone())
                .is_none(),
            "header {} added twice",
            header.key
        );
    }
    map
}

/// Sends one check and returns what the client would see.
pub async fn check(
    client: &mut AuthorizationClient<Channel>,
    method: &str,
    path: &str,
    api_key: Option<&str>,
) -> Answer {
    let response = client
        .check(envoy_request(method, path, api_key))
        .await
        .expect("tollgate never answers a check with a gRPC error")
        .into_inner();
    Answer::from_response(response)
}

/// Sends a CORS preflight of `path`: `OPTIONS` with `access-control-request-method`, no key.
pub async fn preflight(client: &mut AuthorizationClient<Channel>, path: &str) -> Answer {
    let mut request = envoy_request("OPTIONS", path, None);
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers
            .insert("access-control-request-method".into(), "POST".into());
    }
    let response = client
        .check(request)
        .await
        .expect("tollgate never answers a check with a gRPC error")
        .into_inner();
    Answer::from_response(response)
}

/// Sends `message` as the body of a `Check` call, byte for byte: for messages that no protobuf
/// library would build (truncated, or with text that is not UTF-8).
pub async fn check_raw(
    tollgate: &Tollgate,
    message: Vec<u8>,
) -> Result<CheckResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(tollgate.channel().await);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = ::http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    grpc.unary(tonic::Request::new(message), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// Encodes bytes as they are; decodes `CheckResponse`s.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = CheckResponse;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        *self
    }
    fn decoder(&mut self) -> Self {
        *self
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = CheckResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<CheckResponse>, tonic::Status> {
        use prost::Message;
        CheckResponse::decode(buf)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A key no other test uses.
pub fn unique_key(label: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Sleeps until the given Unix time in ms (plus a margin for the other side's rounding).
pub async fn sleep_until_unix_millis(target: u64) {
    let now = unix_millis();
    if target > now {
        tokio::time::sleep(Duration::from_millis(target - now)).await;
    }
}

/// A Redis store of `url` (one connection, for a standalone server), once it answers.
pub async fn ready_store(
    url: &str,
    topology: tollgate::config::Topology,
    key_prefix: &str,
) -> tollgate::store::RedisStore {
    let settings = tollgate::config::RedisSettings {
        url: url.into(),
        timeout: Duration::from_secs(2),
        connections: 1,
        key_prefix: key_prefix.into(),
        tls_ca: None,
    };
    let store = tollgate::store::RedisStore::new(&settings, topology).unwrap();
    let readiness = tollgate::store::QuotaStore::readiness(&store);
    let ready = tokio::time::timeout(Duration::from_secs(10), readiness.wait());
    assert!(ready.await.expect("redis answers"), "{url}");
    store
}
