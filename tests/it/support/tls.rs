//! An HTTPS target on 127.0.0.1 with a self-signed certificate made when it
//! starts (rcgen): for `WEBHOOK_VERIFY_SSL` and TLS failures. It speaks just
//! enough HTTP/1.1: one request per connection, answered 200 with a JSON
//! body and `Connection: close`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// The answer's body.
pub const TLS_ANSWER: &str = r#"{"via":"tls"}"#;

pub struct TlsTarget {
    pub addr: SocketAddr,
    /// Each request received: its head and body, as text.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// TLS handshakes that failed (the client refused the certificate).
    pub failed_handshakes: Arc<AtomicUsize>,
}

impl TlsTarget {
    pub async fn start() -> TlsTarget {
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
        let cert = key.cert.der().clone();
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
        TlsTarget::start_with(cert, private).await
    }

    /// A target serving `cert` (for 127.0.0.1) with `private`.
    pub async fn start_with(
        cert: rustls::pki_types::CertificateDer<'static>,
        private: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> TlsTarget {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], private)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (reqs, failed) = (requests.clone(), failed_handshakes.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, reqs, failed) = (acceptor.clone(), reqs.clone(), failed.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let Some(request) = read_request(&mut tls).await else {
                        return;
                    };
                    reqs.lock().unwrap().push(request);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{TLS_ANSWER}",
                        TLS_ANSWER.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsTarget {
            addr,
            requests,
            failed_handshakes,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Read one HTTP/1.1 request (head, then `Content-Length` bytes of body).
pub async fn read_request<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A certificate authority made for a test: its PEM, and a target whose
/// certificate for 127.0.0.1 it signed.
pub struct TestCa {
    pub pem: String,
    pub target: TlsTarget,
}

impl TestCa {
    pub async fn start(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("CA");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        TestCa {
            pem: ca.pem(),
            target: TlsTarget::start_with(leaf.der().clone(), private).await,
        }
    }
}
