//! Killing a command: the whole process group it runs in (SIGTERM, then SIGKILL after
//! [`KILL_GRACE`]), whether any of it is still alive, and the `rc` its exit status is
//! reported as.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::Child;
use tokio::time::Instant;

/// Between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(3);
/// How often the group is checked while waiting for it to die.
const POLL: Duration = Duration::from_millis(50);

/// Sends `sig` to every process of group `pgid` (never to pgid 0 or 1: those would mean our
/// own group or every process).
fn signal_group(pgid: i32, sig: libc::c_int) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; ESRCH (group gone) is ignored.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Whether any process of group `pgid` is still alive. Zombies do not count (they are dead;
/// an init that does not reap orphans keeps them around).
pub(super) fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        let mut scanned = false;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            scanned = true;
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
            if pgrp == Some(pgid) && state != "Z" && state != "X" {
                return true;
            }
        }
        if scanned {
            return false;
        }
    }
    // No /proc: the group exists while kill(-pgid, 0) succeeds (zombies included).
    // SAFETY: signal 0 only checks existence and permission.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// SIGTERM to the group; SIGKILL to whatever is still alive after [`KILL_GRACE`]; the main
/// process reaped into `status`.
pub(super) async fn kill_group(child: &mut Child, status: &mut Option<ExitStatus>, pgid: i32) {
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        if status.is_some() && !group_alive(pgid) {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            st = child.wait(), if status.is_none() => *status = Some(reaped(st)),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    tracing::info!(
        pgid,
        "processes still running {KILL_GRACE:?} after SIGTERM: SIGKILL"
    );
    signal_group(pgid, libc::SIGKILL);
    if status.is_none() {
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(st) => *status = Some(reaped(st)),
            Err(_) => tracing::error!(pgid, "the command's main process survived SIGKILL"),
        }
    }
}

pub(super) fn reaped(st: std::io::Result<ExitStatus>) -> ExitStatus {
    st.unwrap_or_else(|e| {
        tracing::warn!("cannot read a command's exit status: {e}");
        // Reported as exit code 255.
        ExitStatus::from_raw(0xff00)
    })
}

/// The reported rc: the exit code, or the negated signal number.
pub(super) fn rc_of(status: Option<ExitStatus>) -> i64 {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => i64::from(c),
            (None, Some(sig)) => -i64::from(sig),
            (None, None) => -1,
        },
        None => -1,
    }
}
