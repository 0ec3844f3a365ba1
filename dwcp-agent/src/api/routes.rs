//! The routes of the control API and their handlers.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /v1/vms` | list VMs |
//! | `POST /v1/vms` | create a VM from a JSON [`VmSpec`] |
//! | `GET /v1/vms/{name}` | one VM's status |
//! | `POST /v1/vms/{name}/{start,pause,resume,stop}` | lifecycle actions |
//! | `DELETE /v1/vms/{name}` | delete a VM |
//! | `POST /v1/vms/{name}/migrate` | start migrating a VM (JSON [`MigrateRequest`]); 202 |
//! | `GET /v1/vms/{name}/migration` | progress of the VM's migration, or its last one |

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;

use super::error::ApiError;
use crate::{
    migrate::MigrateRequest,
    vm::{VmManager, VmSpec},
};

/// The router, sharing `manager`.
pub fn router(manager: VmManager) -> Router {
    Router::new()
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{name}", get(status).delete(delete))
        .route("/v1/vms/{name}/migrate", post(migrate))
        .route("/v1/vms/{name}/migration", get(migration))
        .route("/v1/vms/{name}/{action}", post(action))
        .fallback(unknown_route)
        .with_state(manager)
}

/// A JSON body with `status`.
fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("Cannot encode the answer: {e}"),
        }
        .into_response(),
    }
}

async fn list(State(manager): State<VmManager>) -> Response {
    json(StatusCode::OK, &manager.list())
}

async fn create(State(manager): State<VmManager>, body: Bytes) -> Result<Response, ApiError> {
    let spec: VmSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Invalid VM spec: {e}")))?;
    let status = detached(async move { manager.create(spec).await }).await?;
    Ok(json(StatusCode::CREATED, &status))
}

async fn status(
    State(manager): State<VmManager>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &manager.status(&name)?))
}

async fn delete(
    State(manager): State<VmManager>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let deleted = name.clone();
    detached(async move { manager.delete(&deleted).await }).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "deleted": name }),
    ))
}

async fn migrate(
    State(manager): State<VmManager>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: MigrateRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Invalid migration request: {e}")))?;
    let started =
        tokio::spawn(async move { crate::migrate::source::start(&manager, &name, request).await })
            .await
            .map_err(|join| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("Migration request crashed: {join}"),
            })??;
    Ok(json(StatusCode::ACCEPTED, &started))
}

async fn migration(
    State(manager): State<VmManager>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    match manager.migration(&name)? {
        Some(report) => Ok(json(StatusCode::OK, &report)),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("VM {name:?} has never been migrated"),
        }),
    }
}

async fn action(
    State(manager): State<VmManager>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let status = match action.as_str() {
        "start" => detached(async move { manager.start(&name).await }).await?,
        "pause" => detached(async move { manager.pause(&name).await }).await?,
        "resume" => detached(async move { manager.resume(&name).await }).await?,
        "stop" => detached(async move { manager.stop(&name).await }).await?,
        other => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("Unknown action {other:?}: use start, pause, resume or stop"),
            });
        }
    };
    Ok(json(StatusCode::OK, &status))
}

/// Runs an operation as its own task, so that a client hanging up cannot cancel it
/// half-way (the VM's record and its QEMU stay consistent).
async fn detached<T: Send + 'static>(
    operation: impl Future<Output = Result<T, crate::vm::VmError>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(operation).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(join) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("VM operation crashed: {join}"),
        }),
    }
}

async fn unknown_route() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "Unknown path: the API serves /v1/vms and /v1/vms/{name}[/{action}]".into(),
    }
}
