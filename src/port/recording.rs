//! A [`Reporter`] that records the calls instead of sending them: dry-run,
//! render and tests read what the pipeline would have told Port.

use std::sync::{Arc, Mutex};

use super::{PortCall, PortError, Reporter};

/// Records calls in order (dry-run, render, tests).
#[derive(Clone, Default)]
pub struct RecordingReporter {
    /// Every call, in order.
    pub calls: Arc<Mutex<Vec<PortCall>>>,
}

impl RecordingReporter {
    /// Take the recorded calls.
    pub fn take(&self) -> Vec<PortCall> {
        self.calls
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }
}

impl Reporter for RecordingReporter {
    async fn send(&self, call: &PortCall) -> Result<(), PortError> {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call.clone());
        }
        Ok(())
    }
}
