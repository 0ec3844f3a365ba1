//! Mutual challenge–response authentication on a pre-shared key.
//!
//! ```text
//! client -> server  Hello     "DWCH" ver_min ver_max role 0*7 caps session nonce_c  (64 B)
//! server -> client  Challenge "DWCC" ver 0*2 caps nonce_s proof_s                   (80 B)
//! client -> server  Auth      "DWCA" 0*4 proof_c                                    (40 B)
//! server -> client  Verdict   "DWCV" status                                         (8 B)
//!
//! proof_s = HMAC-SHA256(psk, "dwcp/1 server" | Hello | nonce_s | ver | caps)
//! proof_c = HMAC-SHA256(psk, "dwcp/1 client" | Hello | Challenge)
//! ```
//!
//! The client checks the server first (so it never sends data to an impostor), then the
//! server checks the client. Both nonces are fresh per connection, so a recorded exchange
//! cannot be replayed; the proofs cover the role and session, so a control handshake
//! cannot be reused to join a data stream to another session.

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{ProtocolError, VERSION, frame::read_exact};

const HELLO_LEN: usize = 64;
const CHALLENGE_LEN: usize = 80;
const AUTH_LEN: usize = 40;
const VERDICT_LEN: usize = 8;
/// Shortest pre-shared key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// A pre-shared key, checked for length.
#[derive(Clone)]
pub struct Psk(Vec<u8>);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(..)")
    }
}

impl Psk {
    /// Wraps key bytes (leading and trailing whitespace removed); refuses short keys.
    pub fn new(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(ProtocolError::Refused(format!(
                "Pre-shared key has {} bytes, at least {MIN_KEY_LEN} are required",
                trimmed.len()
            )));
        }
        Ok(Self(trimmed.to_vec()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }
}

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Control connection: opens a session.
    Control,
    /// Data stream joining `session`.
    Data {
        /// Session from the receiver's Accept.
        session: u64,
    },
}

/// Result of a successful handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// Negotiated protocol version.
    pub version: u16,
    /// Capabilities both sides have.
    pub capabilities: u64,
    /// The client's role.
    pub role: Role,
}

/// Capabilities this build offers (bit set; none defined beyond the base protocol yet).
pub const CAPABILITIES: u64 = 0;

/// Verdict status codes.
const OK: u32 = 0;
const BAD_PROOF: u32 = 1;
const UNKNOWN_SESSION: u32 = 2;

fn random_nonce() -> [u8; 32] {
    rand::random()
}

/// The server's proof: the Hello, the server nonce, version and capabilities (not the
/// proof field of the challenge itself).
fn server_proof(
    psk: &Psk,
    hello: &[u8; HELLO_LEN],
    challenge: &[u8; CHALLENGE_LEN],
) -> Hmac<Sha256> {
    let mut mac = psk.mac();
    mac.update(b"dwcp/1 server");
    mac.update(hello);
    mac.update(&challenge[16..48]);
    mac.update(&challenge[4..6]);
    mac.update(&challenge[8..16]);
    mac
}

/// The client's proof: the Hello and the whole Challenge.
fn client_proof(
    psk: &Psk,
    hello: &[u8; HELLO_LEN],
    challenge: &[u8; CHALLENGE_LEN],
) -> Hmac<Sha256> {
    let mut mac = psk.mac();
    mac.update(b"dwcp/1 client");
    mac.update(hello);
    mac.update(challenge);
    mac
}

/// Client side: authenticates the server, proves the key, waits for the verdict.
pub fn client<S: Read + Write>(s: &mut S, psk: &Psk, role: Role) -> Result<Agreed, ProtocolError> {
    let mut hello = [0u8; HELLO_LEN];
    hello[0..4].copy_from_slice(b"DWCH");
    hello[4..6].copy_from_slice(&VERSION.to_le_bytes());
    hello[6..8].copy_from_slice(&VERSION.to_le_bytes());
    let (role_byte, session) = match role {
        Role::Control => (1u8, 0u64),
        Role::Data { session } => (2u8, session),
    };
    hello[8] = role_byte;
    hello[16..24].copy_from_slice(&CAPABILITIES.to_le_bytes());
    hello[24..32].copy_from_slice(&session.to_le_bytes());
    hello[32..64].copy_from_slice(&random_nonce());
    s.write_all(&hello)?;
    s.flush()?;

    let mut challenge = [0u8; CHALLENGE_LEN];
    read_exact(s, &mut challenge)?;
    if &challenge[0..4] != b"DWCC" {
        return Err(ProtocolError::BadMagic { what: "challenge" });
    }
    let version = u16::from_le_bytes([challenge[4], challenge[5]]);
    if version != VERSION {
        return Err(ProtocolError::Version {
            ours: VERSION,
            min: version,
            max: version,
        });
    }
    let mut caps = [0u8; 8];
    caps.copy_from_slice(&challenge[8..16]);
    let capabilities = u64::from_le_bytes(caps);
    server_proof(psk, &hello, &challenge)
        .verify_slice(&challenge[48..80])
        .map_err(|_| ProtocolError::AuthFailed)?;

    let mut auth = [0u8; AUTH_LEN];
    auth[0..4].copy_from_slice(b"DWCA");
    auth[8..40].copy_from_slice(
        &client_proof(psk, &hello, &challenge)
            .finalize()
            .into_bytes(),
    );
    s.write_all(&auth)?;
    s.flush()?;

    let mut verdict = [0u8; VERDICT_LEN];
    read_exact(s, &mut verdict)?;
    if &verdict[0..4] != b"DWCV" {
        return Err(ProtocolError::BadMagic { what: "verdict" });
    }
    match u32::from_le_bytes([verdict[4], verdict[5], verdict[6], verdict[7]]) {
        OK => Ok(Agreed {
            version,
            capabilities,
            role,
        }),
        BAD_PROOF => Err(ProtocolError::Refused("Wrong pre-shared key".into())),
        UNKNOWN_SESSION => Err(ProtocolError::Refused(format!("Unknown session {session}"))),
        other => Err(ProtocolError::Refused(format!("Status {other}"))),
    }
}

/// Server side. `session_known` tells whether a data stream's session exists. On a bad
/// proof or unknown session the client is told why and an error is returned.
pub fn server<S: Read + Write>(
    s: &mut S,
    psk: &Psk,
    session_known: impl Fn(u64) -> bool,
) -> Result<Agreed, ProtocolError> {
    let mut hello = [0u8; HELLO_LEN];
    read_exact(s, &mut hello)?;
    if &hello[0..4] != b"DWCH" {
        return Err(ProtocolError::BadMagic { what: "hello" });
    }
    let min = u16::from_le_bytes([hello[4], hello[5]]);
    let max = u16::from_le_bytes([hello[6], hello[7]]);
    if !(min..=max).contains(&VERSION) {
        // Tell the client which version we speak (a challenge without a proof, which it
        // checks the version of first), so it reports the mismatch instead of a closed
        // connection. Best effort: we refuse either way.
        let mut challenge = [0u8; CHALLENGE_LEN];
        challenge[0..4].copy_from_slice(b"DWCC");
        challenge[4..6].copy_from_slice(&VERSION.to_le_bytes());
        let _ = s.write_all(&challenge).and_then(|()| s.flush());
        return Err(ProtocolError::Version {
            ours: VERSION,
            min,
            max,
        });
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&hello[16..24]);
    let capabilities = u64::from_le_bytes(word) & CAPABILITIES;
    word.copy_from_slice(&hello[24..32]);
    let session = u64::from_le_bytes(word);
    let role = match hello[8] {
        1 => Role::Control,
        2 => Role::Data { session },
        other => return Err(ProtocolError::Malformed(format!("unknown role {other}"))),
    };

    let mut challenge = [0u8; CHALLENGE_LEN];
    challenge[0..4].copy_from_slice(b"DWCC");
    challenge[4..6].copy_from_slice(&VERSION.to_le_bytes());
    challenge[8..16].copy_from_slice(&capabilities.to_le_bytes());
    challenge[16..48].copy_from_slice(&random_nonce());
    let proof = server_proof(psk, &hello, &challenge)
        .finalize()
        .into_bytes();
    challenge[48..80].copy_from_slice(&proof);
    s.write_all(&challenge)?;
    s.flush()?;

    let mut auth = [0u8; AUTH_LEN];
    read_exact(s, &mut auth)?;
    if &auth[0..4] != b"DWCA" {
        return Err(ProtocolError::BadMagic { what: "auth" });
    }
    let status = if client_proof(psk, &hello, &challenge)
        .verify_slice(&auth[8..40])
        .is_err()
    {
        BAD_PROOF
    } else if matches!(role, Role::Data { session } if !session_known(session)) {
        UNKNOWN_SESSION
    } else {
        OK
    };
    let mut verdict = [0u8; VERDICT_LEN];
    verdict[0..4].copy_from_slice(b"DWCV");
    verdict[4..8].copy_from_slice(&status.to_le_bytes());
    s.write_all(&verdict)?;
    s.flush()?;
    match status {
        OK => Ok(Agreed {
            version: VERSION,
            capabilities,
            role,
        }),
        BAD_PROOF => Err(ProtocolError::AuthFailed),
        _ => Err(ProtocolError::Refused(format!(
            "Data stream for unknown session {session}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{TcpListener, TcpStream},
        thread,
    };

    use super::*;

    fn pair(
        client_key: &'static [u8],
        server_key: &'static [u8],
        role: Role,
    ) -> (Result<Agreed, ProtocolError>, Result<Agreed, ProtocolError>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server_side = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            server(&mut s, &Psk::new(server_key).unwrap(), |session| {
                session == 7
            })
        });
        let client_result = {
            let mut c = TcpStream::connect(addr).unwrap();
            client(&mut c, &Psk::new(client_key).unwrap(), role)
            // `c` closes here, so a server still waiting for Auth sees the end.
        };
        (client_result, server_side.join().unwrap())
    }

    #[test]
    fn same_key_agrees() {
        let (c, s) = pair(b"0123456789abcdef", b"0123456789abcdef", Role::Control);
        assert_eq!(c.unwrap().role, Role::Control);
        assert_eq!(s.unwrap().role, Role::Control);
    }

    #[test]
    fn wrong_key_is_refused_on_both_sides() {
        let (c, s) = pair(b"0123456789abcdef", b"fedcba9876543210", Role::Control);
        // The client detects the impostor server before proving anything.
        assert!(matches!(c, Err(ProtocolError::AuthFailed)), "{c:?}");
        assert!(s.is_err());
    }

    #[test]
    fn unknown_session_is_refused() {
        let (c, s) = pair(
            b"0123456789abcdef",
            b"0123456789abcdef",
            Role::Data { session: 8 },
        );
        assert!(c.unwrap_err().to_string().contains("Unknown session 8"));
        assert!(s.is_err());
        let (c, _) = pair(
            b"0123456789abcdef",
            b"0123456789abcdef",
            Role::Data { session: 7 },
        );
        assert!(c.is_ok());
    }

    #[test]
    fn short_key_is_refused() {
        assert!(
            Psk::new(b"  short \n")
                .unwrap_err()
                .to_string()
                .contains("at least 16")
        );
    }

    /// A control Hello offering only `version`, with a zero nonce, as a peer without
    /// this module's client would send it.
    fn raw_control_hello(version: u16) -> [u8; HELLO_LEN] {
        let mut hello = [0u8; HELLO_LEN];
        hello[0..4].copy_from_slice(b"DWCH");
        hello[4..6].copy_from_slice(&version.to_le_bytes());
        hello[6..8].copy_from_slice(&version.to_le_bytes());
        hello[8] = 1;
        hello
    }

    #[test]
    fn replayed_auth_is_refused() {
        // Record a client's Auth from one session and replay it on a new connection.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let key = Psk::new(b"0123456789abcdef").unwrap();
        let server_key = key.clone();
        let server_side = thread::spawn(move || {
            let mut results = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                results.push(server(&mut s, &server_key, |_| true).is_ok());
            }
            results
        });
        let mut first = TcpStream::connect(addr).unwrap();
        client(&mut first, &key, Role::Control).unwrap();
        // A replayer without the key sends a recorded Hello and Auth verbatim.
        let mut second = TcpStream::connect(addr).unwrap();
        second.write_all(&raw_control_hello(VERSION)).unwrap();
        let mut challenge = [0u8; CHALLENGE_LEN];
        read_exact(&mut second, &mut challenge).unwrap();
        let mut auth = [0u8; AUTH_LEN];
        auth[0..4].copy_from_slice(b"DWCA");
        second.write_all(&auth).unwrap();
        let mut verdict = [0u8; VERDICT_LEN];
        read_exact(&mut second, &mut verdict).unwrap();
        assert_eq!(
            u32::from_le_bytes([verdict[4], verdict[5], verdict[6], verdict[7]]),
            BAD_PROOF
        );
        assert_eq!(server_side.join().unwrap(), vec![true, false]);
    }

    #[test]
    fn peers_of_another_protocol_version_are_refused_on_both_sides() {
        // A version-1 client (CRC32C payload checks) meets this server.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server_side = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            server(&mut s, &Psk::new(b"0123456789abcdef").unwrap(), |_| true)
        });
        let mut old_client = TcpStream::connect(addr).unwrap();
        old_client.write_all(&raw_control_hello(1)).unwrap();
        let mut challenge = [0u8; CHALLENGE_LEN];
        read_exact(&mut old_client, &mut challenge).unwrap();
        assert_eq!(&challenge[0..4], b"DWCC");
        assert_eq!(u16::from_le_bytes([challenge[4], challenge[5]]), VERSION);
        let err = server_side.join().unwrap().unwrap_err();
        assert!(
            matches!(err, ProtocolError::Version { min: 1, max: 1, .. }),
            "{err}"
        );

        // This client meets a version-1 server.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let old_server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hello = [0u8; HELLO_LEN];
            read_exact(&mut s, &mut hello).unwrap();
            let mut challenge = [0u8; CHALLENGE_LEN];
            challenge[0..4].copy_from_slice(b"DWCC");
            challenge[4..6].copy_from_slice(&1u16.to_le_bytes());
            s.write_all(&challenge).unwrap();
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let key = Psk::new(b"0123456789abcdef").unwrap();
        let err = client(&mut c, &key, Role::Control).unwrap_err();
        old_server.join().unwrap();
        assert!(
            err.to_string()
                .contains(&format!("we speak {VERSION}, peer speaks 1..=1")),
            "{err}"
        );
    }

    #[test]
    fn garbage_instead_of_hello_is_refused_without_panic() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server_side = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            server(&mut s, &Psk::new(b"0123456789abcdef").unwrap(), |_| true)
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        c.write_all(&[0u8; 64]).unwrap();
        let err = server_side.join().unwrap().unwrap_err();
        assert!(
            matches!(err, ProtocolError::BadMagic { what: "hello" }),
            "{err}"
        );
    }
}
