//! Policy → Landlock ruleset, built in the parent through the `landlock` crate. The child only
//! calls `landlock_restrict_self` on the ruleset fd (see [`super::child`]); filesystem workers
//! restrict themselves with [`restrict_current_thread`].
//!
//! Every ruleset handles *every* right of the ABI in use in each category it handles
//! ([`Handled::for_spec`]: the crate's full set for that ABI, e.g. UNIX-socket resolution from
//! ABI 9, UDP from ABI 10), and is built with [`CompatLevel::HardRequirement`]: a right the
//! kernel cannot enforce is an error, never silently dropped. The report lists exactly the
//! handled set ([`Handled::rights`]).

use std::os::fd::OwnedFd;
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetError, RulesetStatus,
    Scope,
};

use super::policy::{Access as PolicyAccess, FsEntry};
use crate::protocol::sandbox::LandlockRights;

/// The newest Landlock ABI this build knows the rights of. A newer kernel is used at this ABI
/// (rights it added are unknown here, and said so by `stockade doctor`).
pub const NEWEST_KNOWN_ABI: i32 = 10;

/// The crate's ABI for a measured (and capped) ABI number.
pub fn abi(n: i32) -> ABI {
    ABI::from(n.min(NEWEST_KNOWN_ABI))
}

/// Devices every restricted policy keeps usable.
pub const DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// What to build.
#[derive(Debug, Clone)]
pub struct RulesetSpec<'a> {
    /// ABI to use (already capped).
    pub abi: i32,
    /// Filesystem entries (`None`: filesystem not handled).
    pub entries: Option<&'a [FsEntry]>,
    /// Deny every network right of the ABI (TCP bind/connect from ABI 4, UDP from ABI 10).
    pub block_network: bool,
    /// Scope signals and abstract UNIX sockets (every scope of the ABI, from ABI 6).
    pub scopes: bool,
}

/// The rights a ruleset handles (denied unless a rule allows them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// Filesystem rights.
    pub fs: BitFlags<AccessFs>,
    /// Network rights.
    pub net: BitFlags<AccessNet>,
    /// Scopes.
    pub scopes: BitFlags<Scope>,
}

impl Handled {
    /// Every right of the spec's ABI in each category the spec asks for.
    pub fn for_spec(spec: &RulesetSpec) -> Handled {
        let abi = abi(spec.abi);
        Handled {
            fs: if spec.entries.is_some() {
                AccessFs::from_all(abi)
            } else {
                BitFlags::EMPTY
            },
            net: if spec.block_network {
                AccessNet::from_all(abi)
            } else {
                BitFlags::EMPTY
            },
            scopes: if spec.scopes {
                Scope::from_all(abi)
            } else {
                BitFlags::EMPTY
            },
        }
    }

    /// Everything the given ABI knows (what `stockade doctor` lists per ABI).
    pub fn all(n: i32) -> Handled {
        let abi = abi(n);
        Handled {
            fs: AccessFs::from_all(abi),
            net: AccessNet::from_all(abi),
            scopes: Scope::from_all(abi),
        }
    }

    /// Handles nothing (no ruleset).
    pub fn none() -> Handled {
        Handled {
            fs: BitFlags::EMPTY,
            net: BitFlags::EMPTY,
            scopes: BitFlags::EMPTY,
        }
    }

    /// Nothing handled.
    pub fn is_empty(&self) -> bool {
        self.fs.is_empty() && self.net.is_empty() && self.scopes.is_empty()
    }

    /// `{"fs": [...], "net": [...], "scopes": [...]}` with the kernel's names in lower case
    /// (`write_file`, `resolve_unix`, `connect_tcp`, `signal`, ...).
    pub fn rights(&self) -> LandlockRights {
        LandlockRights {
            fs: names(self.fs.iter()),
            net: names(self.net.iter()),
            scopes: names(self.scopes.iter()),
        }
    }
}

/// The snake-case names of a set of rights (`IoctlDev` → `ioctl_dev`), in bit order.
pub fn names<T: std::fmt::Debug>(set: impl Iterator<Item = T>) -> Vec<String> {
    set.map(|r| {
        let mut out = String::new();
        for (i, c) in format!("{r:?}").chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    })
    .collect()
}

/// A built ruleset and what it could not include.
#[derive(Debug)]
pub struct BuiltRuleset {
    /// The ruleset (its fd goes to the child, see [`BuiltRuleset::into_fd`]).
    pub ruleset: RulesetCreated,
    /// What it handles.
    pub handled: Handled,
    /// Entries that could not be opened (reported, never silently dropped).
    pub unopenable: Vec<String>,
}

impl BuiltRuleset {
    /// The ruleset fd, for a child to restrict itself with.
    pub fn into_fd(self) -> Result<OwnedFd, String> {
        Option::<OwnedFd>::from(self.ruleset)
            .ok_or_else(|| "the kernel created no Landlock ruleset".to_string())
    }
}

/// A ruleset that fails (`HardRequirement`) when the kernel cannot handle what it asks.
fn strict_ruleset(handled: Handled) -> Result<RulesetCreated, RulesetError> {
    let mut ruleset = Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
    if !handled.fs.is_empty() {
        ruleset = ruleset.handle_access(handled.fs)?;
    }
    if !handled.net.is_empty() {
        ruleset = ruleset.handle_access(handled.net)?;
    }
    if !handled.scopes.is_empty() {
        ruleset = ruleset.scope(handled.scopes)?;
    }
    ruleset.create()
}

/// Builds the ruleset. Errors are unexpected kernel failures (or a spec that handles nothing).
pub fn build(spec: &RulesetSpec) -> Result<BuiltRuleset, String> {
    let handled = Handled::for_spec(spec);
    if handled.is_empty() {
        return Err("a Landlock ruleset that handles nothing".into());
    }
    let mut ruleset = strict_ruleset(handled).map_err(|e| e.to_string())?;
    let mut unopenable = Vec::new();
    let file_rights = AccessFs::from_file(abi(spec.abi));
    let mut add = |ruleset: RulesetCreated,
                   path: &Path,
                   rights: BitFlags<AccessFs>,
                   skip_missing: bool|
     -> Result<RulesetCreated, String> {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            Err(landlock::PathFdError::OpenCall { source, .. })
                if skip_missing && source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(ruleset);
            }
            Err(e) => {
                unopenable.push(format!("{}: {e}", path.display()));
                return Ok(ruleset);
            }
        };
        // Of the opened inode (not the path again): only file rights apply to a non-directory.
        let is_dir = nix::sys::stat::fstat(&fd)
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut allowed = rights & handled.fs;
        if !is_dir {
            allowed &= file_rights;
        }
        if allowed.is_empty() {
            return Ok(ruleset);
        }
        ruleset
            .add_rule(PathBeneath::new(fd, allowed))
            .map_err(|e| e.to_string())
    };
    if let Some(entries) = spec.entries {
        let read = AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir;
        for e in entries {
            ruleset = match e.access {
                PolicyAccess::Read => add(ruleset, &e.path, read, e.skip_if_missing)?,
                PolicyAccess::Write => add(ruleset, &e.path, handled.fs, e.skip_if_missing)?,
                // Landlock is allow-only: `none` is the absence of a rule (carve-outs inside
                // allowed trees are handled by the mount namespace).
                PolicyAccess::None => ruleset,
            };
        }
        let device =
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
        for dev in DEVICES {
            ruleset = add(ruleset, Path::new(dev), device, true)?;
        }
    }
    Ok(BuiltRuleset {
        ruleset,
        handled,
        unopenable,
    })
}

/// A ruleset for a process: what [`build`] gives, with the ruleset as an fd of its own.
#[derive(Debug)]
pub struct ProcessRuleset {
    /// The ruleset, for the child's `landlock_restrict_self`.
    pub fd: OwnedFd,
    /// What it handles.
    pub handled: Handled,
    /// Entries that could not be opened.
    pub unopenable: Vec<String>,
}

/// The identity of what a path names now (following symlinks, as the ruleset's `open`
/// does); `None` when it cannot be examined (then it was not granted either).
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Every path a ruleset for `spec` opens, in order.
fn opened_paths<'a>(spec: &RulesetSpec<'a>) -> Vec<&'a Path> {
    let Some(entries) = spec.entries else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|e| e.access != PolicyAccess::None)
        .map(|e| e.path.as_path())
        .chain(DEVICES.iter().map(Path::new))
        .collect()
}

/// One kept ruleset.
struct Kept {
    abi: i32,
    entries: Option<Vec<FsEntry>>,
    block_network: bool,
    scopes: bool,
    /// What each opened path named when the ruleset was built.
    identities: Vec<Option<(u64, u64)>>,
    fd: OwnedFd,
    handled: Handled,
    unopenable: Vec<String>,
}

/// Rulesets kept (least recently used dropped first).
const KEPT_RULESETS: usize = 16;

static KEPT: std::sync::Mutex<std::collections::VecDeque<Kept>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// The ruleset for `spec`: a kept one when every path it opened still names the same object
/// (device and inode), else a new one (then kept). Building one costs an `open`, `fstat`,
/// `landlock_add_rule` and `close` per path (about 50 µs per spawn here), checking one a
/// `stat` per path.
///
/// Why reuse is sound: a ruleset grants access to the inodes it holds, not to names. Each
/// inode it holds stays allocated as long as the ruleset does, so its (device, inode) pair
/// cannot be given to another object meanwhile: a path that still resolves to the same pair
/// names the very object the ruleset holds, and a fresh build would hold the same one. A
/// path that now names another object (a workspace deleted and made again, a directory
/// renamed and replaced), or that appeared or vanished, gets a new ruleset. What is checked
/// is exactly what a fresh build would open, at the same point of the request, so the window
/// in which a path can be swapped before the child restricts itself is the same as with a
/// fresh build.
pub fn ruleset_for_process(spec: &RulesetSpec) -> Result<ProcessRuleset, String> {
    let paths = opened_paths(spec);
    let identities: Vec<Option<(u64, u64)>> = paths.iter().map(|p| identity(p)).collect();
    let matches = |k: &Kept| {
        k.abi == spec.abi
            && k.block_network == spec.block_network
            && k.scopes == spec.scopes
            && k.entries.as_deref() == spec.entries
    };
    {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = kept.iter().position(matches) {
            if kept[i].identities == identities {
                let k = kept.remove(i).expect("index in range");
                let out = ProcessRuleset {
                    fd: k.fd.try_clone().map_err(|e| e.to_string())?,
                    handled: k.handled,
                    unopenable: k.unopenable.clone(),
                };
                kept.push_front(k);
                return Ok(out);
            }
            kept.remove(i);
        }
    }
    let built = build(spec)?;
    let handled = built.handled;
    let unopenable = built.unopenable.clone();
    let fd = built.into_fd()?;
    // Kept only when nothing changed while it was built: the identities taken before the
    // build must still hold after it, or the kept ruleset could hold an object the check
    // would not recognise.
    let after: Vec<Option<(u64, u64)>> = paths.iter().map(|p| identity(p)).collect();
    if after == identities {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|k| !matches(k));
        kept.push_front(Kept {
            abi: spec.abi,
            entries: spec.entries.map(<[FsEntry]>::to_vec),
            block_network: spec.block_network,
            scopes: spec.scopes,
            identities,
            fd: fd.try_clone().map_err(|e| e.to_string())?,
            handled,
            unopenable: unopenable.clone(),
        });
        kept.truncate(KEPT_RULESETS);
    }
    Ok(ProcessRuleset {
        fd,
        handled,
        unopenable,
    })
}

/// Confines the calling thread (and threads it creates later) with `ruleset`: sets
/// no_new_privs on the thread, then `landlock_restrict_self`. Before Landlock ABI 8 both are
/// per-thread, which is what the filesystem workers rely on; never call this on a thread
/// that serves anything else.
///
/// With `LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF` (ABI 7+): a refusal on a worker is already
/// the fs call's error (-32600), and must not also become a record in the host's audit log
/// (worker threads run the server's own executable, whose denials Landlock logs by default).
/// Older kernels have no audit records to silence.
pub fn restrict_current_thread(ruleset: &RulesetCreated) -> std::io::Result<()> {
    let quiet = match ruleset.try_clone()?.log_same_exec(false) {
        Ok(quiet) => quiet,
        Err(_) => ruleset.try_clone()?,
    };
    let status = quiet.restrict_self().map_err(std::io::Error::other)?;
    if status.ruleset != RulesetStatus::FullyEnforced || !status.no_new_privs {
        return Err(std::io::Error::other(format!(
            "Landlock restriction not fully enforced: {status:?}"
        )));
    }
    Ok(())
}

/// Builds the network-only ruleset that keeps a process away from the server's own listening
/// TCP ports: it handles TCP bind and connect and allows both on every other port (ABI 4+).
/// Built once at startup and stacked on a network-enabled policy's own ruleset in the child.
///
/// Landlock is allow-only, so this is one rule per allowed port (65,535 minus the server's).
/// A domain holds a copy of every rule, so restricting with it costs the child about 20 ms and
/// about 4 MiB of kernel memory while it lives (measured); only confined processes with the
/// network on pay it (with the network off the policy's ruleset already denies all TCP).
pub fn build_port_guard(denied: &[u16]) -> Result<OwnedFd, String> {
    let tcp = AccessNet::BindTcp | AccessNet::ConnectTcp;
    let mut ruleset = strict_ruleset(Handled {
        fs: BitFlags::EMPTY,
        net: tcp,
        scopes: BitFlags::EMPTY,
    })
    .map_err(|e| e.to_string())?;
    for port in 0..=u16::MAX {
        if !denied.contains(&port) {
            ruleset = ruleset
                .add_rule(NetPort::new(port, tcp))
                .map_err(|e| e.to_string())?;
        }
    }
    Option::<OwnedFd>::from(ruleset).ok_or_else(|| "the kernel created no Landlock ruleset".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::probe;

    fn spec(abi: i32, entries: Option<&[FsEntry]>) -> RulesetSpec<'_> {
        RulesetSpec {
            abi,
            entries,
            block_network: true,
            scopes: true,
        }
    }

    /// Every right each known ABI has is handled, in every category a policy handles:
    /// nothing the ABI knows is left out (UNIX-socket resolution from ABI 9, UDP from 10).
    #[test]
    fn every_right_of_each_abi_is_handled() {
        for n in 1..=NEWEST_KNOWN_ABI {
            let h = Handled::for_spec(&spec(n, Some(&[])));
            assert_eq!(h, Handled::all(n), "ABI {n}");
            assert_eq!(h.fs, AccessFs::from_all(ABI::from(n)), "ABI {n}");
            assert_eq!(h.net, AccessNet::from_all(ABI::from(n)), "ABI {n}");
            assert_eq!(h.scopes, Scope::from_all(ABI::from(n)), "ABI {n}");
        }
        // The rights newer than the hand-written code knew.
        assert!(!Handled::all(8).fs.contains(AccessFs::ResolveUnix));
        assert!(Handled::all(9).fs.contains(AccessFs::ResolveUnix));
        assert!(
            Handled::all(10)
                .net
                .contains(AccessNet::BindUdp | AccessNet::ConnectSendUdp)
        );
        assert_eq!(Handled::all(7).fs.bits(), (1 << 16) - 1);
        assert_eq!(Handled::all(3).fs.bits(), (1 << 15) - 1);
        // A kernel newer than this build is used at the newest ABI it knows.
        assert_eq!(Handled::all(99), Handled::all(NEWEST_KNOWN_ABI));
    }

    #[test]
    fn names_are_the_kernel_names() {
        let h = Handled::all(10);
        let j = h.rights();
        let fs: Vec<&str> = j.fs.iter().map(String::as_str).collect();
        assert_eq!(fs.first(), Some(&"execute"));
        assert!(
            fs.contains(&"ioctl_dev") && fs.contains(&"resolve_unix"),
            "{fs:?}"
        );
        assert_eq!(
            j.net,
            ["bind_tcp", "connect_tcp", "bind_udp", "connect_send_udp"]
        );
        assert_eq!(j.scopes, ["abstract_unix_socket", "signal"]);
    }

    /// The ruleset for the running ABI builds (HardRequirement: the kernel handles all of it)
    /// and handles the crate's full set for that ABI.
    #[test]
    fn running_abi_ruleset_handles_everything_it_knows() {
        let running = probe::landlock_abi();
        assert!(running >= 1, "this test needs Landlock");
        let dir = std::env::temp_dir();
        let entries = [FsEntry {
            path: dir,
            access: PolicyAccess::Write,
            origin: "test",
            skip_if_missing: false,
        }];
        let built = build(&spec(running, Some(&entries))).unwrap();
        let abi = abi(running);
        assert_eq!(built.handled.fs, AccessFs::from_all(abi));
        assert_eq!(built.handled.net, AccessNet::from_all(abi));
        assert_eq!(built.handled.scopes, Scope::from_all(abi));
        assert!(built.unopenable.is_empty(), "{:?}", built.unopenable);
        built.into_fd().unwrap();
    }
}
