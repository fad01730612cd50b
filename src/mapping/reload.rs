//! Mapping hot reload: `run` watches `CONTROL_THE_PAYLOAD_CONFIG_PATH` and
//! reloads on SIGHUP.
//!
//! The pipeline reads its mappings from a [`MappingSlot`]; each message
//! takes the set in force when it starts and keeps it to its end, so a swap
//! never changes a message in flight. A new file is compiled first: on any
//! error the old set stays in force, the error is logged with the same text
//! `check` prints, and `port_agent_mapping_reloads_total{result="error"}`
//! counts it (readiness does not change: the agent still runs the last good
//! set).
//!
//! The *directory* is watched, not the file: Kubernetes updates a ConfigMap
//! volume by swapping a `..data` symlink, which never writes the file the
//! agent opened. Any event in the directory (or a SIGHUP) re-reads the file
//! and compares its SHA-256 with the one in force, so unrelated events and
//! repeated events cost one read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::{MappingError, MappingSet};
use crate::shutdown::Shutdown;
use crate::telemetry::metrics;

/// Events closer together than this are one reload (an editor's save or a
/// ConfigMap swap is several file-system events).
const SETTLE: Duration = Duration::from_millis(200);

/// The mappings in force, swapped atomically by the reloader.
#[derive(Debug)]
pub struct MappingSlot {
    current: RwLock<Arc<MappingSet>>,
}

impl MappingSlot {
    /// A slot holding `set`.
    pub fn new(set: Arc<MappingSet>) -> Arc<MappingSlot> {
        Arc::new(MappingSlot {
            current: RwLock::new(set),
        })
    }

    /// The set in force now (a message keeps it to its end).
    pub fn current(&self) -> Arc<MappingSet> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, set: Arc<MappingSet>) {
        match self.current.write() {
            Ok(mut guard) => *guard = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }
}

/// The hex SHA-256 of a mapping file's bytes (the version in logs and in
/// `port_agent_mapping_info`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A mapping error as `check` prints it: the file, the mapping index, the
/// field and the jq error with its position.
pub fn describe_error(path: &Path, e: &MappingError) -> String {
    match e {
        MappingError::Field { .. } | MappingError::Fields(_) => format!("{}: {e}", path.display()),
        _ => e.to_string(),
    }
}

/// A mapping file that cannot be read or does not compile; shown as
/// [`describe_error`] says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_error(path, error))]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub error: MappingError,
}

/// Read and compile the mapping file: the set and the file's SHA-256.
pub fn load(path: &Path) -> Result<(MappingSet, String), LoadError> {
    let failed = |error| LoadError {
        path: path.to_path_buf(),
        error,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        failed(MappingError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    })?;
    let sha = sha256_hex(&bytes);
    let text = String::from_utf8_lossy(&bytes);
    let set = MappingSet::parse(&text).map_err(|e| {
        failed(match e {
            MappingError::Format { reason, .. } => MappingError::Format {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    })?;
    Ok((set, sha))
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The file is the version in force.
    Unchanged,
    /// The new version (its SHA-256) is in force.
    Swapped(String),
    /// The file could not be used; the old set stays. The `check`-style error.
    Failed(LoadError),
}

/// Re-reads the mapping file into a [`MappingSlot`].
pub struct Reloader {
    path: PathBuf,
    slot: Arc<MappingSlot>,
    sha: String,
}

impl Reloader {
    /// A reloader of `path` into `slot`, whose set is the file version `sha`.
    pub fn new(path: PathBuf, slot: Arc<MappingSlot>, sha: String) -> Reloader {
        metrics::mapping_info(&sha, None);
        Reloader { path, slot, sha }
    }

    /// Re-read the file; swap when it changed and compiles.
    pub fn reload(&mut self, why: &str) -> Reload {
        match load(&self.path) {
            Ok((_, sha)) if sha == self.sha => Reload::Unchanged,
            Ok((set, sha)) => {
                for m in set.mappings.iter().filter(|m| !m.unknown_keys.is_empty()) {
                    warn!(mapping = m.index, keys = ?m.unknown_keys, "unknown mapping keys are ignored");
                }
                let count = set.mappings.len();
                metrics::mapping_fields(&set.error_fields());
                self.slot.swap(Arc::new(set));
                metrics::mapping_reload(true);
                metrics::mapping_info(&sha, Some(&self.sha));
                info!(file = %self.path.display(), sha256 = %sha, previous = %self.sha, mappings = count, trigger = why,
                      "mappings reloaded: the new version is in force for the next message");
                self.sha = sha.clone();
                Reload::Swapped(sha)
            }
            Err(e) => {
                metrics::mapping_reload(false);
                error!(error = %e, in_force = %self.sha, trigger = why,
                       "mapping reload refused: the mappings in force stay");
                Reload::Failed(e)
            }
        }
    }
}

/// Reload on every change in the mapping file's directory and on SIGHUP,
/// until `shutdown`. A watcher that cannot start is logged (SIGHUP still
/// works).
pub async fn watch(mut reloader: Reloader, shutdown: Shutdown) {
    let (tx, mut events) = mpsc::unbounded_channel::<&'static str>();
    let _watcher = start_watcher(&reloader.path, tx.clone());
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; mapping reload on SIGHUP is off");
            None
        }
    };
    loop {
        let why = tokio::select! {
            _ = shutdown.wait() => return,
            Some(why) = events.recv() => why,
            Some(()) = async { match hangups.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
        };
        // Let a burst of events settle, then read once.
        tokio::time::sleep(SETTLE).await;
        while events.try_recv().is_ok() {}
        if why == "SIGHUP" {
            info!("SIGHUP: reloading the mappings");
        }
        if reloader.reload(why) == Reload::Unchanged && why == "SIGHUP" {
            info!(sha256 = %reloader.sha, "mappings unchanged");
        }
    }
}

fn start_watcher(path: &Path, tx: mpsc::UnboundedSender<&'static str>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send("file change");
        }
    };
    let started = notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(&dir, notify::RecursiveMode::NonRecursive).map(|()| w));
    match started {
        Ok(w) => {
            info!(directory = %dir.display(), "watching the mapping file's directory for changes");
            Some(w)
        }
        Err(e) => {
            warn!(directory = %dir.display(), error = %e, "cannot watch the mapping file; reload with SIGHUP");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("mapping.json");
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn a_good_file_swaps_a_broken_one_is_refused_and_an_unchanged_one_is_noticed() {
        let dir = std::env::temp_dir().join(format!("reload-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = write(&dir, r#"[{"enabled": true, "url": "\"http://old\""}]"#);
        let (set, sha) = load(&path).expect("loads");
        let slot = MappingSlot::new(Arc::new(set));
        let before = slot.current();
        let mut r = Reloader::new(path.clone(), slot.clone(), sha);
        assert_eq!(r.reload("test"), Reload::Unchanged);

        write(&dir, r#"[{"enabled": true, "url": "\"http://new\""}]"#);
        let Reload::Swapped(sha) = r.reload("test") else {
            panic!("swapped")
        };
        assert_eq!(sha.len(), 64);
        assert!(
            !Arc::ptr_eq(&before, &slot.current()),
            "the next message gets the new set"
        );
        assert_eq!(before.mappings.len(), 1, "a message in flight keeps its set");

        write(&dir, r#"[{"enabled": true, "body": {"ref": ".a |"}}]"#);
        let Reload::Failed(e) = r.reload("test") else {
            panic!("refused")
        };
        assert!(
            e.to_string()
                .starts_with(&format!("{}: mapping #0, field 'body.ref': ", path.display())),
            "{e}"
        );
        assert_eq!(slot.current().mappings.len(), 1, "the last good set stays");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
