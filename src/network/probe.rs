//! Whether this host can give a process a network namespace of its own (as root directly,
//! otherwise inside a user namespace). Measured once, by starting `true` the way a managed
//! process starts.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// `Ok` when a managed-network process can be started; the error says why not and how to fix
/// it.
pub fn available() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT.get_or_init(measure).clone()
}

fn measure() -> Result<(), String> {
    let Some(program) = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return Err("no /bin/true to probe network namespaces with".into());
    };
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs between fork and exec and only makes syscalls (unshare).
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) == 0
                || libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) == 0
            {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    };
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the probe process failed ({s})")),
        Err(e) => Err(format!(
            "a network namespace cannot be created ({e}): run as root, or enable unprivileged user namespaces (kernel.unprivileged_userns_clone=1, and no AppArmor restrict_unprivileged_userns)"
        )),
    }
}
