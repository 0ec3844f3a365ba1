//! A writer for the `newc` cpio format (the one the kernel unpacks as an initramfs).
//!
//! Entries are written in the order they are added, with uid/gid 0 and mtime 0 so the
//! same tree always gives the same bytes. Paths are relative (`bin/busybox`); a path that
//! is empty, absolute, has `.`/`..` parts, was added before, or whose parent directory was
//! not added first is refused, because the kernel would skip such an entry silently.

use std::{collections::HashSet, io::Write};

use anyhow::{Context as _, Result, bail, ensure};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
/// Regular file.
const S_IFREG: u32 = 0o100_000;
/// Symbolic link.
const S_IFLNK: u32 = 0o120_000;
/// Character device.
const S_IFCHR: u32 = 0o020_000;
/// Name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// Writes a `newc` archive to `out`.
#[derive(Debug)]
pub struct Writer<W: Write> {
    /// Where the archive goes.
    out: W,
    /// Bytes written so far (for padding).
    written: u64,
    /// Next inode number.
    next_ino: u32,
    /// Every path added so far.
    paths: HashSet<String>,
    /// The directories among them.
    dirs: HashSet<String>,
}

impl<W: Write> Writer<W> {
    /// A writer with nothing written yet.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
            paths: HashSet::new(),
            dirs: HashSet::new(),
        }
    }

    /// Adds directory `path` with permission bits `perm`.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<()> {
        self.entry(path, S_IFDIR | perm, 2, (0, 0), &[])?;
        self.dirs.insert(path.to_owned());
        Ok(())
    }

    /// Adds regular file `path` with permission bits `perm` and contents `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data)
    }

    /// Adds symbolic link `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        ensure!(
            !target.is_empty(),
            "Symbolic link `{path}` has an empty target"
        );
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds character device `path` with permission bits `perm` and number
    /// (`major`, `minor`).
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(path, S_IFCHR | perm, 1, (major, minor), &[])
    }

    /// Whether `path` was added.
    pub fn contains(&self, path: &str) -> bool {
        self.paths.contains(path)
    }

    /// Writes the trailer, pads the archive to 512 bytes and hands back the output.
    pub fn finish(mut self) -> Result<W> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0)?;
        let pad = (512 - self.written % 512) % 512;
        self.write(&vec![0; usize::try_from(pad)?])?;
        self.out.flush().context("Cannot flush the cpio archive")?;
        Ok(self.out)
    }

    /// Checks `path` and writes one entry.
    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        check_path(path)?;
        if let Some((parent, _)) = path.rsplit_once('/')
            && !self.dirs.contains(parent)
        {
            bail!("Cannot add `{path}` to the initramfs before its directory `{parent}`");
        }
        ensure!(
            self.paths.insert(path.to_owned()),
            "`{path}` is already in the initramfs"
        );
        let ino = self.next_ino;
        self.next_ino += 1;
        let size = u32::try_from(data.len())
            .with_context(|| format!("`{path}` is too large for a newc archive"))?;
        self.header(path, ino, mode, nlink, rdev, size)?;
        self.write(data)?;
        self.pad4()
    }

    /// Writes a header and its padded name.
    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: u32,
    ) -> Result<()> {
        let namesize = u32::try_from(name.len() + 1)?;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad4()
    }

    /// Pads with zeros to a multiple of four bytes.
    fn pad4(&mut self) -> Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.write(&[0; 3][..usize::try_from(pad)?])
    }

    /// Writes raw bytes.
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .context("Cannot write the cpio archive")?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Refuses paths the kernel's unpacker would mishandle.
fn check_path(path: &str) -> Result<()> {
    ensure!(!path.is_empty(), "An initramfs path is empty");
    ensure!(
        !path.starts_with('/'),
        "Initramfs path `{path}` must be relative"
    );
    ensure!(
        !path.contains('\0'),
        "Initramfs path `{path:?}` contains a NUL byte"
    );
    ensure!(
        path.split('/').all(|part| !matches!(part, "" | "." | "..")),
        "Initramfs path `{path}` has an empty, `.` or `..` part"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    /// One entry read back: name, mode, rdev, data.
    type Parsed = (String, u32, (u32, u32), Vec<u8>);

    /// Reads a newc archive back, independently of the writer.
    fn parse(mut bytes: &[u8]) -> Vec<Parsed> {
        let mut total = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| {
                let text = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(text, 16).unwrap()
            };
            let (mode, size, rdev, namesize) =
                (field(1), field(6), (field(9), field(10)), field(11));
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&bytes[110..name_end - 1])
                .unwrap()
                .to_owned();
            let data_start = name_end.next_multiple_of(4);
            let data_end = data_start + size as usize;
            let data = bytes[data_start..data_end].to_vec();
            let next = data_end.next_multiple_of(4);
            total += next;
            bytes = &bytes[next..];
            if name == TRAILER {
                assert_eq!((total + bytes.len()) % 512, 0);
                assert!(bytes.iter().all(|&b| b == 0));
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("bin/tool", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.symlink("bin/sh", "/bin/busybox").unwrap();
        w.dir("dev", 0o755).unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("empty", 0o644, b"").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_through_a_parser() {
        let entries = parse(&sample());
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/tool", "bin/sh", "dev", "dev/console", "empty"]
        );
        assert_eq!(entries[0].1, S_IFDIR | 0o755);
        assert_eq!(entries[1].1, S_IFREG | 0o755);
        assert_eq!(entries[1].3, b"#!/bin/sh\necho hi\n");
        assert_eq!(entries[2].1, S_IFLNK | 0o777);
        assert_eq!(entries[2].3, b"/bin/busybox");
        assert_eq!((entries[4].1, entries[4].2), (S_IFCHR | 0o600, (5, 1)));
        assert!(entries[5].3.is_empty());
        // Same tree, same bytes.
        assert_eq!(sample(), sample());
    }

    #[test]
    fn gnu_cpio_lists_and_extracts_it() {
        let cpio =
            which::which("cpio").expect("`cpio` is missing: `cargo xtask setup` installs it");
        let dir = std::env::temp_dir().join(format!("dwcp-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(cpio)
            .args([
                "-i",
                "--quiet",
                "--make-directories",
                "--no-absolute-filenames",
            ])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        // No root-only device node in this archive: extracting needs no privilege.
        let mut w = Writer::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("bin/tool", 0o750, b"data").unwrap();
        w.symlink("bin/sh", "tool").unwrap();
        let archive = w.finish().unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(dir.join("bin/tool")).unwrap(), b"data");
        assert_eq!(
            std::fs::read_link(dir.join("bin/sh")).unwrap().to_str(),
            Some("tool")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_bad_paths() {
        let mut w = Writer::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        for (path, wanted) in [
            ("", "is empty"),
            ("/bin/x", "must be relative"),
            ("bin/../x", "`..` part"),
            ("bin//x", "empty, `.`"),
            ("etc/x", "before its directory `etc`"),
            ("bin", "already in the initramfs"),
        ] {
            let err = w.file(path, 0o644, b"").unwrap_err().to_string();
            assert!(err.contains(wanted), "{path:?}: {err}");
        }
        assert!(w.symlink("bin/sh", "").is_err());
        assert!(w.contains("bin") && !w.contains("bin/x"));
    }
}
