//! The router's TUN device: created from a thread that has entered the router's namespace,
//! so it lives there; it disappears when its descriptor closes.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::error::WanError;
use crate::netns;

/// Creates TUN device `name` (IPv4 packets, no packet-info header, non-blocking) in `netns`.
pub fn create(netns: &str, name: &str) -> Result<OwnedFd, WanError> {
    let error = |source| WanError::Tun {
        name: name.to_owned(),
        source,
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                netns::enter(netns)?;
                open(name).map_err(error)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn open(name: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: the path is a NUL-terminated literal; open has no other memory effects.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "Interface name too long",
        ));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `request` is; `fd` is open.
    if unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::TUNSETIFF,
            &mut request,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}
