//! Why data streams of one transfer failed: each failure is logged once and kept for the
//! final error message and the summary's failed-stream count.

use std::sync::Mutex;

use super::AmstError;

/// The failures of one transfer's data streams, in the order they happened.
#[derive(Debug, Default)]
pub struct StreamFailures(Mutex<Vec<String>>);

impl StreamFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A list of messages: a panicking holder leaves it usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs and keeps why stream `index` failed.
    pub fn record(&self, index: usize, err: &(dyn std::error::Error + 'static)) {
        let message = format!("stream {index}: {}", crate::error_chain(err));
        tracing::warn!("{message}");
        self.lock().push(message);
    }

    /// Streams that failed so far.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The error for a transfer whose `streams` streams all failed.
    pub fn all_failed(&self, streams: usize) -> AmstError {
        AmstError::AllStreamsFailed {
            streams,
            last: self
                .lock()
                .last()
                .cloned()
                .unwrap_or_else(|| "no error recorded".into()),
        }
    }
}
