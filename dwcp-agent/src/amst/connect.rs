//! Opening a transfer's connections to the receiver: TCP connect, socket tuning for data
//! streams, the PSK handshake; data streams of a session are opened concurrently.

use std::{
    net::{SocketAddr, TcpStream},
    thread,
};

use super::{AmstError, sender::SendOptions};
use crate::protocol::{
    frame::{FrameReader, FrameWriter},
    handshake::{self, Psk, Role},
    messages::MAX_CONTROL_LEN,
};

/// Both halves of one authenticated connection.
pub(super) type Connection = (FrameReader<TcpStream>, FrameWriter<TcpStream>);

/// Opens and authenticates `n` data streams of `session` at once, not one after another.
pub(super) fn connect_data_streams(
    addr: SocketAddr,
    psk: &Psk,
    session: u64,
    options: &SendOptions,
    n: usize,
) -> Vec<Result<Connection, AmstError>> {
    thread::scope(|scope| {
        let pending: Vec<_> = (0..n)
            .map(|_| scope.spawn(|| connect(addr, psk, Role::Data { session }, options)))
            .collect();
        pending
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(AmstError::Invalid("connect thread panicked".into())))
            })
            .collect()
    })
}

/// Opens and authenticates one connection.
pub(super) fn connect(
    addr: SocketAddr,
    psk: &Psk,
    role: Role,
    options: &SendOptions,
) -> Result<Connection, AmstError> {
    let connect_err = |source| AmstError::Connect { addr, source };
    let mut stream =
        TcpStream::connect_timeout(&addr, options.connect_timeout).map_err(connect_err)?;
    if matches!(role, Role::Data { .. }) {
        options.tuning.apply(&stream).map_err(connect_err)?;
    } else {
        stream.set_nodelay(true).map_err(connect_err)?;
    }
    handshake::client(&mut stream, psk, role)?;
    let reader = stream.try_clone().map_err(connect_err)?;
    Ok((
        FrameReader::new(reader, MAX_CONTROL_LEN),
        FrameWriter::new(stream),
    ))
}
