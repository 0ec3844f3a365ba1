//! Helpers shared by the fuzz targets in `fuzz_targets/`: an in-memory connection whose
//! read side is the fuzz input, and a way to give mutated frame headers valid checksums
//! so that the fuzzer also reaches the checks behind them.

use std::io::{self, Read, Write};

use dwcp_agent::protocol::frame::{payload_check, payload_hash};

/// Magic bytes of a frame header (offset 0).
pub const FRAME_MAGIC: [u8; 4] = *b"DWCF";

/// Fixed 48-byte frame header length (as `dwcp_agent::protocol::frame::HEADER_LEN`).
const HEADER_LEN: usize = dwcp_agent::protocol::frame::HEADER_LEN;

/// An in-memory connection: reads come from `input` (optionally in short pieces, with
/// `Interrupted` errors between them, as a socket may deliver them), writes are discarded.
#[derive(Debug)]
pub struct Wire<'a> {
    input: &'a [u8],
    /// Largest number of bytes one `read` returns (at least 1).
    chunk: usize,
    /// Whether every other `read` fails with `ErrorKind::Interrupted`.
    interrupt: bool,
    interrupted_last: bool,
}

impl<'a> Wire<'a> {
    /// A connection delivering `input` in reads as large as the caller asks for.
    pub fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            chunk: usize::MAX,
            interrupt: false,
            interrupted_last: false,
        }
    }

    /// A connection delivering `input` in reads of at most `chunk` bytes, with every other
    /// read interrupted if `interrupt` is set.
    pub fn choppy(input: &'a [u8], chunk: usize, interrupt: bool) -> Self {
        Self {
            chunk: chunk.max(1),
            interrupt,
            ..Self::new(input)
        }
    }
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.interrupt {
            self.interrupted_last = !self.interrupted_last;
            if self.interrupted_last {
                return Err(io::ErrorKind::Interrupted.into());
            }
        }
        let n = buf.len().min(self.chunk).min(self.input.len());
        let (head, rest) = self.input.split_at(n);
        buf[..n].copy_from_slice(head);
        self.input = rest;
        Ok(n)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Gives a 48-byte header the right magic and header checksum, keeping every other field
/// as the fuzzer chose it.
pub fn fix_header(header: &mut [u8; HEADER_LEN]) {
    header[0..4].copy_from_slice(&FRAME_MAGIC);
    let crc = crc32c::crc32c(&header[..44]);
    header[44..48].copy_from_slice(&crc.to_le_bytes());
}

/// Turns `input` into a frame stream with valid magic and checksums: it is cut into
/// 48-byte headers, each followed by as many payload bytes as its length field announces
/// (or what is left); the payload checksum of each header is set over the payload that
/// follows, then the header checksum. Only the fields the fuzzer chose (type, flags,
/// codec, frame number, sequence, offset, lengths) remain to be checked by the reader.
pub fn fix_stream(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    while let Some((head, rest)) = input.split_first_chunk::<HEADER_LEN>() {
        let mut header = *head;
        let announced = u32::from_le_bytes([header[32], header[33], header[34], header[35]]);
        let len = usize::try_from(announced)
            .unwrap_or(usize::MAX)
            .min(rest.len());
        let (payload, rest) = rest.split_at(len);
        header[40..44].copy_from_slice(&payload_check(&payload_hash(payload)).to_le_bytes());
        fix_header(&mut header);
        out.extend_from_slice(&header);
        out.extend_from_slice(payload);
        input = rest;
    }
    out.extend_from_slice(input);
    out
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use dwcp_agent::protocol::{
        VERSION,
        frame::{Codec, FrameHeader, FrameType, FrameWriter},
        messages::{self, CodecChoice, Control},
    };

    use super::*;

    /// A stream of a control, a data and an ack frame, as `FrameWriter` writes them.
    fn stream() -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new());
        let offer = Control::Offer {
            transfer_id: "t1".into(),
            name: "disk.img".into(),
            size: 5,
            block_size: 4,
            stream: false,
            window: 0,
            codec: CodecChoice::default(),
        };
        messages::send(&mut w, &offer).unwrap();
        w.write_frame(FrameType::Data, 0, 0, b"abcd").unwrap();
        w.write_frame(FrameType::Data, 1, 4, b"e").unwrap();
        w.write_frame(FrameType::Ack, 0, 0, b"").unwrap();
        w.get_ref().clone()
    }

    /// A client's Hello (this build's protocol version) for `role` (1 control, 2 data)
    /// and `session`.
    fn hello(role: u8, session: u64) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[0..4].copy_from_slice(b"DWCH");
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8] = role;
        b[24..32].copy_from_slice(&session.to_le_bytes());
        b[32..64].fill(0x5a);
        b
    }

    /// Every seed: `(target, file name, bytes)`.
    fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
        let header = |kind, payload: &[u8]| {
            let len = u32::try_from(payload.len()).unwrap();
            FrameHeader {
                kind,
                codec: Codec::None,
                frame_no: 1,
                seq: 3,
                offset: 3 << 20,
                payload_len: len,
                raw_len: len,
                payload_check: payload_check(&payload_hash(payload)),
            }
            .encode()
            .to_vec()
        };
        let with_flags = |mut b: Vec<u8>| {
            b.push(1);
            b.extend_from_slice(&64u32.to_le_bytes());
            b
        };
        let mode = |m: u8, s: Vec<u8>| [vec![m], s].concat();
        let messages = [
            Control::Offer {
                transfer_id: "3f2a".into(),
                name: "vm-disk.qcow2".into(),
                size: 1 << 30,
                block_size: 1 << 20,
                stream: false,
                window: 0,
                codec: CodecChoice::default(),
            },
            Control::Accept {
                session_id: 42,
                have: vec![(0, 3), (7, 7)],
            },
            Control::End {
                size: 5,
                blake3: "af13".into(),
            },
            Control::Done {
                blake3: "af13".into(),
            },
            Control::Abort {
                reason: "disk full".into(),
            },
        ];
        let mut challenge = vec![0u8; 80];
        challenge[0..4].copy_from_slice(b"DWCC");
        challenge[4..6].copy_from_slice(&1u16.to_le_bytes());
        let mut verdict = b"DWCV".to_vec();
        verdict.extend_from_slice(&0u32.to_le_bytes());
        let mut auth = vec![0u8; 40];
        auth[0..4].copy_from_slice(b"DWCA");
        let mut out = vec![
            ("frame_header", "data", header(FrameType::Data, b"hello")),
            ("frame_header", "ack", header(FrameType::Ack, b"")),
            ("frame_header", "control", header(FrameType::Control, b"{}")),
            (
                "frame_header",
                "data-fixed-max64",
                with_flags(header(FrameType::Data, b"hello")),
            ),
            ("frame_stream", "raw", mode(0, stream())),
            ("frame_stream", "fixed", mode(1, stream())),
            ("frame_stream", "raw-choppy", mode(0b1_0110, stream())),
            (
                "frame_stream",
                "fixed-small-buffer",
                mode(0b10_0001, stream()),
            ),
            (
                "handshake_server",
                "control",
                [hello(1, 0), auth.clone()].concat(),
            ),
            ("handshake_server", "data", [hello(2, 42), auth].concat()),
            (
                "handshake_client",
                "control",
                [vec![0], challenge.clone(), verdict.clone()].concat(),
            ),
            (
                "handshake_client",
                "data",
                [vec![1], challenge, verdict].concat(),
            ),
        ];
        let names = ["offer", "accept", "end", "done", "abort"];
        for (name, msg) in names.into_iter().zip(messages) {
            out.push(("control_message", name, msg.encode()));
        }
        out
    }

    /// Regenerates `fuzz/seeds/` (`cargo +<nightly> test --lib -- --ignored` in `fuzz/`).
    #[test]
    #[ignore = "writes fuzz/seeds/; run by hand after a protocol change"]
    fn write_seeds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        for (target, name, bytes) in seeds() {
            let target_dir = dir.join(target);
            fs::create_dir_all(&target_dir).unwrap();
            fs::write(target_dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn committed_seeds_match_this_protocol() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        for (target, name, bytes) in seeds() {
            let path = dir.join(target).join(name);
            let committed = fs::read(&path).unwrap();
            assert!(
                committed == bytes,
                "{} is stale: regenerate with `cargo +<nightly> test --lib -- --ignored`",
                path.display()
            );
        }
    }

    #[test]
    fn fixed_stream_keeps_valid_frames() {
        assert_eq!(fix_stream(&stream()), stream());
    }

    #[test]
    fn choppy_wire_delivers_everything() {
        let data: Vec<u8> = (0..=255).collect();
        let mut wire = Wire::choppy(&data, 7, true);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match wire.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::Interrupted),
            }
        }
        assert_eq!(got, data);
    }
}
