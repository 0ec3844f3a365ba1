//! The control API's answers to bad requests: clear JSON errors with 4xx codes, nothing
//! lost. Needs no QEMU (the one VM defined is never started).

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod common;

use std::path::Path;

use common::vm::{cli, start_agent};
use serde_json::Value;

/// Bad requests straight to the socket: clear JSON errors with 4xx codes. Needs no QEMU.
#[test]
fn bad_requests_get_clear_4xx_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let _agent = start_agent(&state_dir);
    let socket = state_dir.join("agent.sock");
    let client = dwcp_agent::api::client::ApiClient::new(&socket);
    let error = |method: &str, path: &str, body: Option<&str>| -> (u16, String) {
        let (status, text) = client.raw(method, path, body).expect("request");
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (
            status,
            json["error"].as_str().expect("error field").to_owned(),
        )
    };

    let (status, msg) = error("POST", "/v1/vms", Some("{not json"));
    assert_eq!(status, 400);
    assert!(
        msg.starts_with("Invalid VM spec: key must be a string"),
        "{msg}"
    );

    let (status, msg) = error("POST", "/v1/vms", Some(r#"{"name":"a","cpus":2}"#));
    assert_eq!(status, 400);
    assert!(msg.contains("unknown field `cpus`"), "{msg}");

    let (status, msg) = error(
        "POST",
        "/v1/vms",
        Some(r#"{"name":"Bad_Name","kernel":"/k"}"#),
    );
    assert_eq!(status, 400);
    assert!(msg.starts_with("Invalid VM name \"Bad_Name\""), "{msg}");

    let (status, msg) = error("POST", "/v1/vms", Some(r#"{"name":"a"}"#));
    assert_eq!(
        (status, msg.as_str()),
        (400, "Nothing to boot: give a disk image or a kernel")
    );

    let (status, msg) = error(
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","kernel":"/nonexistent/k"}"#),
    );
    assert_eq!(status, 400);
    assert_eq!(msg, "Invalid kernel: /nonexistent/k is not a readable file");

    for (method, path) in [
        ("GET", "/v1/vms/ghost"),
        ("POST", "/v1/vms/ghost/start"),
        ("DELETE", "/v1/vms/ghost"),
    ] {
        let (status, msg) = error(method, path, None);
        assert_eq!(
            (status, msg.as_str()),
            (404, "No VM named \"ghost\""),
            "{method} {path}"
        );
    }
    let (status, msg) = error("GET", "/v2/nothing", None);
    assert_eq!(status, 404);
    assert!(msg.starts_with("Unknown path"), "{msg}");

    // A valid VM that is never started: a duplicate is refused, an unknown action too.
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0_u8; 4096]).expect("disk");
    let spec = format!(r#"{{"name":"idle","disk":"{}"}}"#, disk.display());
    let (status, _) = client.raw("POST", "/v1/vms", Some(&spec)).expect("create");
    assert_eq!(status, 201);
    let (status, msg) = error("POST", "/v1/vms", Some(&spec));
    assert_eq!(
        (status, msg.as_str()),
        (409, "A VM named \"idle\" already exists")
    );
    let (status, msg) = error("POST", "/v1/vms/idle/reboot", None);
    assert_eq!(status, 404);
    assert!(msg.starts_with("Unknown action \"reboot\""), "{msg}");
    let (status, msg) = error("POST", "/v1/vms/idle/pause", None);
    assert_eq!(
        (status, msg.as_str()),
        (409, "Cannot pause the VM while it is creating")
    );
    // Nothing was lost: the VM is still there, unchanged.
    let listed = client.call("GET", "/v1/vms", None).expect("list");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["state"], "creating");

    // The CLI reports the same errors and exits non-zero.
    let out = cli(&socket, &["pause", "idle"]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("Cannot pause the VM while it is creating (HTTP 409)"),
        "{}",
        out.stderr
    );
    let out = cli(Path::new("/nonexistent/agent.sock"), &["list"]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("Cannot reach the agent at /nonexistent/agent.sock"),
        "{}",
        out.stderr
    );
}
