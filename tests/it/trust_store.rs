//! `SSL_CERT_FILE` adds to the system's trust store; it never replaces it
//! (issue 12, item 4), through the built binary in polling mode.
//!
//! The "system trust store" is made for the test: the agent runs in a mount
//! namespace of its own (`unshare -m`, as root, which the test set-up is)
//! where a file holding CA "system" is bind-mounted over
//! `/etc/ssl/certs/ca-certificates.crt`. Nothing outside that process sees
//! it. `SSL_CERT_FILE` names CA "private". A target signed by each must both
//! be reached: before the fix, `SSL_CERT_FILE` became the only roots and the
//! "system" target failed with `UnknownIssuer`.

use std::time::Duration;

use crate::support::agent::*;
use crate::support::broker::AgentProcess;
use crate::support::tls::TestCa;
use crate::support::FakePort;
use serde_json::json;

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_cert_file_adds_to_the_system_roots_instead_of_replacing_them() {
    let port = FakePort::start().await;
    let (system, private) = (
        TestCa::start("system CA").await,
        TestCa::start("private CA").await,
    );
    let dir = std::env::temp_dir();
    let fake_system = dir.join(format!("system-roots-{}.pem", std::process::id()));
    let private_file = dir.join(format!("private-ca-{}.pem", std::process::id()));
    std::fs::write(&fake_system, &system.pem).expect("write the fake system roots");
    std::fs::write(&private_file, &private.pem).expect("write the private CA");
    offer(
        &port,
        [
            claimable("r_system", &system.target.url("/hook"), true, json!({})),
            claimable("r_private", &private.target.url("/hook"), true, json!({})),
        ],
    );
    let private_path = private_file.display().to_string();
    let env = polling_env(
        &port,
        "trust-store",
        &json!([{"enabled": true}]),
        &[
            ("SSL_CERT_FILE", &private_path),
            ("AGENT_RETRY_MAX_ATTEMPTS", "1"),
        ],
    );
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_port-agent"));
    // unshare -m sh -c 'mount --bind FAKE SYSTEM_BUNDLE && exec "$0" "$@"' BIN run
    let script = format!(
        "mount --bind '{}' {SYSTEM_BUNDLE} && exec \"$0\" \"$@\"",
        fake_system.display()
    );
    let agent =
        AgentProcess::start_wrapped(&["unshare", "-m", "sh", "-c", &script], &bin, &env, "trust-store");
    wait_until(Duration::from_secs(30), "both reports", &agent, || {
        !patches_of(&port, "r_system").is_empty() && !patches_of(&port, "r_private").is_empty()
    });
    stop(agent);
    for run in ["r_system", "r_private"] {
        assert_eq!(
            patches_of(&port, run),
            vec![json!({"status": "SUCCESS"})],
            "{run}: reached through the system roots and the added CA alike"
        );
    }
    assert_eq!(system.target.requests().len(), 1);
    assert_eq!(private.target.requests().len(), 1);
    // The namespace was the agent's alone.
    assert_ne!(
        std::fs::read_to_string(SYSTEM_BUNDLE).unwrap_or_default(),
        system.pem
    );
}

/// With the machine's real trust store (hundreds of public roots) and a
/// private CA in `SSL_CERT_FILE`, the clients build and the private target
/// is reached: every root of the system bundle is usable by rustls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_system_bundle_and_a_private_ca_build_a_working_client() {
    let port = FakePort::start().await;
    let private = TestCa::start("private CA").await;
    let private_file = std::env::temp_dir().join(format!("private-ca-real-{}.pem", std::process::id()));
    std::fs::write(&private_file, &private.pem).expect("write the private CA");
    offer(
        &port,
        [claimable("r_real", &private.target.url("/hook"), true, json!({}))],
    );
    let private_path = private_file.display().to_string();
    let agent = start_polling(
        &port,
        "trust-store-real",
        &json!([{"enabled": true}]),
        &[("SSL_CERT_FILE", &private_path)],
    );
    wait_until(Duration::from_secs(30), "the report", &agent, || {
        !patches_of(&port, "r_real").is_empty()
    });
    stop(agent);
    assert_eq!(patches_of(&port, "r_real"), vec![json!({"status": "SUCCESS"})]);
    assert!(
        std::fs::metadata(SYSTEM_BUNDLE).is_ok_and(|m| m.len() > 10_000),
        "this machine has a system bundle at {SYSTEM_BUNDLE}"
    );
}
