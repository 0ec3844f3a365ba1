//! The local control API: JSON over HTTP/1.1 on a unix socket (mode 0600, so only the
//! socket's owner, normally root, can drive VMs). [`routes`] has the endpoints,
//! [`error`] the error answers, [`client`] the client the CLI uses.

pub mod client;
pub mod error;
pub mod routes;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use tokio::{net::UnixListener, sync::watch};

use crate::vm::VmManager;

/// Errors of setting up the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiServeError {
    /// Directory, bind or permission change failed.
    #[error("Cannot {what} {path}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// Path.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another process answers on the socket.
    #[error("Another agent already serves the control socket {0}")]
    InUse(String),
}

/// Binds `path` (replacing a stale socket file) with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, ApiServeError> {
    let io = |what, path: &Path| {
        let path = path.display().to_string();
        move |source| ApiServeError::Io { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ApiServeError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io("remove the stale socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io("listen on", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restrict permissions of", path))?;
    Ok(listener)
}

/// Serves the API on `listener` until `stop` turns true, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    manager: VmManager,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let served = axum::serve(listener, routes::router(manager))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
    let _ = std::fs::remove_file(&path);
    served
}
