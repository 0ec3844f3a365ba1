//! RDMA devices, through ibverbs (feature `rdma`).
//!
//! Only discovery exists so far: [`devices`] lists the RDMA devices the kernel offers,
//! and fails with [`RdmaError::NoDevice`] when there is none, so callers can say
//! clearly why RDMA cannot be used. Moving data over RDMA queue pairs is a later issue.

use std::ffi::{CStr, c_int};

/// Why RDMA cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    /// ibverbs lists no device.
    #[error(
        "No RDMA device found (ibverbs lists none: this host has no RDMA NIC and no soft \
         device such as rxe or siw is configured)"
    )]
    NoDevice,
    /// ibverbs could not list devices at all.
    #[error("Cannot list RDMA devices through ibverbs")]
    List(#[source] std::io::Error),
}

/// Names of the RDMA devices ibverbs lists (e.g. `mlx5_0`), or why there are none.
pub fn devices() -> Result<Vec<String>, RdmaError> {
    let mut count: c_int = 0;
    // SAFETY: `count` is a valid, writable int for the duration of the call; the returned
    // list is owned by ibverbs until `ibv_free_device_list` below.
    let list = unsafe { rdma_sys::ibv_get_device_list(&mut count) };
    if list.is_null() {
        let err = std::io::Error::last_os_error();
        // ENOSYS: no RDMA support in the kernel at all, which is "no device" for callers.
        return Err(match err.raw_os_error() {
            Some(libc::ENOSYS) => RdmaError::NoDevice,
            _ => RdmaError::List(err),
        });
    }
    let mut names = Vec::new();
    for i in 0..usize::try_from(count).unwrap_or(0) {
        // SAFETY: `list` holds `count` valid device pointers (followed by a NULL).
        let device = unsafe { *list.add(i) };
        if device.is_null() {
            break;
        }
        // SAFETY: `device` is a valid device of the list, which is not freed yet.
        let name = unsafe { rdma_sys::ibv_get_device_name(device) };
        if !name.is_null() {
            // SAFETY: ibverbs returns a NUL-terminated name living as long as the device.
            names.push(
                unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    // SAFETY: `list` came from `ibv_get_device_list` and is freed exactly once; no
    // device pointer from it is used after this.
    unsafe { rdma_sys::ibv_free_device_list(list) };
    if names.is_empty() {
        return Err(RdmaError::NoDevice);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_devices_or_says_there_is_none() {
        match devices() {
            Ok(names) => assert!(names.iter().all(|n| !n.is_empty())),
            Err(RdmaError::NoDevice) => {
                assert!(
                    RdmaError::NoDevice
                        .to_string()
                        .starts_with("No RDMA device found (")
                );
            }
            Err(other) => panic!("listing failed: {other}"),
        }
    }
}
