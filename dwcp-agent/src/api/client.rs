//! A small blocking HTTP/1.1 client for the control socket (one request per connection).

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

/// Errors of a control API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("Cannot reach the agent at {path} (is `dwcp-agent run` running, and are you root?)")]
    Connect {
        /// Socket path.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error("Lost the connection to the agent")]
    Io(#[source] std::io::Error),
    /// The answer is not HTTP with a JSON body.
    #[error("Unreadable answer from the agent: {0}")]
    BadResponse(String),
    /// The agent answered with an error.
    #[error("{message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The agent's message.
        message: String,
    },
}

/// How long a call may take (a stop waits for the guest to power off).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A client of one agent's control socket.
#[derive(Clone, Debug)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    /// A client for the agent listening on `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// Sends `method path` with an optional JSON `body`; returns the JSON answer of a
    /// 2xx status, or the agent's error message.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<Value, ClientError> {
        let (status, text) = self.raw(method, path, body)?;
        let json: Value = serde_json::from_str(&text).map_err(|e| {
            ClientError::BadResponse(format!("HTTP {status}, not JSON ({e}): {text}"))
        })?;
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            Err(ClientError::Api {
                status,
                message: json["error"].as_str().unwrap_or(&text).to_owned(),
            })
        }
    }

    /// Sends a request and returns the status and body text as they came.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                path: self.socket.display().to_string(),
                source,
            })?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(ClientError::Io)?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(ClientError::Io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(ClientError::Io)?;
        parse_response(&response)
    }
}

/// Splits an HTTP/1.1 response into status and body (plain or chunked).
fn parse_response(response: &[u8]) -> Result<(u16, String), ClientError> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::BadResponse(format!("no header end in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::BadResponse(format!("no status in {head:?}")))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String, ClientError> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| ClientError::BadResponse("truncated chunk header".into()))?;
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| ClientError::BadResponse(format!("bad chunk size {size:?}")))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| ClientError::BadResponse("truncated chunk".into()))?;
        out.push_str(chunk);
        body = rest.get(size + 2..).unwrap_or("");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_bodies_parse() {
        let (status, body) =
            parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((status, body.as_str()), (404, "{}"));
        let (status, body) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((status, body.as_str()), (200, "{\"a\":1}"));
        assert!(parse_response(b"garbage").is_err());
    }
}
