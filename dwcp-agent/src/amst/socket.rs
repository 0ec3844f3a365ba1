//! TCP socket tuning for data streams.

use std::{net::TcpStream, os::fd::AsRawFd as _};

/// Socket options applied to every data stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketTuning {
    /// `SO_SNDBUF` / `SO_RCVBUF` in bytes (the kernel doubles it); `None` keeps autotuning.
    pub buffer_bytes: Option<usize>,
    /// `TCP_NOTSENT_LOWAT`: unsent bytes the kernel queues before the socket is writable.
    pub notsent_lowat: Option<u32>,
    /// Congestion control (`cubic`, `bbr`); `None` keeps the system default.
    pub congestion: Option<String>,
    /// `SO_MAX_PACING_RATE` in bytes per second per socket (TCP's own pacing caps the
    /// stream's rate); `None` leaves it unlimited.
    pub max_pacing_rate: Option<u64>,
}

impl Default for SocketTuning {
    fn default() -> Self {
        Self {
            buffer_bytes: None,
            notsent_lowat: Some(4 << 20),
            congestion: None,
            max_pacing_rate: None,
        }
    }
}

impl SocketTuning {
    /// Applies the options; the first failure is returned with the option's name.
    pub fn apply(&self, stream: &TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        if let Some(bytes) = self.buffer_bytes {
            let v = i32::try_from(bytes).unwrap_or(i32::MAX);
            setsockopt(
                stream,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &v.to_ne_bytes(),
                "SO_SNDBUF",
            )?;
            setsockopt(
                stream,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &v.to_ne_bytes(),
                "SO_RCVBUF",
            )?;
        }
        if let Some(lowat) = self.notsent_lowat {
            let v = i32::try_from(lowat).unwrap_or(i32::MAX);
            setsockopt(
                stream,
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                &v.to_ne_bytes(),
                "TCP_NOTSENT_LOWAT",
            )?;
        }
        if let Some(cc) = &self.congestion {
            setsockopt(
                stream,
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                cc.as_bytes(),
                "TCP_CONGESTION",
            )
            .map_err(|e| std::io::Error::new(e.kind(), format!("{e} (is tcp_{cc} available?)")))?;
        }
        if let Some(rate) = self.max_pacing_rate {
            setsockopt(
                stream,
                libc::SOL_SOCKET,
                libc::SO_MAX_PACING_RATE,
                &rate.to_ne_bytes(),
                "SO_MAX_PACING_RATE",
            )?;
        }
        Ok(())
    }
}

fn setsockopt(
    stream: &TcpStream,
    level: i32,
    name: i32,
    value: &[u8],
    what: &str,
) -> std::io::Result<()> {
    let len = libc::socklen_t::try_from(value.len()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: the fd is a live socket owned by `stream`; `value` is valid for `len` bytes.
    let rc =
        unsafe { libc::setsockopt(stream.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        let err = std::io::Error::last_os_error();
        Err(std::io::Error::new(
            err.kind(),
            format!("Setting {what} failed: {err}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn applies_options_and_names_bad_congestion_control() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let tuning = SocketTuning {
            buffer_bytes: Some(1 << 20),
            congestion: Some("cubic".into()),
            ..SocketTuning::default()
        };
        tuning.apply(&stream).unwrap();
        let bad = SocketTuning {
            congestion: Some("nonesuch".into()),
            ..SocketTuning::default()
        };
        let err = bad.apply(&stream).unwrap_err().to_string();
        assert!(
            err.contains("TCP_CONGESTION") && err.contains("tcp_nonesuch"),
            "{err}"
        );
    }
}
