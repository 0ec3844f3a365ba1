//! Locating (and, when allowed, mounting) tracefs, and reading tracepoint record formats.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::ProbeError;

/// Places where tracefs is usually found, in the order the kernel documents them.
const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Returns the tracefs root, mounting it at `/sys/kernel/tracing` when no candidate has
/// an `events` directory (Debian does not mount it by default).
pub fn root() -> Result<PathBuf, ProbeError> {
    if let Some(found) = CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("events").is_dir())
    {
        return Ok(found);
    }
    mount(Path::new(CANDIDATES[0]))?;
    tracing::info!(path = CANDIDATES[0], "Mounted tracefs");
    Ok(PathBuf::from(CANDIDATES[0]))
}

fn mount(target: &Path) -> Result<(), ProbeError> {
    let c_target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| ProbeError::TracefsUnavailable("Mount point has a NUL byte".into()))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call;
    // the data argument may be null for tracefs.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c_target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(ProbeError::TracefsUnavailable(format!(
            "tracefs is not mounted and mounting it at {} failed: {err}",
            target.display()
        )));
    }
    Ok(())
}

/// One field of a tracepoint record, as listed in its `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Field name (array suffix removed).
    pub name: String,
    /// Byte offset in the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// Reads and parses `events/<category>/<name>/format`.
pub fn format(root: &Path, category: &str, name: &str) -> Result<Vec<Field>, ProbeError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).map_err(|source| ProbeError::Format {
        tracepoint: format!("{category}:{name}"),
        reason: format!("cannot read {}: {source}", path.display()),
    })?;
    Ok(parse_format(&text))
}

/// Parses the `field:` lines of a tracepoint format description.
///
/// A line looks like `\tfield:__u8 saddr[28];\toffset:8;\tsize:28;\tsigned:0;`.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines().filter_map(parse_field_line).collect()
}

fn parse_field_line(line: &str) -> Option<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.split(';').map(str::trim) {
        if let Some(rest) = part.strip_prefix("field:") {
            decl = Some(rest);
        } else if let Some(rest) = part.strip_prefix("offset:") {
            offset = rest.parse().ok();
        } else if let Some(rest) = part.strip_prefix("size:") {
            size = rest.parse().ok();
        }
    }
    let last_word = decl?.split_whitespace().last()?;
    let name = last_word.split('[').next()?.to_owned();
    Some(Field {
        name,
        offset: offset?,
        size: size?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP_PROBE: &str = "name: tcp_probe\nID: 1234\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:__u8 saddr[28];\toffset:8;\tsize:28;\tsigned:0;\n\
        \tfield:const void * skaddr;\toffset:128;\tsize:8;\tsigned:0;\n\n\
        print fmt: \"src=%pISpc\", REC->saddr\n";

    #[test]
    fn parses_fields_with_arrays_and_pointers() {
        let fields = parse_format(TCP_PROBE);
        assert_eq!(
            fields,
            vec![
                Field {
                    name: "common_type".into(),
                    offset: 0,
                    size: 2
                },
                Field {
                    name: "saddr".into(),
                    offset: 8,
                    size: 28
                },
                Field {
                    name: "skaddr".into(),
                    offset: 128,
                    size: 8
                },
            ]
        );
    }

    #[test]
    fn ignores_garbage_lines() {
        assert!(parse_format("field:int;\noffset:3;\nrandom text").is_empty());
    }
}
