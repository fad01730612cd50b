//! The fake Port API ([`FakePort`]) and the fake target ([`FakeTarget`]):
//! real HTTP servers on 127.0.0.1 that record every call ([`Recorded`]) and
//! can be told to fail.

mod port;
mod target;

pub use port::{FakePort, PortState};
pub use target::{Answer, FakeTarget, TargetState};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::Value;

/// A fake server: where it listens and its state (what it saw, how it is
/// told to answer).
pub struct Fake<S> {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw and how it answers.
    pub state: Arc<S>,
}

impl<S> Clone for Fake<S> {
    fn clone(&self) -> Self {
        Fake {
            addr: self.addr,
            state: self.state.clone(),
        }
    }
}

/// One request a fake server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Its headers, in order.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// The status the fake answered.
    pub status: u16,
    /// When it arrived (comparable across the fakes of one test).
    pub at: Instant,
}

impl Recorded {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
}

/// A [`Recorded`] of a request answered `status`, arrived now.
fn record(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes, status: u16) -> Recorded {
    Recorded {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
        status,
        at: Instant::now(),
    }
}

/// Serve `router` on a free port of 127.0.0.1; its address.
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}
