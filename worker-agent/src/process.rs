//! The script's process group: spawn it, signal it, end it.

use std::time::Duration;
use tokio::process::Child;

/// Sends `sig` to the process group `pgid` (ignoring a group that is gone).
pub fn signal_group(pgid: u32, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: killpg takes plain integers and has no memory effects.
        unsafe {
            libc::killpg(pgid as libc::pid_t, sig);
        }
    }
}

/// Ends the group: SIGTERM, up to `grace` for the leader to exit, then SIGKILL.
/// Returns the leader's exit status if it exited.
pub async fn terminate(
    child: &mut Child,
    pgid: u32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    signal_group(pgid, libc::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    };
    signal_group(pgid, libc::SIGKILL);
    match status {
        Some(s) => Some(s),
        None => child.wait().await.ok(),
    }
}

/// `exit code` of a status: the code, or 128 + signal as shells report it.
pub fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The `bash` to run scripts with: the first on `PATH` (resolved here rather than by
/// a failed `execve` per `PATH` entry in every child; once per agent, which runs
/// many attempts when it is kept warm), else `/bin/bash`.
pub fn bash() -> &'static std::path::Path {
    static BASH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BASH.get_or_init(|| {
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("bash"))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| std::path::PathBuf::from("/bin/bash"))
    })
}
