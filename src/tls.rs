//! The trusted roots: the platform's trust store plus an optional CA bundle
//! (`SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE`), for the HTTP clients
//! ([`crate::http::build_client`]) and for librdkafka ([`merged_ca_file`]).
//!
//! The bundle *adds* to the system's roots, never replaces them. That takes
//! care: the platform verifier (through `rustls-native-certs`) and OpenSSL
//! inside librdkafka both read `SSL_CERT_FILE` as "these roots *instead*".
//! So with a bundle, the clients trust exactly the system bundle file (read
//! from its well-known place, whatever the environment says) plus the
//! bundle's certificates, and librdkafka gets the same set as one file
//! ([`merged_ca_file`]).

/// The CA bundle cannot be read, parsed or merged.
#[derive(Debug, thiserror::Error)]
#[error("cannot use CA bundle {path}: {reason}")]
pub struct CaBundleError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// Where distributions keep the system's CA bundle, most common first.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's roots (the first bundle file found, or none) followed by
/// the certificates of the bundle at `path`, as PEM.
pub(crate) fn trusted_pem(path: &str) -> Result<Vec<u8>, CaBundleError> {
    let err = |reason: String| CaBundleError {
        path: path.to_string(),
        reason,
    };
    let extra = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let parsed = reqwest::Certificate::from_pem_bundle(&extra).map_err(|e| err(e.to_string()))?;
    if parsed.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    let mut pem = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    if !pem.is_empty() && !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
    pem.extend_from_slice(&extra);
    Ok(pem)
}

/// The system's roots plus the bundle at `path`, written to one PEM file
/// (in the temporary directory) for librdkafka's `ssl.ca.location`.
pub fn merged_ca_file(path: &str) -> Result<std::path::PathBuf, CaBundleError> {
    let pem = trusted_pem(path)?;
    let out = std::env::temp_dir().join(format!("port-agent-ca-{}.pem", std::process::id()));
    std::fs::write(&out, pem).map_err(|e| CaBundleError {
        path: path.to_string(),
        reason: format!("cannot write the merged CA file {}: {e}", out.display()),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBVzCB/qADAgECAhRxVCc6F6EV5SZ2mTm3wHNDhTz3FDAKBggqhkjOPQQDAjAU\nMRIwEAYDVQQDDAl0ZXN0LXJvb3QwHhcNMjQwMTAxMDAwMDAwWhcNMzQwMTAxMDAw\nMDAwWjAUMRIwEAYDVQQDDAl0ZXN0LXJvb3QwWTATBgcqhkjOPQIBBggqhkjOPQMB\nBwNCAAQ3t3Zl7eN6UQ0Z1pQnKr1b3j8o0J6Yq5r0gq9iQm8rA6b0wCq9F0oD1j5s\nY2VfZ0i0o0XfB3Sx8hM2tq1pYQ4yoyAwHjAPBgNVHRMBAf8EBTADAQH/MAsGA1Ud\nDwQEAwIBBjAKBggqhkjOPQQDAgNIADBFAiEA2mC7r0d7tq3l2xk3QXQ1W0m2ZxT7\nZ8rG5yJbWf3YtX0CIB8R6d3p7wB2bWm0o4iN3u0w5fQv1x8j7y5rJ3Z1b3Xz\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_bundle_comes_after_the_system_roots() {
        let dir = std::env::temp_dir();
        let bundle = dir.join(format!("tls-unit-{}.pem", std::process::id()));
        std::fs::write(&bundle, CERT).expect("write");
        let merged = trusted_pem(&bundle.display().to_string()).expect("a bundle");
        let system = SYSTEM_BUNDLES
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .unwrap_or_default();
        assert!(merged.starts_with(&system), "the system roots come first");
        assert!(merged.ends_with(CERT.as_bytes()), "then the bundle");
        let file = merged_ca_file(&bundle.display().to_string()).expect("written");
        assert_eq!(std::fs::read(file).expect("read"), merged);
    }

    #[test]
    fn a_bundle_without_certificates_is_refused_with_its_path() {
        let empty = std::env::temp_dir().join(format!("tls-unit-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate").expect("write");
        let path = empty.display().to_string();
        let e = trusted_pem(&path).expect_err("refused").to_string();
        assert_eq!(
            e,
            format!("cannot use CA bundle {path}: no PEM certificate in the file")
        );
        let e = trusted_pem("/nonexistent/ca.pem")
            .expect_err("refused")
            .to_string();
        assert!(e.starts_with("cannot use CA bundle /nonexistent/ca.pem: "), "{e}");
    }
}
