//! Running the service: bind (HTTP, and PostgreSQL's wire protocol when asked: `pg`), follow
//! landed notices, watch that the lake answers (the `serve` component's health), serve until
//! shutdown.
//!
//! Connections are served by hyper directly (what `axum::serve` does, plus two bounds it has no
//! setting for): at most `max_connections` at once — the next client waits in the listen backlog
//! until one closes — and a client must send a request's headers within `header_read_timeout`,
//! so neither idle nor trickling connections hold a place for long.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use testlake_schemas::Landed;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::handlers::events::follow;
use crate::pg::PgListener;
use crate::routes::router;
use crate::state::{AppState, ServeConfig, ServeLimits};

/// Binds `listen` and serves until `shutdown`, applying `notices` to the cache and pushing them
/// to dashboards. Returns the bound address through `bound`.
pub async fn serve(
    config: ServeConfig,
    state: Arc<AppState>,
    notices: Option<broadcast::Receiver<Landed>>,
    shutdown: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    if let Some(pg) = &config.pg {
        let pg = PgListener::bind(pg).await.map_err(std::io::Error::other)?;
        tokio::spawn(pg.serve(Arc::clone(&state), shutdown.clone()));
    }
    if let Some(notices) = notices {
        follow(Arc::clone(&state), notices, shutdown.clone());
    }
    let (watched, stop) = (Arc::clone(&state), shutdown.clone());
    tokio::spawn(async move { watched.lake_watch.watch(&watched.lake, stop.cancelled()).await });
    let stopping = state.stopping.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        stopping.cancel();
    });
    if let Some(bound) = bound {
        let _ = bound.send(addr);
    }
    accept(listener, router(state), &config.limits, shutdown).await;
    Ok(())
}

/// Serves each accepted connection on its own task, holding one of `max_connections` permits;
/// on `shutdown`, stops accepting, lets each connection finish its request, and waits for all.
async fn accept(listener: TcpListener, app: Router, limits: &ServeLimits, shutdown: CancellationToken) {
    let places = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let open = Arc::new(Semaphore::new(places as usize));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    while let Some((stream, permit)) = next_connection(&listener, &open, &shutdown).await {
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut connection = pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    let _all_closed = open.acquire_many(places).await;
}

/// The next accepted connection and the permit it holds (one of `open`'s), waiting for a permit
/// first; `None` once `shutdown` is cancelled. A failed accept (out of file descriptors, a
/// connection reset before it was accepted) is logged and retried after 50 ms.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    open: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        () = shutdown.cancelled() => return None,
        permit = Arc::clone(open).acquire_owned() => permit.expect("the semaphore is never closed"),
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => return Some((stream, permit)),
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
