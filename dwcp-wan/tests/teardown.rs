//! Nothing an emulated link sets up outlives it: not on `stop`, not on drop, not when a
//! test panics while using it, and not (after the next start) when its process is killed.

mod support;

#[cfg(test)] // Marks the helpers below as test code for clippy (unwrap allowed).
mod privileged {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use dwcp_wan::{LinkProfile, WanLink};

    use crate::support::{namespaces_of, thread_count, udp_rtts};

    fn lan() -> LinkProfile {
        LinkProfile::builtin("lan-1g").unwrap()
    }

    #[test]
    fn stop_and_drop_remove_namespaces_and_threads() {
        let me = std::process::id();
        let threads = thread_count();
        let link = WanLink::start(&lan()).unwrap();
        let names = namespaces_of(me);
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&link.a().netns) && names.contains(&link.b().netns));
        assert!(names.contains(&link.router_netns().to_owned()));
        assert_eq!(
            thread_count(),
            threads + 3,
            "a reader and two delivery threads"
        );
        // The link carries traffic, so the threads and TUN device were really in use.
        assert_eq!(udp_rtts(&link, 5, 1).len(), 5);
        let stats = link.stop().unwrap();
        assert_eq!(stats.a_to_b.packets, 6);
        assert!(namespaces_of(me).is_empty(), "{:?}", namespaces_of(me));
        assert_eq!(thread_count(), threads);

        let dropped = WanLink::start(&lan()).unwrap();
        assert_eq!(namespaces_of(me).len(), 3);
        drop(dropped);
        assert!(namespaces_of(me).is_empty());
        assert_eq!(thread_count(), threads);
    }

    #[test]
    fn a_panic_while_using_the_link_still_tears_it_down() {
        let me = std::process::id();
        let threads = thread_count();
        let result = std::panic::catch_unwind(|| {
            let link = WanLink::start(&lan()).unwrap();
            link.a().run_in(|| panic!("test panics inside host A"));
        });
        let panic = result.unwrap_err();
        assert_eq!(
            panic.downcast_ref::<&str>(),
            Some(&"test panics inside host A")
        );
        assert!(namespaces_of(me).is_empty(), "{:?}", namespaces_of(me));
        assert_eq!(thread_count(), threads);
    }

    /// Starts the binary on `lan-1g` and waits until it says the link is up.
    fn start_binary() -> std::process::Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dwcp-wan"))
            .args(["--profile", "lan-1g"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("the binary prints until the link is up")
                .unwrap();
            if line.starts_with("Ctrl-C tears the link down") {
                break;
            }
        }
        // Keep reading (the live statistics) so the binary never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        child
    }

    #[test]
    fn a_killed_binary_leaves_namespaces_that_the_next_start_removes() {
        let mut child = start_binary();
        let pid = child.id();
        assert_eq!(namespaces_of(pid).len(), 3);
        child.kill().unwrap(); // SIGKILL: no chance to tear down.
        child.wait().unwrap();
        assert_eq!(
            namespaces_of(pid).len(),
            3,
            "SIGKILL leaves the namespaces behind"
        );
        let link = WanLink::start(&lan()).unwrap();
        assert!(namespaces_of(pid).is_empty(), "{:?}", namespaces_of(pid));
        link.stop().unwrap();
    }

    #[test]
    fn the_binary_tears_down_on_sigint_and_sigterm() {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            let mut child = start_binary();
            let pid = child.id();
            assert_eq!(namespaces_of(pid).len(), 3);
            // SAFETY: kill takes plain integers; `pid` is our own child, not yet reaped.
            assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
            let status = child.wait().unwrap();
            assert!(status.success(), "signal {signal}: {status}");
            assert!(
                namespaces_of(pid).is_empty(),
                "signal {signal}: {:?}",
                namespaces_of(pid)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    #[test]
    fn an_invalid_profile_is_refused_before_anything_is_created() {
        let me = std::process::id();
        let profile = LinkProfile { loss: 1.5, ..lan() };
        let error = WanLink::start(&profile).err().unwrap();
        assert_eq!(error.to_string(), "Invalid link profile");
        assert!(namespaces_of(me).is_empty());
    }

    #[test]
    fn without_root_the_binary_refuses_before_creating_anything() {
        let output = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_dwcp-wan"),
            ])
            .args(["--profile", "lan-1g"])
            .output()
            .expect("setpriv (util-linux) is installed");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains("Emulating a WAN link needs root"),
            "{stderr}"
        );
    }
}
