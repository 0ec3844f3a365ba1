//! API errors as JSON `{"error": "..."}` with the status code that fits.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{migrate::MigrateError, vm::VmError};

/// An error answer of the control API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the client.
    pub message: String,
}

impl ApiError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<VmError> for ApiError {
    fn from(err: VmError) -> Self {
        let status = match &err {
            VmError::NotFound(_) => StatusCode::NOT_FOUND,
            VmError::Exists(_) | VmError::Transition(_) => StatusCode::CONFLICT,
            VmError::Spec(_) => StatusCode::BAD_REQUEST,
            VmError::Store(_) | VmError::StartFailed { .. } | VmError::Qmp { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if status.is_server_error() {
            tracing::warn!(error = %crate::error_chain(&err), "VM operation failed");
        }
        Self {
            status,
            message: crate::error_chain(&err),
        }
    }
}

impl From<MigrateError> for ApiError {
    fn from(err: MigrateError) -> Self {
        let status = match err {
            MigrateError::Vm(vm) => return Self::from(vm),
            MigrateError::Request(_)
            | MigrateError::Destination { .. }
            | MigrateError::LocalDisk(..)
            | MigrateError::Psk(_) => StatusCode::BAD_REQUEST,
            MigrateError::Disk { .. } => StatusCode::CONFLICT,
            MigrateError::Connect { .. } | MigrateError::Refused(_) => StatusCode::BAD_GATEWAY,
        };
        tracing::warn!(error = %crate::error_chain(&err), "Migration refused");
        Self {
            status,
            message: crate::error_chain(&err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}
