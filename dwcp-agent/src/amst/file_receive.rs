//! One data connection of a file transfer on the receiving side: check each frame,
//! write its block in place, record its hash, acknowledge it.
//!
//! One pool block per connection is the buffer every payload is read into. Writing the
//! next block while the following one arrives (a writer thread per connection, two
//! blocks) was measured and dropped: on one stream it gained about 5% goodput for 7%
//! more receiver CPU per GB, within this machine's noise (docs/benchmarks.md).

use std::{net::TcpStream, sync::atomic::Ordering, time::Duration};

use super::{AmstError, file_session::FileSession};
use crate::{
    pba::BlockPool,
    protocol::{
        ProtocolError,
        frame::{Codec, FrameHeader, FrameReader, FrameType, FrameWriter},
    },
};

/// How long a new connection waits for its pool block.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Serves one data connection of `session` until the sender closes it; `written` counts
/// the payload bytes written.
pub(super) fn serve(
    stream: TcpStream,
    session: &FileSession,
    pool: &BlockPool,
    written: &std::sync::atomic::AtomicU64,
) -> Result<(), AmstError> {
    let max = u32::try_from(session.block_size).unwrap_or(super::receiver::MAX_BLOCK);
    let mut reader = FrameReader::new(stream.try_clone().map_err(ProtocolError::Io)?, max);
    let mut writer = FrameWriter::new(stream);
    let mut lease = pool.acquire(POOL_WAIT)?;
    let buf = lease.as_mut_full();
    while let Some(header) = reader.read_header()? {
        check_header(&header, session)?;
        let hash = reader.read_payload(&header, buf)?;
        let payload = &buf[..header.payload_len as usize];
        session
            .write_block(payload, header.offset)
            .map_err(|source| AmstError::File {
                what: "Cannot write",
                path: session.part.display().to_string(),
                source,
            })?;
        let len = payload.len() as u64;
        session.hashes.set(header.seq, hash);
        session.mark(header.seq);
        session.unsaved.fetch_add(len, Ordering::Relaxed);
        written.fetch_add(len, Ordering::Relaxed);
        writer.write_frame(FrameType::Ack, header.seq, 0, &[])?;
    }
    Ok(())
}

/// Refuses a frame that is not a raw data block lying where the transfer has one.
fn check_header(header: &FrameHeader, session: &FileSession) -> Result<(), AmstError> {
    if header.kind != FrameType::Data {
        return Err(ProtocolError::Unexpected {
            expected: "data",
            got: format!("{:?}", header.kind),
        }
        .into());
    }
    if header.codec != Codec::None {
        return Err(ProtocolError::Malformed(format!(
            "block {} encoded with {:?}: file transfers carry raw blocks",
            header.seq, header.codec
        ))
        .into());
    }
    let expected_offset = header.seq.checked_mul(session.block_size);
    let expected_len =
        expected_offset.map(|o| session.block_size.min(session.size.saturating_sub(o)));
    if expected_offset != Some(header.offset)
        || expected_len != Some(u64::from(header.payload_len))
        || header.offset >= session.size
    {
        return Err(ProtocolError::Malformed(format!(
            "block {} at offset {} with {} bytes does not fit a {}-byte transfer",
            header.seq, header.offset, header.payload_len, session.size
        ))
        .into());
    }
    Ok(())
}
