//! A forward proxy on 127.0.0.1 that records what it was asked for: plain
//! HTTP requests in absolute form (`POST http://host/path`) are sent on to
//! the host, `CONNECT host:port` is tunnelled. A name can be routed to a
//! local address, so a URL whose host cannot resolve (`*.invalid`) still
//! reaches a local server, but only through the proxy.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tls::read_request;

pub struct Proxy {
    pub addr: SocketAddr,
    /// The request line of each request: `POST http://h/p HTTP/1.1` or
    /// `CONNECT h:443 HTTP/1.1`.
    pub seen: Arc<Mutex<Vec<String>>>,
    routes: Arc<Mutex<HashMap<String, SocketAddr>>>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let routes: Arc<Mutex<HashMap<String, SocketAddr>>> = Arc::default();
        let (s, r) = (seen.clone(), routes.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(handle(client, s.clone(), r.clone()));
            }
        });
        Proxy { addr, seen, routes }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Send requests for `authority` (`host:port`) to `to`.
    pub fn route(&self, authority: &str, to: SocketAddr) {
        self.routes.lock().unwrap().insert(authority.to_string(), to);
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    mut client: TcpStream,
    seen: Arc<Mutex<Vec<String>>>,
    routes: Arc<Mutex<HashMap<String, SocketAddr>>>,
) {
    let Some(request) = read_request(&mut client).await else {
        return;
    };
    let line = request.lines().next().unwrap_or_default().to_string();
    seen.lock().unwrap().push(line.clone());
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (authority, path) = if method == "CONNECT" {
        (target.to_string(), String::new())
    } else {
        let rest = target.strip_prefix("http://").unwrap_or(target);
        let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let auth = if auth.contains(':') {
            auth.to_string()
        } else {
            format!("{auth}:80")
        };
        (auth, if path.is_empty() { "/".into() } else { path.into() })
    };
    let to = routes.lock().unwrap().get(&authority).copied();
    let upstream = match to {
        Some(addr) => TcpStream::connect(addr).await,
        None => TcpStream::connect(authority.as_str()).await,
    };
    let Ok(mut upstream) = upstream else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    };
    if method == "CONNECT" {
        let _ = client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await;
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }
    // One request per connection: origin form, and the upstream closes
    // after its answer, which is passed back as it is.
    let (head, body) = request.split_once("\r\n\r\n").unwrap_or((&request, ""));
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for h in head.lines().skip(1) {
        let name = h.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if name != "connection" && name != "proxy-connection" {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("connection: close\r\n\r\n");
    out.push_str(body);
    if upstream.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    let mut answer = Vec::new();
    let _ = upstream.read_to_end(&mut answer).await;
    let _ = client.write_all(&answer).await;
    let _ = client.shutdown().await;
}
