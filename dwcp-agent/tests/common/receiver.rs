//! An in-process receiver for transfer tests, and test data.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
};

use dwcp_agent::{
    amst::{
        receiver::{Receiver, ReceiverConfig},
        socket::SocketTuning,
    },
    protocol::handshake::Psk,
};

/// The pre-shared key test receivers use.
pub const KEY: &[u8] = b"a-test-key-of-32-bytes-for-dwcp!";

/// [`KEY`] as a key.
pub fn psk() -> Psk {
    Psk::new(KEY).expect("key")
}

/// An in-process receiver on a loopback port, stopped when dropped.
pub struct TestReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The receiver itself (to register stream consumers).
    pub receiver: Arc<Receiver>,
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestReceiver {
    pub fn start() -> Self {
        Self::start_with(TcpListener::bind("127.0.0.1:0").expect("bind"))
    }

    pub fn start_with(listener: TcpListener) -> Self {
        Self::start_in(listener, tempfile::tempdir().expect("tempdir"))
    }

    /// A receiver writing into `dir`.
    pub fn start_in(listener: TcpListener, dir: tempfile::TempDir) -> Self {
        let receiver = Receiver::new(ReceiverConfig {
            dir: dir.path().to_owned(),
            psk: psk(),
            tuning: SocketTuning::default(),
        })
        .expect("receiver");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let serving = Arc::clone(&receiver);
        let thread = thread::spawn(move || serving.serve(listener, &flag).expect("serve"));
        Self {
            addr,
            receiver,
            dir,
            stop,
            thread: Some(thread),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `len` random bytes to `dir/name`.
pub fn random_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    let mut left = len;
    let mut chunk = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(chunk.len());
        rand::Rng::fill(&mut rand::rng(), &mut chunk[..n]);
        f.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    path
}

/// Fails unless the two files have the same bytes.
pub fn assert_same(a: &Path, b: &Path) {
    let (x, y) = (
        std::fs::read(a).expect("read a"),
        std::fs::read(b).expect("read b"),
    );
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}
