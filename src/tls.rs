//! HTTP clients for targets and for Port, built one way: rustls with the
//! `ring` provider, the platform's trust store plus an optional CA bundle
//! (`SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE`), proxies from `HTTP_PROXY`,
//! `HTTPS_PROXY` and `NO_PROXY` (reqwest reads them itself).

use std::time::Duration;

/// A client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA bundle cannot be read or parsed.
    #[error("cannot use CA bundle {path}: {reason}")]
    CaBundle {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// reqwest refused the configuration.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// How to build a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Timeout of one request, connect included.
    pub timeout: Duration,
    /// Verify server certificates.
    pub verify_tls: bool,
    /// Extra trusted CA certificates (PEM file).
    pub ca_bundle: Option<String>,
    /// Idle connections kept per host.
    pub pool_idle_per_host: usize,
}

/// Build a client.
pub fn build_client(opts: &ClientOptions) -> Result<reqwest::Client, ClientError> {
    // Installing twice is harmless; the first provider stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("port-agent/", env!("CARGO_PKG_VERSION")))
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(opts.pool_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        // Never followed by reqwest: Port's API gets no redirect (a 3xx is
        // an error, and the client secret is never posted again elsewhere);
        // target redirects are followed by the invoker, by its policy.
        .redirect(reqwest::redirect::Policy::none());
    if !opts.verify_tls {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(path) = &opts.ca_bundle {
        let err = |reason: String| ClientError::CaBundle {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| ClientError::Build(e.to_string()))
}
