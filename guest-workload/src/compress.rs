//! The `compress` workload: build text files in tmpfs and archive them, with busybox
//! `tar` and `gzip`, together with a system directory, round after round, so that memory
//! holds page cache of plain files and of compressed archives.
//!
//! Each round rewrites about half of the memory budget as text and adds one archive;
//! the oldest archives are deleted while all of them take more than the other half.
//! Every archive is tested with `gzip -t` before the round reports
//! `DWCP-COMPRESS ok round=<n> text_bytes=<t> archive_bytes=<a>`. A failing round is
//! reported as `DWCP-COMPRESS FAIL round=<n> <error>` and the next one starts.

use std::{
    fs, io,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

/// Bytes in one generated text file.
const FILE_BYTES: u64 = 1 << 20;

/// Words the generated text is made of (so it compresses like prose, not like noise).
const WORDS: &[&str] = &[
    "migration",
    "page",
    "dirty",
    "stream",
    "block",
    "kernel",
    "guest",
    "host",
    "memory",
    "window",
    "latency",
    "copy",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "while",
    "link",
    "queue",
    "delta",
    "codec",
    "verify",
    "archive",
    "round",
    "budget",
    "wan",
];

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// A file or directory of the round could not be written or read.
    #[error("Cannot use {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// `tar` or `gzip` could not be started or failed.
    #[error("`{command}` failed: {detail}")]
    Tool {
        /// The command line.
        command: String,
        /// Exit status or start error.
        detail: String,
    },
}

/// One `compress` workload: its directory, the directory archived with the text, and
/// its memory budget.
#[derive(Debug)]
pub struct Compress {
    /// Where text and archives live (in tmpfs in the guest).
    dir: PathBuf,
    /// A directory archived along with the text each round (`/bin` in the guest).
    extra: PathBuf,
    /// Bytes of text per round.
    text_bytes: u64,
    /// Bytes all kept archives may take.
    archive_budget: u64,
    /// Archives kept, oldest first, with their sizes.
    archives: Vec<(PathBuf, u64)>,
}

/// What one round produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Bytes of text written.
    pub text_bytes: u64,
    /// Bytes of all archives kept.
    pub archive_bytes: u64,
}

impl Compress {
    /// A workload using `mem_bytes` in `dir`, archiving `extra` with its text.
    pub fn new(dir: &Path, extra: &Path, mem_bytes: u64) -> Result<Self, CompressError> {
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            extra: extra.to_path_buf(),
            text_bytes: (mem_bytes / 2).max(FILE_BYTES),
            archive_budget: mem_bytes / 2,
            archives: Vec::new(),
        })
    }

    /// Runs rounds forever, handing `report` each round's line.
    pub fn run(mut self, mut report: impl FnMut(String)) -> ! {
        let mut round = 0u64;
        loop {
            round += 1;
            match self.round(round) {
                Ok(r) => report(format!(
                    "DWCP-COMPRESS ok round={round} text_bytes={} archive_bytes={}",
                    r.text_bytes, r.archive_bytes
                )),
                Err(err) => {
                    report(format!("DWCP-COMPRESS FAIL round={round} {}", chain(&err)));
                    thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Writes this round's text, archives it with the extra directory, tests the archive
    /// and drops the oldest archives beyond the budget.
    pub fn round(&mut self, round: u64) -> Result<Round, CompressError> {
        let text = self.dir.join("text");
        if text.exists() {
            fs::remove_dir_all(&text).map_err(|source| io_error(&text, source))?;
        }
        fs::create_dir(&text).map_err(|source| io_error(&text, source))?;
        let files = self.text_bytes.div_ceil(FILE_BYTES);
        for file in 0..files {
            let path = text.join(format!("part-{file:04}.txt"));
            fs::write(&path, generate_text(round, file, FILE_BYTES))
                .map_err(|source| io_error(&path, source))?;
        }
        let archive = self.dir.join(format!("archive-{round}.tar.gz"));
        let mut tar = Command::new("tar");
        tar.arg("-czf").arg(&archive).arg(&self.extra).arg(&text);
        tool(&mut tar)?;
        let mut gzip = Command::new("gzip");
        gzip.arg("-t").arg(&archive);
        tool(&mut gzip)?;
        let size = fs::metadata(&archive)
            .map_err(|source| io_error(&archive, source))?
            .len();
        self.archives.push((archive, size));
        while self.archives.len() > 1 && self.archive_bytes() > self.archive_budget {
            let (oldest, _) = self.archives.remove(0);
            fs::remove_file(&oldest).map_err(|source| io_error(&oldest, source))?;
        }
        Ok(Round {
            text_bytes: files * FILE_BYTES,
            archive_bytes: self.archive_bytes(),
        })
    }

    /// Bytes of all kept archives.
    fn archive_bytes(&self) -> u64 {
        self.archives.iter().map(|(_, size)| size).sum()
    }
}

/// `len` bytes of text made of [`WORDS`], different for each (round, file).
pub fn generate_text(round: u64, file: u64, len: u64) -> Vec<u8> {
    let capacity = usize::try_from(len).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(capacity);
    let mut state = (round << 32 ^ file).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut column = 0;
    while out.len() < capacity {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = WORDS[usize::try_from(state % WORDS.len() as u64).unwrap_or(0)];
        out.extend_from_slice(word.as_bytes());
        column += word.len() + 1;
        let end = if column > 72 { b'\n' } else { b' ' };
        if end == b'\n' {
            column = 0;
        }
        out.push(end);
    }
    out.truncate(capacity);
    out
}

/// Runs `cmd` quietly; fails unless it exits successfully.
fn tool(cmd: &mut Command) -> Result<(), CompressError> {
    let command = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| CompressError::Tool {
            command: command.clone(),
            detail: err.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(CompressError::Tool {
        command,
        detail: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// The error for an I/O failure on `path`.
fn io_error(path: &Path, source: io::Error) -> CompressError {
    CompressError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `err` and its sources on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let _ = write!(out, "{err}");
    let mut source = err.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_deterministic_and_compressible() {
        let a = generate_text(1, 2, 10_000);
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, generate_text(1, 2, 10_000));
        assert_ne!(a, generate_text(1, 3, 10_000));
        assert!(
            a.iter()
                .all(|b| b.is_ascii_lowercase() || b" \n".contains(b))
        );
    }

    #[test]
    fn rounds_archive_and_keep_within_budget() {
        let dir = std::env::temp_dir().join(format!("dwcp-compress-test-{}", std::process::id()));
        let extra = dir.join("extra");
        fs::create_dir_all(&extra).unwrap();
        fs::write(extra.join("hello"), b"hello").unwrap();
        let work = dir.join("work");
        let mut compress = Compress::new(&work, &extra, 2 * FILE_BYTES).unwrap();
        for round in 1..=3 {
            let r = compress.round(round).unwrap();
            assert_eq!(r.text_bytes, FILE_BYTES);
            assert!(r.archive_bytes > 0 && r.archive_bytes < FILE_BYTES, "{r:?}");
        }
        // Each archive is a quarter of its text at most: several fit the budget.
        let kept: Vec<_> = fs::read_dir(&work)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".tar.gz"))
            .collect();
        assert_eq!(kept.len(), 3, "{kept:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_extra_directory_fails_the_round_clearly() {
        let dir = std::env::temp_dir().join(format!("dwcp-compress-bad-{}", std::process::id()));
        let mut compress = Compress::new(&dir, Path::new("/nonexistent-dwcp"), FILE_BYTES).unwrap();
        let err = compress.round(1).unwrap_err();
        assert!(matches!(err, CompressError::Tool { .. }), "{err}");
        assert!(err.to_string().contains("tar"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
