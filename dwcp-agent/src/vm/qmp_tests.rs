//! Tests of the QMP client against a real QEMU (no guest: `-S` keeps the vCPUs stopped).

use super::*;

mod privileged {
    use std::process::{Child, Command, Stdio};

    use super::*;

    /// A QEMU with only a QMP socket, killed when dropped.
    struct Qemu {
        child: Child,
        socket: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Qemu {
        fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("qmp.sock");
            let child = Command::new("qemu-system-x86_64")
                .args(["-accel", "tcg", "-S", "-nodefaults", "-display", "none"])
                .args(["-monitor", "none", "-m", "64"])
                .arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", socket.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("qemu-system-x86_64 (install qemu-system-x86: cargo xtask setup)");
            Self {
                child,
                socket,
                _dir: dir,
            }
        }

        async fn connect(&self, timeout: Duration) -> QmpClient {
            for _ in 0..200 {
                if let Ok(client) = QmpClient::connect(&self.socket, timeout).await {
                    return client;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("QMP socket {} never answered", self.socket.display());
        }

        fn signal(&self, signal: i32) {
            let pid = i32::try_from(self.child.id()).unwrap();
            // SAFETY: kill has no memory-safety preconditions; pid is our child.
            assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        }
    }

    impl Drop for Qemu {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn commands_replies_and_events_are_kept_apart() {
        let qemu = Qemu::start();
        let client = Arc::new(qemu.connect(DEFAULT_TIMEOUT).await);
        assert!(
            client.qemu_version().starts_with("7."),
            "{}",
            client.qemu_version()
        );
        let mut events = client.events();
        assert_eq!(client.query_status().await.unwrap(), "prelaunch");
        client.cont().await.unwrap();
        assert_eq!(client.query_status().await.unwrap(), "running");
        client.stop().await.unwrap();
        assert_eq!(client.query_status().await.unwrap(), "paused");
        let mut names = Vec::new();
        while names.len() < 2 {
            let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("events arrive")
                .unwrap();
            names.push(event.name);
        }
        assert_eq!(names, ["RESUME", "STOP"]);
        // The latest of each is kept with QEMU's timestamp (host clock, microseconds).
        let at = |name: &str| {
            client
                .last_event(name)
                .and_then(|e| e.timestamp_us)
                .unwrap_or_else(|| panic!("no timestamped {name}"))
        };
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(at("RESUME") <= at("STOP"), "resumed after it stopped");
        assert!(
            now_us.abs_diff(at("STOP")) < 60_000_000,
            "not a recent host time"
        );
        assert!(client.last_event("SHUTDOWN").is_none());
        // Many requests at once each get their own reply.
        let replies = futures_join(&client, 16).await;
        assert!(replies.iter().all(|s| s == "paused"), "{replies:?}");
        let migrate = client.query_migrate().await.unwrap();
        assert!(migrate.is_object(), "{migrate}");
        client
            .migrate_set_parameters(json!({ "max-bandwidth": 1_073_741_824_u64 }))
            .await
            .unwrap();
        client.quit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), client.closed())
            .await
            .expect("connection closes after quit");
    }

    /// `n` concurrent `query-status` requests on one session.
    async fn futures_join(client: &Arc<QmpClient>, n: usize) -> Vec<String> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let client = Arc::clone(client);
                tokio::spawn(async move { client.query_status().await })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn error_replies_are_errors_and_the_session_goes_on() {
        let qemu = Qemu::start();
        let client = qemu.connect(DEFAULT_TIMEOUT).await;
        let err = client.execute("no-such-command", None).await.unwrap_err();
        match &err {
            QmpError::Command {
                command,
                class,
                desc,
            } => {
                assert_eq!(command, "no-such-command");
                assert_eq!(class, "CommandNotFound");
                assert!(desc.contains("no-such-command"), "{desc}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("QMP command no-such-command failed: CommandNotFound")
        );
        let err = client.migrate("bogus:nowhere").await.unwrap_err();
        assert!(
            matches!(err, QmpError::Command { ref class, .. } if class == "GenericError"),
            "{err:?}"
        );
        assert_eq!(client.query_status().await.unwrap(), "prelaunch");
    }

    #[tokio::test]
    async fn a_qemu_that_dies_mid_request_fails_the_request_at_once() {
        let qemu = Qemu::start();
        let client = Arc::new(qemu.connect(Duration::from_secs(30)).await);
        // Frozen, QEMU cannot answer: the request is pending when it dies.
        qemu.signal(libc::SIGSTOP);
        let pending = tokio::spawn({
            let client = Arc::clone(&client);
            async move { client.query_status().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pending.is_finished());
        let killed = std::time::Instant::now();
        qemu.signal(libc::SIGKILL);
        let result = pending.await.unwrap();
        assert!(
            matches!(result, Err(QmpError::Disconnected { ref command }) if command == "query-status"),
            "{result:?}"
        );
        assert!(killed.elapsed() < Duration::from_secs(30), "not a timeout");
        assert!(client.is_closed());
        let later = client.stop().await.unwrap_err();
        assert!(matches!(later, QmpError::Disconnected { .. }), "{later:?}");
    }

    #[tokio::test]
    async fn a_silent_qemu_times_out_and_late_replies_are_dropped() {
        let qemu = Qemu::start();
        let client = qemu.connect(Duration::from_millis(500)).await;
        qemu.signal(libc::SIGSTOP);
        let err = client.query_status().await.unwrap_err();
        assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("no reply within 500ms"), "{err}");
        qemu.signal(libc::SIGCONT);
        // The late reply to the timed-out request must not be taken for this one's.
        client.cont().await.unwrap();
        assert_eq!(client.query_status().await.unwrap(), "running");
    }

    #[tokio::test]
    async fn connecting_to_nothing_or_to_a_non_qmp_socket_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let err = QmpClient::connect(&missing, DEFAULT_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Cannot connect to the QMP socket"),
            "{err}"
        );
        let fake = dir.path().join("fake.sock");
        let listener = tokio::net::UnixListener::bind(&fake).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"{\"hello\": 1}\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let err = QmpClient::connect(&fake, DEFAULT_TIMEOUT)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a QMP greeting"), "{err}");
    }
}
