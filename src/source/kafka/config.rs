//! How the Kafka source reaches and consumes its topics: [`KafkaOptions`],
//! the librdkafka client and consumer configuration built from them, and
//! where the brokers and credentials come from (SPEC §2.1).

use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

use super::commit::COMMIT_TICK;
use crate::secret::Secret;
use crate::settings::{KafkaSettings, LimitSettings};

/// The longest wait for a commit's answer (see [`KafkaOptions::commit_timeout`]).
const MAX_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// How to reach and consume the topics: the Kafka settings, where the
/// brokers are (resolved from the settings or Port, [`resolve_options`])
/// and the runner's limits.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `KAFKA_*`, `AGENT_DLQ_TOPIC`, `AGENT_CRASH_LOOP_LIMIT`.
    pub settings: KafkaSettings,
    /// The brokers and the agent's credentials.
    pub connection: Connection,
    /// `AGENT_MAX_IN_FLIGHT`, `AGENT_DRAIN_TIMEOUT_SECONDS`.
    pub limits: LimitSettings,
    /// How often a moved watermark is committed when nothing else
    /// triggers a commit.
    pub commit_interval: Duration,
}

/// Where the brokers are and who the agent is to them.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// `sasl.username`.
    pub username: Option<String>,
    /// `sasl.password`.
    pub password: Option<Secret>,
    /// Extra librdkafka properties (the merged CA file; tests).
    pub extra: Vec<(String, String)>,
}

impl Connection {
    /// Brokers without credentials.
    pub fn to(brokers: &str) -> Connection {
        Connection {
            brokers: brokers.to_string(),
            ..Connection::default()
        }
    }
}

impl KafkaOptions {
    /// The topics consumed: runs and change log.
    pub fn topics(&self) -> [&str; 2] {
        [&self.settings.runs_topic, &self.settings.change_log_topic]
    }

    /// The longest wait for a commit's answer: 5 s, or the drain timeout
    /// when it is shorter, so that the commits and the close after the
    /// drain end within it.
    pub fn commit_timeout(&self) -> Duration {
        self.limits.drain_timeout.min(MAX_COMMIT_WAIT)
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.connection.brokers)
            .set("client.id", "port-agent")
            .set("security.protocol", self.settings.security_protocol.as_str())
            .set_log_level(RDKafkaLogLevel::Warning);
        if let Some(m) = &self.settings.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.connection.username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.connection.password {
            c.set("sasl.password", p.expose());
        }
        c
    }

    pub(super) fn consumer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        let s = &self.settings;
        c.set("group.id", &s.group_id)
            .set("session.timeout.ms", s.session_timeout_ms.to_string())
            .set("max.poll.interval.ms", s.max_poll_interval_ms.to_string())
            .set("auto.offset.reset", s.auto_offset_reset.as_str())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A broker that holds an empty fetch for the whole wait (tansu
            // does) would add up to this much latency to a quiet topic; 100
            // ms costs ten idle fetches a second.
            .set("fetch.wait.max.ms", "100")
            // Consumer lag and broker state for /metrics and /readyz.
            .set("statistics.interval.ms", "5000")
            // Bounded prefetch: memory must not grow with the lag. Once the
            // queue is over these thresholds librdkafka waits
            // fetch.queue.backoff.ms before the next fetch; its default of
            // 1 s left the agent idle most of each second (a 1,200 runs/s
            // cap on any broker), so the next fetch goes as soon as the
            // queue has room again.
            .set("fetch.queue.backoff.ms", "10")
            .set("queued.min.messages", "1000")
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.max.bytes", "4194304")
            .set("max.partition.fetch.bytes", "1048576");
        for (k, v) in &self.connection.extra {
            c.set(k, v);
        }
        c
    }
}

/// With a CA bundle (`SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE`), librdkafka
/// gets the system's roots *plus* the bundle as `ssl.ca.location`: OpenSSL
/// alone would read `SSL_CERT_FILE` as its only roots file.
fn ca_location(settings: &crate::settings::Settings) -> Result<Vec<(String, String)>, ResolveError> {
    let Some(bundle) = &settings.ca_bundle else {
        return Ok(Vec::new());
    };
    let merged = crate::tls::merged_ca_file(bundle)?;
    Ok(vec![(
        "ssl.ca.location".to_string(),
        merged.display().to_string(),
    )])
}

/// Why the Kafka options cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `USING_LOCAL_PORT_INSTANCE` without brokers (invalid settings).
    #[error("KAFKA_CONSUMER_BOOTSTRAP_SERVERS: required when USING_LOCAL_PORT_INSTANCE is true")]
    NoBootstrapServers,
    /// The CA bundle cannot be merged for librdkafka (invalid settings).
    #[error("SSL_CERT_FILE: {0}")]
    CaBundle(#[from] crate::tls::CaBundleError),
    /// Port did not hand out the Kafka credentials (Port unreachable or
    /// failing: not a settings problem).
    #[error("cannot fetch Kafka credentials from Port: {0}")]
    Credentials(crate::port::PortError),
}

/// Where the brokers and credentials come from (SPEC §2.1).
pub async fn resolve_options(
    settings: &crate::settings::Settings,
    port: &crate::port::PortClient,
) -> Result<KafkaOptions, ResolveError> {
    let (brokers, username, password) = if settings.kafka.using_local_port_instance {
        if settings.kafka.bootstrap_servers.is_empty() {
            return Err(ResolveError::NoBootstrapServers);
        }
        (settings.kafka.bootstrap_servers.clone(), None, None)
    } else if let Some(brokers) = &settings.kafka.brokers {
        (
            brokers.clone(),
            settings.kafka.username.clone(),
            settings.kafka.password.clone(),
        )
    } else {
        let creds = port
            .kafka_credentials()
            .await
            .map_err(ResolveError::Credentials)?;
        (creds.brokers.join(","), creds.username, creds.password)
    };
    Ok(KafkaOptions {
        settings: settings.kafka.clone(),
        connection: Connection {
            brokers,
            username,
            password,
            extra: ca_location(settings)?,
        },
        limits: settings.limits.clone(),
        commit_interval: COMMIT_TICK,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> KafkaOptions {
        KafkaOptions {
            settings: KafkaSettings {
                group_id: "g".to_string(),
                ..KafkaSettings::default()
            },
            connection: Connection::to("localhost:9092"),
            limits: LimitSettings::default(),
            commit_interval: COMMIT_TICK,
        }
    }

    #[test]
    fn the_consumer_is_configured_with_a_bounded_prefetch_short_fetch_wait_and_no_auto_commit() {
        let c = options().consumer_config();
        for (key, value) in [
            ("queued.max.messages.kbytes", "4096"),
            ("queued.min.messages", "1000"),
            ("fetch.queue.backoff.ms", "10"),
            ("fetch.wait.max.ms", "100"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("client.id", "port-agent"),
            ("group.id", "g"),
            ("fetch.max.bytes", "4194304"),
            ("max.partition.fetch.bytes", "1048576"),
        ] {
            assert_eq!(c.get(key), Some(value), "{key}");
        }
    }
}
