//! Reading the source of a file-backed transfer (regular file or block device): its
//! size, whether it changed under the transfer, and sending one block of it.
//!
//! The block is read with `pread` into a pool block, where its XXH3-128 is computed
//! while it is hot in the cache: its low word is the frame's payload check, the whole
//! hash goes into the transfer digest. The payload then goes to the socket with
//! `sendfile` straight from the page cache after the header (sent with `MSG_MORE` so
//! both leave in the same segments): the kernel does not copy it into socket buffers,
//! so the sender touches each byte once. Where `sendfile`
//! cannot serve the source (`EINVAL`/`ENOSYS`), the stream falls back to writing the
//! pool block, which holds the same bytes.
//!
//! A source that shrinks while it is sent is a clear error ([`source_shrank`]), never a
//! short block: `pread` and `sendfile` both report the end of file, and no memory
//! mapping of the source exists that could fault.
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
};
use crate::{
    pba::Block,
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

impl FileBlockSender {
    /// Reads block `at` from `file` into `block`, records its hash in `hashes` and sends
    /// it as one data frame.
    pub(super) fn send(
        &mut self,
        writer: &mut FrameWriter<TcpStream>,
        file: &File,
        block: &mut Block,
        at: BlockAt,
        hashes: &BlockHashes,
    ) -> Result<(), AmstError> {
        let buf = block
            .as_mut_full()
            .get_mut(..at.len)
            .ok_or_else(|| AmstError::Invalid(format!("block of {} bytes too large", at.len)))?;
        file.read_exact_at(buf, at.offset)
            .map_err(|e| source_error(e, at))?;
        block.set_len(at.len);
        let hash = block_hash(block);
        hashes.set(at.seq, hash);
        if !self.sendfile {
            return Ok(writer.write_hashed_frame(
                FrameType::Data,
                at.seq,
                at.offset,
                block,
                &hash,
            )?);
        }
        // Number the frame through the writer, then describe the payload sendfile sends.
        let len = u32::try_from(at.len)
            .map_err(|_| AmstError::Invalid(format!("block of {} bytes too large", at.len)))?;
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
            match sendfile(socket, file, at.offset + sent as u64, at.len - sent) {
                Ok(0) => return Err(source_shrank(at, at.offset + sent as u64)),
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if sent == 0
                        && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) =>
                {
                    // This source cannot be spliced: send the same bytes from the block
                    // (the header is out already) and stop trying for this stream.
                    tracing::debug!(error = %e, "sendfile unavailable; writing from the block");
                    self.sendfile = false;
                    write_all(socket, block).map_err(ProtocolError::Io)?;
                    return Ok(());
                }
                Err(e) => return Err(ProtocolError::Io(e).into()),
            }
        }
        Ok(())
    }
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
