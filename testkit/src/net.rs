//! Ports on 127.0.0.1 and a plain HTTP/1.1 `GET`.

use std::io::{Read, Write};
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound, then released), or the error of
/// the bind.
pub fn try_free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A free TCP port on 127.0.0.1; panics when none can be bound.
pub fn free_port() -> u16 {
    try_free_port().expect("bind a free port on 127.0.0.1")
}

/// A TCP port on 127.0.0.1 where nothing listens (a free port nobody
/// takes: connections to it are refused).
pub fn closed_port() -> u16 {
    free_port()
}

/// `GET http://{addr}{path}` with a plain HTTP/1.1 client; the status and
/// body (the agent's health server is plain HTTP on 127.0.0.1). `None` while
/// nothing listens there.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_port_refuses_connections() {
        let port = closed_port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        assert_eq!(http_get(&format!("127.0.0.1:{port}"), "/"), None);
    }
}
