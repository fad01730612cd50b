//! The operator's HTTP endpoints (SPEC §9) on `AGENT_HTTP_PORT`:
//!
//! * `GET /healthz`: 200 while the agent's loops are alive, 503 once one of
//!   them died (the liveness probe then restarts the pod);
//! * `GET /readyz`: 200 once the source is connected and has work assigned
//!   (or is a declared warm standby), otherwise 503 with a JSON reason;
//! * `GET /metrics`: the Prometheus text format.
//!
//! Sources report their state through [`Health`]; the server only reads it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

/// What the probes answer. Shared by the sources (writers) and the server.
#[derive(Debug)]
pub struct Health {
    /// `None` when ready, else why not.
    ready: Mutex<Option<String>>,
    /// Why a loop died, if one did.
    dead: Mutex<Option<String>>,
    stopping: AtomicBool,
    /// Other states that make the agent not ready (Port refusing the
    /// credentials, reports waiting for Port), asked in this order.
    checks: Mutex<Vec<Arc<dyn Readiness>>>,
}

/// A state that makes the agent not ready while it lasts.
pub trait Readiness: Send + Sync + std::fmt::Debug {
    /// Why the agent is not ready now, if this state says it is not.
    fn not_ready(&self) -> Option<String>;
}

impl Health {
    /// Not ready yet, for `reason`.
    pub fn new(reason: impl Into<String>) -> Arc<Health> {
        Arc::new(Health {
            ready: Mutex::new(Some(reason.into())),
            dead: Mutex::new(None),
            stopping: AtomicBool::new(false),
            checks: Mutex::new(Vec::new()),
        })
    }

    /// Say "not ready", with its reason, while `check` says so (after the
    /// checks watched before it).
    pub fn watch(&self, check: Arc<dyn Readiness>) {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).push(check);
    }

    /// The source is connected and has work (or is a declared standby).
    pub fn set_ready(&self) {
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The source cannot work right now, for `reason`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.into());
    }

    /// Shutdown started: stay alive while draining, but take no new work.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// A loop the agent needs ended unexpectedly.
    pub fn loop_died(&self, what: impl Into<String>) {
        *self.dead.lock().unwrap_or_else(|e| e.into_inner()) = Some(what.into());
    }

    /// `Ok` when ready, else the reason.
    pub fn readiness(&self) -> Result<(), Unavailable> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(Unavailable(
                "shutting down: draining in-flight messages".to_string(),
            ));
        }
        let checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = checks.iter().find_map(|c| c.not_ready()) {
            return Err(Unavailable(reason));
        }
        drop(checks);
        match self.ready.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(reason) => Err(Unavailable(reason)),
            None => Ok(()),
        }
    }

    /// `Ok` while alive, else what died.
    pub fn liveness(&self) -> Result<(), Unavailable> {
        match &*self.dead.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(what) => Err(Unavailable(what.clone())),
            None => Ok(()),
        }
    }
}

/// Why a probe answers 503: the reason in its JSON body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
}

fn probe(result: Result<(), Unavailable>) -> Response {
    let (status, body) = match result {
        Ok(()) => (StatusCode::OK, json!({"status": "ok"})),
        Err(Unavailable(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "reason": reason}),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn healthz(State(s): State<Shared>) -> Response {
    probe(s.health.liveness())
}

async fn readyz(State(s): State<Shared>) -> Response {
    probe(s.health.readiness())
}

async fn metrics(State(s): State<Shared>) -> Response {
    match &s.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

/// Bind `addr` (so a taken port fails start-up with a clear error) and
/// serve the endpoints in the background until the process exits; they
/// keep answering during the drain.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics_handle: Option<PrometheusHandle>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if let Some(handle) = &metrics_handle {
        // Histograms keep recent samples until upkeep folds them in.
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Shared {
            health,
            metrics: metrics_handle,
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the health and metrics server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_source_and_shutdown() {
        let h = Health::new("waiting for a partition assignment");
        assert_eq!(
            h.readiness(),
            Err(Unavailable("waiting for a partition assignment".to_string()))
        );
        h.set_ready();
        assert_eq!(h.readiness(), Ok(()));
        h.set_not_ready("no Kafka broker reachable");
        assert_eq!(
            h.readiness(),
            Err(Unavailable("no Kafka broker reachable".to_string()))
        );
        h.set_ready();
        h.set_stopping();
        assert!(h.readiness().is_err_and(|r| r.0.starts_with("shutting down")));
        assert_eq!(h.liveness(), Ok(()), "draining is still alive");
        h.loop_died("the offset commit loop stopped");
        assert_eq!(
            h.liveness(),
            Err(Unavailable("the offset commit loop stopped".to_string()))
        );
    }
}
