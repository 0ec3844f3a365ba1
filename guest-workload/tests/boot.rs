//! Boots the guest `cargo xtask guest` built under QEMU (TCG: KVM hangs Linux guests on
//! this machine kind) and checks what its console says: every workload starts, `dirty`
//! and `table` verify their memory, a bad option is reported, and an ACPI power-button
//! press (QMP `system_powerdown`) makes the guest power itself off.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a panic with the message is the failure report"
)]

mod privileged {
    use std::{
        env, fs,
        io::{BufReader, ErrorKind, Write as _},
        os::unix::net::UnixStream,
        path::{Path, PathBuf},
        process::{Child, Command, ExitStatus, Stdio},
        thread,
        time::{Duration, Instant},
    };

    /// How long a guest may take to say something, on a busy 2-core machine under TCG.
    const PATIENCE: Duration = Duration::from_secs(240);

    /// The folder holding `vmlinuz` and `initrd.gz` (as `cargo xtask guest` chooses it).
    fn guest_dir() -> PathBuf {
        let cache = env::var_os("DWCP_CACHE_DIR").map_or_else(
            || {
                let target = env::var_os("CARGO_TARGET_DIR").map_or_else(
                    || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
                    PathBuf::from,
                );
                target.join("dwcp-cache")
            },
            PathBuf::from,
        );
        let dir = cache.join("guest");
        for file in ["vmlinuz", "initrd.gz"] {
            assert!(
                dir.join(file).is_file(),
                "{} is missing: run `cargo xtask guest` first",
                dir.join(file).display()
            );
        }
        dir
    }

    /// A running guest; killed (if still running) and cleaned up when dropped.
    struct Guest {
        /// QEMU.
        child: Child,
        /// Serial log and QMP socket.
        dir: tempfile::TempDir,
        /// When QEMU was started.
        started: Instant,
    }

    impl Guest {
        /// Boots the guest with `options` appended to `console=ttyS0`.
        fn boot(options: &str) -> Self {
            let guest = guest_dir();
            let dir = tempfile::tempdir().expect("Cannot create a temporary folder");
            let log = dir.path().join("serial.log");
            let qmp = dir.path().join("qmp.sock");
            let mut cmd = Command::new("qemu-system-x86_64");
            cmd.args([
                "-accel",
                "tcg",
                "-m",
                "256",
                "-nographic",
                "-display",
                "none",
            ]);
            cmd.args(["-monitor", "none", "-nic", "none", "-no-reboot"]);
            cmd.arg("-kernel").arg(guest.join("vmlinuz"));
            cmd.arg("-initrd").arg(guest.join("initrd.gz"));
            cmd.arg("-append").arg(format!("console=ttyS0 {options}"));
            cmd.arg("-serial").arg(format!("file:{}", log.display()));
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", qmp.display()));
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
            let child = match cmd.spawn() {
                Ok(child) => child,
                Err(err) if err.kind() == ErrorKind::NotFound => {
                    panic!("qemu-system-x86_64 is missing: `cargo xtask setup` installs it")
                }
                Err(err) => panic!("Cannot start qemu-system-x86_64: {err}"),
            };
            Self {
                child,
                dir,
                started: Instant::now(),
            }
        }

        /// The serial console so far.
        fn console(&self) -> String {
            let bytes = fs::read(self.dir.path().join("serial.log")).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }

        /// Waits until `done` holds for the console lines; panics with the console if
        /// QEMU exits or [`PATIENCE`] runs out first.
        fn wait_for(&mut self, what: &str, done: impl Fn(&[&str]) -> bool) {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let console = self.console();
                let lines: Vec<&str> = console.lines().map(str::trim_end).collect();
                if done(&lines) {
                    return;
                }
                if let Some(status) = self.child.try_wait().expect("Cannot poll QEMU") {
                    panic!("QEMU exited ({status}) before {what}; console:\n{console}");
                }
                assert!(
                    Instant::now() < deadline,
                    "No {what} within {PATIENCE:?}; console:\n{console}"
                );
                thread::sleep(Duration::from_millis(200));
            }
        }

        /// Presses the power button through QMP.
        fn power_down(&self) {
            let path = self.dir.path().join("qmp.sock");
            let stream = UnixStream::connect(&path).expect("Cannot connect to QMP");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("Cannot set the QMP read timeout");
            let mut reader =
                BufReader::new(stream.try_clone().expect("Cannot clone the QMP socket"));
            let greeting = read_json(&mut reader);
            assert!(greeting.get("QMP").is_some(), "{greeting}");
            for command in ["qmp_capabilities", "system_powerdown"] {
                writeln!(&stream, "{{\"execute\": \"{command}\"}}").expect("Cannot write to QMP");
                // Events (e.g. POWERDOWN) may come before the answer.
                loop {
                    let reply = read_json(&mut reader);
                    assert!(reply.get("error").is_none(), "{command}: {reply}");
                    if reply.get("return").is_some() {
                        break;
                    }
                }
            }
        }

        /// Waits for QEMU to exit by itself.
        fn wait_exit(&mut self) -> ExitStatus {
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Some(status) = self.child.try_wait().expect("Cannot poll QEMU") {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "QEMU still runs {PATIENCE:?} after the power button; console:\n{}",
                    self.console()
                );
                thread::sleep(Duration::from_millis(200));
            }
        }
    }

    impl Drop for Guest {
        fn drop(&mut self) {
            if self.child.try_wait().ok().flatten().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// One JSON line from QMP.
    fn read_json(reader: &mut impl std::io::BufRead) -> serde_json::Value {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("Cannot read from QMP");
        assert!(n > 0, "QMP closed the connection");
        serde_json::from_str(&line).expect("QMP sent a line that is not JSON")
    }

    /// The lines after `READY`.
    fn after_ready<'a>(lines: &[&'a str]) -> Vec<&'a str> {
        lines
            .iter()
            .skip_while(|l| !l.starts_with("DWCP-GUEST READY "))
            .skip(1)
            .copied()
            .collect()
    }

    /// Whether the workload has verified its memory at least twice, and never failed.
    fn verified_twice(lines: &[&str]) -> bool {
        let after = after_ready(lines);
        assert!(
            !after.iter().any(|l| l.starts_with("DWCP-VERIFY FAIL")),
            "verification failed: {after:#?}"
        );
        after
            .iter()
            .filter(|l| l.starts_with("DWCP-VERIFY ok "))
            .count()
            >= 2
    }

    #[test]
    fn dirty_guest_verifies_its_memory_and_powers_off_on_the_button() {
        let mut guest = Guest::boot("dwcp.workload=dirty dwcp.mem_mib=32");
        guest.wait_for("READY", |lines| {
            lines.contains(&"DWCP-GUEST READY workload=dirty mem_mib=32")
        });
        eprintln!(
            "boot to READY under TCG: {:.1} s",
            guest.started.elapsed().as_secs_f64()
        );
        guest.wait_for("two verified passes", verified_twice);
        let console = guest.console();
        let verify = console
            .lines()
            .rfind(|l| l.starts_with("DWCP-VERIFY ok "))
            .unwrap();
        assert!(verify.contains(" pages=8192 "), "{verify}");
        assert!(
            console
                .lines()
                .filter(|l| l.starts_with("DWCP-GUEST HEARTBEAT t="))
                .count()
                >= 2
        );
        guest.power_down();
        let status = guest.wait_exit();
        assert!(status.success(), "QEMU exited with {status}");
        let console = guest.console();
        assert!(console.contains("DWCP-GUEST POWEROFF"), "{console}");
        assert!(console.contains("reboot: Power down"), "{console}");
    }

    #[test]
    fn table_guest_verifies_its_records() {
        let mut guest = Guest::boot("dwcp.workload=table dwcp.mem_mib=16 dwcp.rate_mib_s=4");
        guest.wait_for("READY", |lines| {
            lines.contains(&"DWCP-GUEST READY workload=table mem_mib=16")
        });
        guest.wait_for("two verified passes", verified_twice);
    }

    #[test]
    fn compress_guest_archives_a_round() {
        let mut guest = Guest::boot("dwcp.workload=compress dwcp.mem_mib=8");
        guest.wait_for("READY", |lines| {
            lines.contains(&"DWCP-GUEST READY workload=compress mem_mib=8")
        });
        guest.wait_for("a compress round", |lines| {
            let after = after_ready(lines);
            assert!(
                !after.iter().any(|l| l.starts_with("DWCP-COMPRESS FAIL")),
                "{after:#?}"
            );
            after
                .iter()
                .any(|l| l.starts_with("DWCP-COMPRESS ok round=1 text_bytes=4194304 "))
        });
    }

    #[test]
    fn bad_option_is_reported_and_the_guest_keeps_running() {
        let mut guest = Guest::boot("dwcp.workload=dirt");
        guest.wait_for("the error line", |lines| {
            lines.contains(
                &"DWCP-GUEST ERROR Unknown workload `dirt` (expected idle, compress, table or dirty)",
            )
        });
        thread::sleep(Duration::from_secs(2));
        assert!(
            guest.child.try_wait().unwrap().is_none(),
            "the guest stopped"
        );
    }
}
