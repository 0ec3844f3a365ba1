//! Our QMP client: one unix-socket connection to a QEMU monitor.
//!
//! [`QmpClient::connect`] reads the greeting and negotiates capabilities; a reader task
//! then routes every reply to the request with the same `id` and every asynchronous
//! event to the [`QmpClient::events`] stream, so replies and events never mix. Each
//! request has a timeout; when QEMU goes away, pending and later requests fail with
//! [`QmpError::Disconnected`].

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixStream, unix::OwnedWriteHalf},
    sync::{broadcast, oneshot, watch},
};

/// Errors of talking QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be opened.
    #[error("Cannot connect to the QMP socket {path}")]
    Connect {
        /// Socket path.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The first message was not a QMP greeting, or capabilities were refused.
    #[error("QMP handshake failed: {0}")]
    Handshake(String),
    /// No answer in time.
    #[error("QMP command {command} got no reply within {timeout:?}")]
    Timeout {
        /// Command sent.
        command: String,
        /// Time waited.
        timeout: Duration,
    },
    /// QEMU closed the connection (it exited or crashed).
    #[error("QMP connection closed before {command} was answered (QEMU exited?)")]
    Disconnected {
        /// Command that was pending or attempted.
        command: String,
    },
    /// QEMU answered with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// Command sent.
        command: String,
        /// QMP error class, e.g. `GenericError`, `CommandNotFound`.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// Writing to the socket failed.
    #[error("Cannot send QMP command {command}")]
    Send {
        /// Command being sent.
        command: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A reply had an unexpected shape.
    #[error("Unexpected QMP reply to {command}: {reply}")]
    Reply {
        /// Command sent.
        command: String,
        /// What came back.
        reply: String,
    },
}

/// An asynchronous QMP event (`SHUTDOWN`, `STOP`, `RESUME`, `POWERDOWN`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct QmpEvent {
    /// Event name.
    pub name: String,
    /// Event data (`null` when absent).
    pub data: Value,
    /// When QEMU emitted it, in microseconds since the Unix epoch (its `timestamp`).
    pub timestamp_us: Option<u64>,
}

impl QmpEvent {
    /// The event in a QMP message, if it is one.
    fn parse(message: &Value) -> Option<Self> {
        let name = message.get("event")?.as_str()?;
        let stamp = &message["timestamp"];
        let timestamp_us = match (stamp["seconds"].as_u64(), stamp["microseconds"].as_u64()) {
            (Some(s), Some(us)) => Some(s * 1_000_000 + us),
            _ => None,
        };
        Some(Self {
            name: name.to_owned(),
            data: message.get("data").cloned().unwrap_or(Value::Null),
            timestamp_us,
        })
    }
}

/// The latest event of each name.
type Latest = Arc<Mutex<HashMap<String, QmpEvent>>>;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A connected, capability-negotiated QMP session.
#[derive(Debug)]
pub struct QmpClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    events: broadcast::Sender<QmpEvent>,
    latest: Latest,
    closed: watch::Receiver<bool>,
    timeout: Duration,
    version: String,
}

/// Default time to wait for a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl QmpClient {
    /// Connects to `path`, reads the greeting and enters command mode.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = tokio::time::timeout(timeout, lines.next_line())
            .await
            .map_err(|_| QmpError::Handshake(format!("no greeting within {timeout:?}")))?
            .map_err(|e| QmpError::Handshake(format!("reading the greeting: {e}")))?
            .ok_or_else(|| QmpError::Handshake("connection closed before the greeting".into()))?;
        let greeting: Value = serde_json::from_str(&greeting)
            .map_err(|e| QmpError::Handshake(format!("greeting is not JSON ({e}): {greeting}")))?;
        let qemu = &greeting["QMP"]["version"]["qemu"];
        if !qemu.is_object() {
            return Err(QmpError::Handshake(format!(
                "first message is not a QMP greeting: {greeting}"
            )));
        }
        let version = format!("{}.{}.{}", qemu["major"], qemu["minor"], qemu["micro"]);

        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(256);
        let (closed_tx, closed) = watch::channel(false);
        let latest = Latest::default();
        tokio::spawn(read_loop(
            lines,
            Arc::clone(&pending),
            (events.clone(), Arc::clone(&latest)),
            closed_tx,
        ));
        let client = Self {
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_id: AtomicU64::new(1),
            events,
            latest,
            closed,
            timeout,
            version,
        };
        client
            .execute("qmp_capabilities", None)
            .await
            .map_err(|e| QmpError::Handshake(format!("qmp_capabilities: {e}")))?;
        Ok(client)
    }

    /// QEMU's version from the greeting, e.g. `7.2.22`.
    pub fn qemu_version(&self) -> &str {
        &self.version
    }

    /// A stream of the events that arrive from now on.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// The latest event called `name` since this session began (e.g. when QEMU last
    /// stopped or resumed the guest).
    pub fn last_event(&self, name: &str) -> Option<QmpEvent> {
        lock(&self.latest).get(name).cloned()
    }

    /// Whether QEMU has closed the connection.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once QEMU has closed the connection.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Runs `command` with optional `arguments`; returns the `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let disconnected = || QmpError::Disconnected {
            command: command.to_owned(),
        };
        if self.is_closed() {
            return Err(disconnected());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        // The reader marks the session closed before it drops the pending requests, so
        // a request inserted after that drop is caught here.
        if self.is_closed() {
            lock(&self.pending).remove(&id);
            return Err(disconnected());
        }
        let mut line = request.to_string();
        line.push('\n');
        let sent = {
            let mut writer = self.writer.lock().await;
            writer.write_all(line.as_bytes()).await
        };
        if let Err(source) = sent {
            lock(&self.pending).remove(&id);
            return Err(if self.is_closed() {
                disconnected()
            } else {
                QmpError::Send {
                    command: command.to_owned(),
                    source,
                }
            });
        }
        let reply = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(disconnected()),
            Err(_) => {
                lock(&self.pending).remove(&id);
                return Err(QmpError::Timeout {
                    command: command.to_owned(),
                    timeout: self.timeout,
                });
            }
        };
        if let Some(error) = reply.get("error") {
            return Err(QmpError::Command {
                command: command.to_owned(),
                class: error["class"].as_str().unwrap_or("unknown").to_owned(),
                desc: error["desc"].as_str().unwrap_or_default().to_owned(),
            });
        }
        reply.get("return").cloned().ok_or_else(|| QmpError::Reply {
            command: command.to_owned(),
            reply: reply.to_string(),
        })
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, ...).
    pub async fn query_status(&self) -> Result<String, QmpError> {
        let reply = self.execute("query-status", None).await?;
        reply["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| QmpError::Reply {
                command: "query-status".into(),
                reply: reply.to_string(),
            })
    }

    /// `stop`: pauses the vCPUs.
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(drop)
    }

    /// `cont`: resumes the vCPUs.
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(drop)
    }

    /// `system_powerdown`: presses the ACPI power button.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `quit`: QEMU exits at once. The connection may close before the reply arrives,
    /// which counts as success.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Disconnected { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// `migrate`: starts an outgoing migration to `uri` (e.g. `tcp:host:port`).
    pub async fn migrate(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `query-migrate`: the migration status object.
    pub async fn query_migrate(&self) -> Result<Value, QmpError> {
        self.execute("query-migrate", None).await
    }

    /// `migrate_cancel`: cancels the outgoing migration (the VM keeps running).
    pub async fn migrate_cancel(&self) -> Result<(), QmpError> {
        self.execute("migrate_cancel", None).await.map(drop)
    }

    /// `migrate-set-capabilities`: turns each named capability on or off.
    pub async fn migrate_set_capabilities(
        &self,
        capabilities: &[(&str, bool)],
    ) -> Result<(), QmpError> {
        let list: Vec<Value> = capabilities
            .iter()
            .map(|(name, state)| json!({ "capability": name, "state": state }))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .await
        .map(drop)
    }

    /// `migrate-set-parameters` with the given parameter object.
    pub async fn migrate_set_parameters(&self, parameters: Value) -> Result<(), QmpError> {
        self.execute("migrate-set-parameters", Some(parameters))
            .await
            .map(drop)
    }
}

/// Routes lines to pending requests (by `id`) or to the event stream until EOF.
async fn read_loop(
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    pending: Pending,
    (events, latest): (broadcast::Sender<QmpEvent>, Latest),
    closed: watch::Sender<bool>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!(%line, "Ignoring a QMP line that is not JSON");
            continue;
        };
        if let Some(event) = QmpEvent::parse(&message) {
            lock(&latest).insert(event.name.clone(), event.clone());
            let _ = events.send(event);
        } else if let Some(id) = message.get("id").and_then(Value::as_u64) {
            if let Some(tx) = lock(&pending).remove(&id) {
                let _ = tx.send(message);
            }
        } else {
            tracing::warn!(%line, "Ignoring a QMP reply without id");
        }
    }
    let _ = closed.send(true);
    // Dropping the senders fails every waiting request with Disconnected.
    lock(&pending).clear();
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[path = "qmp_tests.rs"]
mod tests;
