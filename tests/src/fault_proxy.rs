//! A fault-injecting HTTP proxy on 127.0.0.1 between testlake and an S3 server: the faults of a
//! real object store as the client sees them on the wire — throttling (`503 SlowDown`), requests
//! that time out (held past the client's timeout, then delivered anyway, so the write lands
//! late), responses lost after the write landed, a store that is down (connections refused,
//! open ones cut), and a store that ignores conditional headers.
//!
//! Every request goes to the server over a fresh connection with its headers unchanged (the
//! `Host` the client signed included).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{IF_MATCH, IF_NONE_MATCH};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which requests fail, counted over all requests through the proxy (`0` disables a fault).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyFaults {
    /// Every n-th request is answered `503 SlowDown` (S3's throttling) without reaching the server.
    pub slow_down_every: u64,
    /// Every n-th request is held for `hold` (longer than the client's timeout), then sent to
    /// the server all the same: the client gave up, the write lands later.
    pub timeout_every: u64,
    pub hold: Duration,
    /// Every n-th request reaches the server, and the connection is cut instead of answering.
    pub lose_response_every: u64,
    /// `If-None-Match` and `If-Match` are removed: a store that ignores conditional writes (the
    /// server must not check signatures: moto).
    pub strip_conditions: bool,
}

fn hits(n: u64, every: u64) -> bool {
    every > 0 && n % every == every - 1
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<ProxyFaults>,
    requests: AtomicU64,
    injected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Shared {
    fn count(&self, fault: &'static str) {
        *self.injected.lock().expect("lock").entry(fault).or_default() += 1;
    }
}

/// The proxy, listening on its own port until dropped.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    down: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to the server on 127.0.0.1:`upstream`, injecting nothing yet.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream)),
            faults: Mutex::new(ProxyFaults::default()),
            requests: AtomicU64::new(0),
            injected: Mutex::new(BTreeMap::new()),
        });
        let (down, down_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, port, Arc::clone(&shared), down_rx));
        Self { port, shared, down, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_faults(&self, faults: ProxyFaults) {
        *self.shared.faults.lock().expect("lock") = faults;
    }

    /// Down: the port refuses connections and open connections are cut. Up: it listens again.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// Requests seen so far (answered, failed or refused by a fault).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// How many times each fault was injected (`slow_down`, `timeout`, `lost_response`).
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.shared.injected.lock().expect("lock").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(mut listener: TcpListener, port: u16, shared: Arc<Shared>, mut down: watch::Receiver<bool>) {
    loop {
        let up = CancellationToken::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    tokio::spawn(serve_connection(stream, Arc::clone(&shared), up.child_token()));
                }
                _ = down.wait_for(|down| *down) => break,
            }
        }
        // Down: cut every open connection, refuse new ones.
        up.cancel();
        drop(listener);
        if down.wait_for(|down| !*down).await.is_err() {
            return;
        }
        listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, cut: CancellationToken) {
    let service = hyper::service::service_fn(move |request| handle(request, Arc::clone(&shared)));
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = cut.cancelled() => {}
    }
}

async fn handle(request: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, BoxError> {
    let n = shared.requests.fetch_add(1, Ordering::SeqCst);
    let faults = *shared.faults.lock().expect("lock");
    if hits(n, faults.slow_down_every) {
        shared.count("slow_down");
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        let response = Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/xml")
            .body(Full::new(Bytes::from_static(body.as_bytes())))?;
        return Ok(response);
    }
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    if faults.strip_conditions {
        parts.headers.remove(IF_NONE_MATCH);
        parts.headers.remove(IF_MATCH);
    }
    let held = hits(n, faults.timeout_every).then_some(faults.hold);
    // On its own task: a held request reaches the server even after its client has gone.
    let upstream = shared.upstream;
    let forwarded = tokio::spawn(async move {
        if let Some(hold) = held {
            tokio::time::sleep(hold).await;
        }
        forward(upstream, Request::from_parts(parts, Full::new(body))).await
    });
    if held.is_some() {
        shared.count("timeout");
        let _ = forwarded.await;
        return Err("held past the client's timeout".into());
    }
    let response = forwarded.await??;
    if hits(n, faults.lose_response_every) {
        shared.count("lost_response");
        return Err("response lost".into());
    }
    Ok(response)
}

async fn forward(upstream: SocketAddr, request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
