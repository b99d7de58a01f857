//! Running the service: bind, follow landed notices, serve until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use testlake_schemas::Landed;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::handlers::events::follow;
use crate::routes::router;
use crate::state::{AppState, ServeConfig};

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
    if let Some(notices) = notices {
        follow(Arc::clone(&state), notices, shutdown.clone());
    }
    let stopping = state.stopping.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        stopping.cancel();
    });
    if let Some(bound) = bound {
        let _ = bound.send(addr);
    }
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
