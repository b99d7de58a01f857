//! `GET /api/v1/events`, and what feeds it: [`follow`] applies landed notices (invalidate the
//! cached answers they cover, tell dashboards, check pass-rate alerts); [`events`] streams what
//! dashboards are told as Server-Sent Events. What is told, and when alerts fire: [`crate::live`].

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::on;
use chrono::{NaiveDate, Utc};
use futures::Stream;
use serde::Deserialize;
use testlake_schemas::{Landed, Table};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::endpoint::{Endpoint, Method, Param, REPOSITORY};
use crate::error::ApiError;
use crate::frame::date_text;
use crate::live::{AlertTracker, LiveEvent};
use crate::state::AppState;

pub const EVENTS: Endpoint = Endpoint {
    method: Method::Get,
    path: "/api/v1/events",
    summary: "Server-Sent Events: ready, update (a landed notice), alert (pass rate below threshold), resync.",
    params: &[Param::text("tables", "Comma-separated tables whose updates to send (default all)."), REPOSITORY],
    formats: false,
    handler: |method| on(method, events),
    cache_key: None,
};

/// Applies notices until `shutdown`: invalidate, push, check alerts.
pub fn follow(state: Arc<AppState>, mut notices: broadcast::Receiver<Landed>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut alerts = AlertTracker::default();
        loop {
            let notice = tokio::select! {
                () = shutdown.cancelled() => break,
                notice = notices.recv() => notice,
            };
            match notice {
                Ok(notice) => {
                    debug!(table = %notice.table, date = %notice.date, "invalidating");
                    state.cache.invalidate(&notice);
                    let daily = notice.table == Table::TrendsDaily && notice.date == Utc::now().date_naive();
                    let date = notice.date;
                    let _ = state.live.send(LiveEvent::Update(notice));
                    if daily {
                        check_alerts(&state, date, &mut alerts).await;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Which answers the missed notices covered is unknown: drop them all.
                    warn!(missed, "missed landed notices; invalidating every cached answer");
                    state.cache.invalidate_all("missed_notices");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

async fn check_alerts(state: &AppState, date: NaiveDate, alerts: &mut AlertTracker) {
    if state.alerts.pass_rate_below.is_none() {
        return; // alerts are off: no need to read the rates
    }
    let rates = match daily_pass_rates(state, date).await {
        Ok(rates) => rates,
        Err(e) => {
            warn!(error = %e, %date, "could not check pass-rate alerts");
            return;
        }
    };
    for alert in alerts.check(&state.alerts, date, rates) {
        warn!(?alert, "pass rate below threshold");
        let _ = state.live.send(LiveEvent::Alert(alert));
    }
}

/// (repository, passed, passed + failed) on `date`, from `trends_daily`.
async fn daily_pass_rates(state: &AppState, date: NaiveDate) -> Result<Vec<(String, i64, i64)>, ApiError> {
    use arrow::array::AsArray;
    let ctx = testlake_compute::catalog::lake_session(&state.lake).await?;
    let sql = format!(
        "SELECT repository, CAST(sum(passed) AS BIGINT), CAST(sum(passed + failed) AS BIGINT)
         FROM trends_daily WHERE date = '{}' GROUP BY repository",
        date_text(date)
    );
    let mut out = Vec::new();
    for batch in ctx.sql(&sql).await?.collect().await? {
        let repository = batch.column(0).as_string::<i32>();
        let passed = batch.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        let executions = batch.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        for row in 0..batch.num_rows() {
            out.push((repository.value(row).to_owned(), passed.value(row), executions.value(row)));
        }
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Comma-separated tables whose updates to send (default: every table).
    pub tables: Option<String>,
    /// Only alerts of this repository.
    pub repository: Option<String>,
}

/// `GET /api/v1/events`: Server-Sent Events. `ready` once subscribed, then `update` (a landed
/// notice: table, date, hour, files, rows) and `alert` events; `resync` when this client fell
/// behind and should refetch everything. At most `max_subscribers` streams at once: past that,
/// a 503 (each stream holds a place until its client goes).
pub async fn events(
    State(state): State<Arc<AppState>>,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let place = Arc::clone(&state.subscribers)
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManySubscribers(state.limits.max_subscribers))?;
    let rx = state.live.subscribe();
    let tables: Option<Vec<String>> =
        q.tables.map(|t| t.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect());
    let ready = futures::stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    let updates = futures::stream::unfold((rx, tables, q.repository), |(mut rx, tables, repository)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(LiveEvent::Update(notice)) => {
                    if tables.as_ref().is_some_and(|t| !t.iter().any(|name| name == notice.table.name())) {
                        continue;
                    }
                    Event::default().event("update").data(serde_json::to_string(&notice).expect("json"))
                }
                Ok(LiveEvent::Alert(alert)) => {
                    if repository.as_ref().is_some_and(|r| *r != alert.repository) {
                        continue;
                    }
                    Event::default().event("alert").data(serde_json::to_string(&alert).expect("json"))
                }
                Err(broadcast::error::RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok(event), (rx, tables, repository)));
        }
    });
    let stream = futures::StreamExt::take_until(
        futures::StreamExt::chain(ready, updates),
        state.stopping.clone().cancelled_owned(),
    );
    let stream = futures::StreamExt::map(stream, move |event| {
        let _held = &place; // the place is given back when the stream is dropped
        event
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
