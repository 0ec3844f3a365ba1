//! Reading the source of a file-backed transfer (regular file or block device): its
//! size, whether it changed under the transfer, and sending one block of it.
//!
//! Each block's XXH3-128 is computed where the block lies in the page cache, through a
//! read-only mapping of the source ([`SourceMap`]): its low word is the frame's payload
//! check, the whole hash goes into the transfer digest. The payload then goes to the
//! socket with `sendfile` straight from the page cache after the header (sent with
//! `MSG_MORE` so both leave in the same segments). The sender thus reads each byte once
//! and copies none. Where the source cannot be mapped, the block is read with `pread`
//! into a pool block and hashed there; where `sendfile` cannot serve the source
//! (`EINVAL`/`ENOSYS`), the stream writes the mapped bytes or the pool block instead.
//!
//! A source that shrinks while it is sent is a clear error ([`source_shrank`]), never a
//! short block and never a crash: `pread` and `sendfile` report the end of file, and the
//! mapping's `SIGBUS` guard reports a read beyond it.
//!
//! The bytes `sendfile` sends are read again from the page cache, after the hashes were
//! taken: if the source changes in between, the receiver's payload check or the whole-
//! transfer digest refuses the transfer.

use std::{
    fs::File,
    io::ErrorKind,
    net::TcpStream,
    os::{fd::AsRawFd as _, unix::fs::FileExt as _},
};

use super::{
    AmstError,
    digest::{BlockHashes, block_hash},
    source_map::SourceMap,
};
use crate::{
    pba::{Block, BlockPool},
    protocol::{
        ProtocolError,
        frame::{Codec, FrameType, FrameWriter},
    },
};

/// How one stream sends file payloads.
#[derive(Debug)]
pub(super) struct FileBlockSender {
    /// Whether `sendfile` works for this source and socket (cleared on `EINVAL`).
    sendfile: bool,
}

impl Default for FileBlockSender {
    fn default() -> Self {
        Self { sendfile: true }
    }
}

/// Where a block lies in the source.
#[derive(Clone, Copy, Debug)]
pub(super) struct BlockAt {
    /// Sequence number.
    pub seq: u64,
    /// Byte offset in the source.
    pub offset: u64,
    /// Length in bytes (the last block may be short).
    pub len: usize,
}

/// A file-backed source: the file, and its guarded mapping where it could be mapped.
#[derive(Clone, Copy, Debug)]
pub(super) struct Source<'a> {
    /// The open source, for `sendfile` (and `pread` without a mapping).
    pub file: &'a File,
    /// The whole source mapped read-only, hashed in place.
    pub map: Option<&'a SourceMap>,
}

impl FileBlockSender {
    /// Hashes block `at` of `source` (in place through the mapping, else after a `pread`
    /// into a block from `pool`), records the hash in `hashes` and sends the block as
    /// one data frame.
    pub(super) fn send(
        &mut self,
        writer: &mut FrameWriter<TcpStream>,
        source: Source<'_>,
        pool: &BlockPool,
        at: BlockAt,
        hashes: &BlockHashes,
    ) -> Result<(), AmstError> {
        let (hash, held) = match source.map {
            Some(map) => {
                let hash = map
                    .hash(at.offset, at.len)
                    .ok_or_else(|| shrank_under_map(source.file, at))?;
                (hash, Held::Mapped(map))
            }
            None => {
                let mut b = pool.acquire(POOL_WAIT)?;
                let buf = b.as_mut_full().get_mut(..at.len).ok_or_else(|| {
                    AmstError::Invalid(format!("block of {} bytes too large", at.len))
                })?;
                source
                    .file
                    .read_exact_at(buf, at.offset)
                    .map_err(|e| source_error(e, at))?;
                b.set_len(at.len);
                (block_hash(&b), Held::Read(b))
            }
        };
        hashes.set(at.seq, hash);
        let len = u32::try_from(at.len)
            .map_err(|_| AmstError::Invalid(format!("block of {} bytes too large", at.len)))?;
        if !self.sendfile {
            return writer
                .write_hashed_frame(
                    FrameType::Data,
                    at.seq,
                    at.offset,
                    ((Codec::None, len), held.bytes(source.file, at)?),
                    &hash,
                )
                .map_err(|e| match e {
                    ProtocolError::Io(io) => held.write_error(io, source.file, at),
                    other => other.into(),
                });
        }
        // Number the frame through the writer, then describe the payload sendfile sends.
        let header = writer.next_hashed_header(
            FrameType::Data,
            at.seq,
            at.offset,
            (Codec::None, len),
            (len, &hash),
        );
        let socket = writer.get_ref();
        send_more(socket, &header.encode()).map_err(ProtocolError::Io)?;
        let mut sent = 0usize;
        while sent < at.len {
            match sendfile(socket, source.file, at.offset + sent as u64, at.len - sent) {
                Ok(0) => return Err(source_shrank(at, at.offset + sent as u64)),
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if sent == 0
                        && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) =>
                {
                    // This source cannot be spliced: send the same bytes from the block
                    // or the mapping (the header is out already) and stop trying for
                    // this stream.
                    tracing::debug!(error = %e, "sendfile unavailable; writing the bytes");
                    self.sendfile = false;
                    return write_all(socket, held.bytes(source.file, at)?)
                        .map_err(|e| held.write_error(e, source.file, at));
                }
                Err(e) => return Err(ProtocolError::Io(e).into()),
            }
        }
        Ok(())
    }
}

/// Where the hashed bytes of a block are, for a plain socket write.
enum Held<'a> {
    /// In the source's mapping.
    Mapped(&'a SourceMap),
    /// In the pool block they were read into.
    Read(Block),
}

impl Held<'_> {
    /// The bytes of block `at` of `file`.
    fn bytes(&self, file: &File, at: BlockAt) -> Result<&[u8], AmstError> {
        match self {
            Self::Read(block) => Ok(block),
            Self::Mapped(map) => map
                .bytes(at.offset, at.len)
                .ok_or_else(|| shrank_under_map(file, at)),
        }
    }

    /// What a failed socket write of these bytes means. When a mapped source shrinks
    /// under the write, the kernel's copy out of the mapping fails with `EFAULT` (a
    /// fault in kernel mode raises no `SIGBUS`): that is the shrink, not a broken stream.
    fn write_error(&self, e: std::io::Error, file: &File, at: BlockAt) -> AmstError {
        let shrank = matches!(self, Self::Mapped(_))
            && e.raw_os_error() == Some(libc::EFAULT)
            && file
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() < at.offset + at.len as u64);
        if shrank {
            shrank_under_map(file, at)
        } else {
            ProtocolError::Io(e).into()
        }
    }
}

/// How long a stream waits for a pool block when the source has no mapping.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The error for a mapped source that no longer holds block `at`.
fn shrank_under_map(file: &File, at: BlockAt) -> AmstError {
    let eof_at = file.metadata().map_or(at.offset, |m| m.len());
    source_shrank(at, eof_at)
}

/// Size of a regular file or block device.
pub(super) fn source_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek as _, SeekFrom};
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let mut f = file.try_clone()?;
    let end = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(end)
}

/// Fails if the regular file `file` no longer has the size and modification time it had
/// when the transfer started: its blocks may then mix two versions, each with a matching
/// hash, so the digest alone would not notice. (Block devices have no such time.)
pub(super) fn check_unchanged(
    file: &File,
    size: u64,
    mtime: Option<std::time::SystemTime>,
) -> std::io::Result<()> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(());
    }
    let now = meta.modified().ok();
    if meta.len() != size || now != mtime {
        return Err(std::io::Error::other(format!(
            "it had {size} bytes modified at {mtime:?}, now {} bytes modified at {now:?}",
            meta.len()
        )));
    }
    Ok(())
}

/// The error for a source that ended before block `at` did.
pub(super) fn source_shrank(at: BlockAt, eof_at: u64) -> AmstError {
    AmstError::File {
        what: "Source shrank during the transfer:",
        path: format!(
            "block {} wants bytes {}..{} but the file ends at {eof_at}",
            at.seq,
            at.offset,
            at.offset + at.len as u64
        ),
        source: std::io::Error::from(ErrorKind::UnexpectedEof),
    }
}

fn source_error(e: std::io::Error, at: BlockAt) -> AmstError {
    if e.kind() == ErrorKind::UnexpectedEof {
        // `read_exact_at` does not say where the file ended; the block's start is the
        // honest lower bound.
        return source_shrank(at, at.offset);
    }
    AmstError::File {
        what: "Cannot read block of the source at",
        path: format!("offset {}", at.offset),
        source: e,
    }
}

/// Sends all of `bytes` with `MSG_MORE`: more data (the payload) follows at once.
fn send_more(socket: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: the fd is a live socket borrowed from `socket`; `bytes` is valid for
        // reads of its length for the duration of the call.
        let n = unsafe {
            libc::send(
                socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(n) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(_) => {
                let err = std::io::Error::last_os_error();
                if err.kind() != ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

fn write_all(socket: &TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut socket = socket;
    socket.write_all(bytes)
}

/// One `sendfile` call: up to `len` bytes of `file` from `offset` to `socket`.
fn sendfile(socket: &TcpStream, file: &File, offset: u64, len: usize) -> std::io::Result<usize> {
    let mut off = libc::off_t::try_from(offset)
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "offset beyond off_t"))?;
    // SAFETY: both fds are live (borrowed from `socket` and `file`) and `off` is a valid
    // off_t the kernel updates; no user memory is passed.
    let n = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &raw mut off, len) };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, net::TcpListener};

    use super::*;

    #[test]
    fn a_mapped_source_cut_under_a_plain_write_is_reported_as_shrunk() {
        const LEN: usize = 256 << 10;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &vec![7u8; LEN]).unwrap();
        let file = File::open(f.path()).unwrap();
        let map = SourceMap::new(&file, LEN as u64).expect("a regular file maps");
        let held = Held::Mapped(&map);
        let at = BlockAt {
            seq: 3,
            offset: 0,
            len: LEN,
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        // Cut the file after the bytes were handed out, before anything touched them:
        // the kernel's copy into the socket is the first access, and it faults.
        let bytes = held.bytes(&file, at).unwrap();
        f.as_file().set_len(0).unwrap();
        let err = write_all(&socket, bytes).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFAULT), "{err}");
        let reported = held.write_error(err, &file, at).to_string();
        assert!(
            reported.starts_with("Source shrank during the transfer"),
            "{reported}"
        );
        assert!(reported.contains("block 3"), "{reported}");
        // Nothing of the block reached the peer.
        drop(socket);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
        // Other write failures stay what they are.
        let reset = std::io::Error::from_raw_os_error(libc::ECONNRESET);
        let other = held.write_error(reset, &file, at).to_string();
        assert!(!other.contains("shrank"), "{other}");
    }
}
