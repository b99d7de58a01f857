//! The PostgreSQL wire protocol: `psql`, `psycopg`, Grafana's PostgreSQL data source, Metabase
//! and any BI tool that speaks PostgreSQL query the lake through the same session as
//! `POST /api/v1/sql` (`crate::sql`).
//!
//! What is the same as the HTTP endpoint, by construction: each statement runs on a fresh
//! [`crate::sql::session`] (the committed files only, the same tables, `duplicates` included)
//! through the service's one [`crate::sql::SqlEngine`], so the same refusals (queries only), the
//! same shape checks, memory pool, timeout, row cap and concurrency slots apply, shared with the
//! HTTP clients. The password is the service's API token (`--api-token`); without one, any
//! password is accepted, as the HTTP API is open then.
//!
//! What PostgreSQL clients need besides (`local`): they open with `SET`, `SHOW` and transactions
//! (`BEGIN` … `COMMIT`, which psycopg sends around every query by default), which the connection
//! answers itself without touching the lake (a read-only lake has nothing to commit), and they
//! read `pg_catalog` to list tables and columns, which `datafusion-pg-catalog` provides over the
//! session's own tables. Its SQL rewriter turns PostgreSQL-only syntax (`'t'::regclass`,
//! `current_setting(…)`, `(…)[1]`) into what DataFusion plans.
//!
//! How answers travel: a statement's answer (at most `max_rows` rows; a NOTICE says when rows were
//! cut off) is encoded as PostgreSQL rows before it is sent, and its slot is given back then, so a
//! client reading slowly, or leaving a portal suspended, holds no slot.
//!
//! What is left out: `COPY`, cancel requests (the statement timeout stops long statements), SCRAM
//! (the token travels as a cleartext password: use TLS, `--pg-tls-cert`/`--pg-tls-key`, beyond
//! the local machine).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use testlake_schemas::observe::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::http::latency_histogram;
use crate::serve::next_connection;
use crate::state::AppState;

mod catalog;
mod handlers;
mod local;

/// The protocol's metrics, on the service's `/metrics` (zero while it is not served).
#[derive(Debug)]
pub struct PgMetrics {
    connections: Gauge,
    statements: Family<Outcome, Counter>,
    duration: Histogram,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `00000` for success, else the SQLSTATE the client was sent.
    sqlstate: String,
}

impl Default for PgMetrics {
    fn default() -> Self {
        Self { connections: Gauge::default(), statements: Family::default(), duration: latency_histogram() }
    }
}

impl PgMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("testlake_pg_connections", "PostgreSQL connections open", self.connections.clone());
        registry.register(
            "testlake_pg_statements",
            "PostgreSQL statements by SQLSTATE (00000: success)",
            self.statements.clone(),
        );
        registry.register(
            "testlake_pg_statement_duration_seconds",
            "PostgreSQL statements' time to their answer",
            self.duration.clone(),
        );
    }

    /// A statement answered (`00000`) or refused with the SQLSTATE its client was sent.
    fn answered<T>(&self, answer: &pgwire::error::PgWireResult<T>, seconds: f64) {
        let sqlstate = match answer {
            Ok(_) => "00000".to_owned(),
            Err(pgwire::error::PgWireError::UserError(info)) => info.code.clone(),
            Err(_) => "XX000".to_owned(),
        };
        self.statements.get_or_create(&Outcome { sqlstate }).inc();
        self.duration.observe(seconds);
    }
}

/// Where the PostgreSQL protocol listens, and with which certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct PgConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: with both, clients may (and `sslmode=require`
    /// clients will) switch to TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL listener on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
    #[error("PostgreSQL catalog: {0}")]
    Catalog(#[from] datafusion::error::DataFusionError),
}

/// A bound PostgreSQL listener, ready to serve.
pub struct PgListener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    catalog: Arc<catalog::PgCatalog>,
}

impl PgListener {
    /// Binds `config.listen` and loads its certificate: a bad certificate fails here, at start,
    /// never by silently serving without TLS.
    pub async fn bind(config: &PgConfig) -> Result<Self, PgError> {
        let tls = config.tls.as_ref().map(|(cert, key)| acceptor(cert, key)).transpose()?;
        let listener = TcpListener::bind(config.listen).await.map_err(|e| PgError::Bind(config.listen, e))?;
        Ok(Self { listener, tls, catalog: Arc::new(catalog::PgCatalog::new()?) })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until `shutdown`: at most `state.limits.max_connections` at once (more
    /// wait in the listen backlog), each on its own task; on shutdown, open connections are
    /// dropped (a statement in flight is aborted with its connection).
    pub async fn serve(self, state: Arc<AppState>, shutdown: CancellationToken) {
        let handlers = Arc::new(handlers::Handlers::new(state.clone(), self.catalog));
        let open = Arc::new(Semaphore::new(state.limits.max_connections.max(1)));
        tracing::info!(addr = ?self.listener.local_addr().ok(), tls = self.tls.is_some(), "serving PostgreSQL");
        while let Some((socket, permit)) = next_connection(&self.listener, &open, &shutdown).await {
            let (handlers, tls, stop) = (Arc::clone(&handlers), self.tls.clone(), shutdown.clone());
            let metrics = Arc::clone(&state.pg);
            tokio::spawn(async move {
                let _permit = permit;
                metrics.connections.inc();
                tokio::select! {
                    result = pgwire::tokio::process_socket(socket, tls, handlers) => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "PostgreSQL connection ended");
                        }
                    }
                    () = stop.cancelled() => {}
                }
                metrics.connections.dec();
            });
        }
    }
}

/// A TLS acceptor from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, PgError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PgError::Tls(format!("reading certificates from {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(PgError::Tls(format!("no certificate in {}", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| PgError::Tls(format!("reading a private key from {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| PgError::Tls(format!("certificate and key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests;
