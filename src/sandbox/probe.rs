//! What this host can enforce, measured with the kernel itself.

/// The Landlock ABI version the kernel offers (0 = none).
pub fn landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset with LANDLOCK_CREATE_RULESET_VERSION (1) only queries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if r < 0 { 0 } else { r as i32 }
}

/// Whether seccomp filters can be installed (`PR_GET_SECCOMP` answers).
pub fn seccomp() -> bool {
    // SAFETY: PR_GET_SECCOMP only queries.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

/// Whether user namespaces can be created at all on this host.
pub fn user_namespaces() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}
