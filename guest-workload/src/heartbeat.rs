//! `DWCP-GUEST HEARTBEAT t=<seconds since boot>` once a second, on its own thread, so a
//! host can see that the guest keeps running whatever the workload does.

use std::{
    fs, thread,
    time::{Duration, Instant},
};

/// Where the kernel tells the time since boot.
const UPTIME: &str = "/proc/uptime";

/// The heartbeat line for the contents of `/proc/uptime` (`None` if it is malformed).
pub fn line(uptime: &str) -> Option<String> {
    let seconds = uptime.split_whitespace().next()?;
    seconds.parse::<f64>().ok()?;
    Some(format!("DWCP-GUEST HEARTBEAT t={seconds}"))
}

/// Starts the thread writing a heartbeat every second.
pub fn start() -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("heartbeat".to_owned())
        .spawn(|| {
            let start = Instant::now();
            let mut tick = 0u64;
            loop {
                tick += 1;
                let uptime = fs::read_to_string(UPTIME).unwrap_or_default();
                match line(&uptime) {
                    Some(line) => crate::say(line),
                    None => crate::say(format!(
                        "DWCP-GUEST HEARTBEAT t=unknown ({UPTIME}: {uptime:?})"
                    )),
                }
                let next = Duration::from_secs(tick);
                thread::sleep(next.saturating_sub(start.elapsed()));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_uses_the_first_uptime_field() {
        assert_eq!(
            line("12.34 40.10\n").as_deref(),
            Some("DWCP-GUEST HEARTBEAT t=12.34")
        );
        assert_eq!(line(""), None);
        assert_eq!(line("abc 1"), None);
    }
}
