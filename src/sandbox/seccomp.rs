//! Policy → seccomp BPF program, generated in the parent (once per distinct setting, cached
//! by the caller) and applied by the child as the very last step before `execve`.
//!
//! One filter, generated here rather than with a filter compiler, because its *shape* is
//! what a spawn pays for: the kernel converts, JITs and, for its per-syscall action cache,
//! emulates every installed filter once per syscall number and architecture. A linear chain
//! of rules (seccompiler's output was 289 instructions here, two filters) cost about 220 µs
//! per sandboxed spawn; a balanced binary search over the syscall number with shared action
//! blocks is a fraction of that (see `scripts/bench`). Refusals answer EPERM, and `clone3`
//! and `openat2` ENOSYS so that libc falls back to `clone` and `openat`, whose flags and mode
//! the filter can inspect. Calls whose verdict depends on an argument (the mode of the chmod
//! and create family, the pid of the resource and scheduling calls, `ioctl`, `clone`) run the
//! filter on every call; every other allowed call is answered from the kernel's per-syscall
//! cache without running it, so those checks are kept to a few instructions each. A syscall
//! of a foreign ABI (i386 `int 0x80`) kills the process: its numbers mean other calls, so no
//! rule here could filter it. x32 calls (the x32 bit set) answer ENOSYS.

/// What the filter must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FilterSpec {
    /// Refuse creating sockets (every family; `socketpair` stays allowed).
    pub block_network: bool,
    /// Hand every refusal that answers EPERM to the supervisor (`SECCOMP_RET_USER_NOTIF`)
    /// instead of answering it in the kernel: the supervisor answers EPERM itself and records
    /// the call with its arguments (see [`crate::sandbox::denials::notify`]). Installed with
    /// `SECCOMP_FILTER_FLAG_NEW_LISTENER`; ENOSYS answers and the foreign-ABI kill stay in the
    /// kernel (they are not refusals of the policy).
    pub notify: bool,
}

/// Syscalls always refused under hardening (EPERM).
pub const DENY: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_acct,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_lookup_dcookie,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_vhangup,
];

/// Namespace-creating clone flags.
pub const CLONE_NS_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// A classic BPF program, as `SECCOMP_SET_MODE_FILTER` takes it.
pub type BpfProgram = Vec<libc::sock_filter>;

const RET_ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
const RET_ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO
const RET_KILL_PROCESS: u32 = 0x8000_0000; // SECCOMP_RET_KILL_PROCESS
const RET_USER_NOTIF: u32 = 0x7fc0_0000; // SECCOMP_RET_USER_NOTIF
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
#[cfg(not(target_arch = "aarch64"))]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// The low 32 bits of syscall argument `i` (the architectures above are little-endian).
const fn off_arg_low(i: u32) -> u32 {
    16 + 8 * i + if cfg!(target_endian = "big") { 4 } else { 0 }
}
/// The high 32 bits of syscall argument `i`.
const fn off_arg_high(i: u32) -> u32 {
    16 + 8 * i + if cfg!(target_endian = "big") { 0 } else { 4 }
}

/// What the filter does with one syscall number. The argument checks read only the low 32
/// bits of an argument where the kernel itself reads an `int` (pids, flags) or a `umode_t`
/// (modes): the high bits cannot change what the kernel does, so they cannot hide anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Verdict {
    Eperm,
    Enosys,
    /// `ioctl`: EPERM for the terminal-injection requests, allowed otherwise.
    IoctlCheck,
    /// `clone`: EPERM when a namespace flag is set, allowed otherwise.
    CloneCheck,
    /// EPERM when the mode in this argument has a set-user-id or set-group-id bit.
    SetIdMode(u32),
    /// `open`-like: EPERM when the flags (first argument) create a file (`O_CREAT` or
    /// `O_TMPFILE`) and the mode (second argument) has a set-id bit. Without those flags the
    /// kernel ignores the mode.
    SetIdCreate(u32, u32),
    /// EPERM unless this argument, a pid, is 0 (the caller).
    CallerOnly(u32),
    /// `setpriority`/`ioprio_set`: EPERM unless argument 0 (what kind of target) is this value
    /// (the "one process" kind) and argument 1 (who) is 0 (the caller).
    CallerProcessOnly(u32),
    /// `prlimit64`: EPERM when it would set (new limits not NULL) the limits of another
    /// process (pid not 0); reading them is allowed.
    PrlimitCheck,
    /// `socket` with the network on: EPERM for the protocols that carry TCP without being
    /// TCP sockets (MPTCP, SMC). Landlock's port rules apply to TCP sockets only, and both
    /// fall back to plain TCP towards a TCP listener: through them a confined process would
    /// reach the ports Landlock denies (the server's own).
    SocketCheck,
}

/// `IPPROTO_MPTCP`: a stream socket of any family with this protocol is multipath TCP.
const IPPROTO_MPTCP: u32 = 262;
/// `AF_SMC`: shared-memory communication sockets, which fall back to TCP.
const AF_SMC: u32 = 43;

/// The set-user-id and set-group-id mode bits.
const SET_ID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;
/// The open flags with which the kernel uses the mode argument (`__O_TMPFILE` alone: the
/// libc constant includes `O_DIRECTORY`).
const CREATE_FLAGS: u32 = (libc::O_CREAT | (libc::O_TMPFILE & !libc::O_DIRECTORY)) as u32;

/// Jump targets before layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Label {
    Next,
    Allow,
    Eperm,
    Enosys,
    Kill,
    /// The block that checks the arguments for this verdict.
    Check(Verdict),
    /// The first instruction of a subtree, by its index in `Gen::subtrees`.
    Subtree(usize),
}

impl From<Verdict> for Label {
    fn from(v: Verdict) -> Label {
        match v {
            Verdict::Eperm => Label::Eperm,
            Verdict::Enosys => Label::Enosys,
            check => Label::Check(check),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// Load a 32-bit word of `seccomp_data`.
    Load(u32),
    /// `if A == k` / `A >= k` / `A & k != 0` then `jt` else `jf`.
    Jeq(u32, Label, Label),
    Jge(u32, Label, Label),
    Jset(u32, Label, Label),
    /// Where a label points.
    Mark(Label),
    Ret(u32),
}

struct Gen {
    ops: Vec<Op>,
    next_subtree: usize,
}

impl Gen {
    /// A balanced binary search over `table` (sorted by number); numbers it does not list are
    /// allowed.
    fn search(&mut self, table: &[(u32, Verdict)]) {
        if table.len() <= 3 {
            for (i, &(nr, verdict)) in table.iter().enumerate() {
                let miss = if i + 1 == table.len() {
                    Label::Allow
                } else {
                    Label::Next
                };
                self.ops.push(Op::Jeq(nr, verdict.into(), miss));
            }
            return;
        }
        let mid = table.len() / 2;
        let right = Label::Subtree(self.next_subtree);
        self.next_subtree += 1;
        self.ops.push(Op::Jge(table[mid].0, right, Label::Next));
        self.search(&table[..mid]);
        self.ops.push(Op::Mark(right));
        self.search(&table[mid..]);
    }
}

/// Resolves labels into jump offsets. Every jump in this program is forward and short; a
/// layout that broke that would be a bug here, hence the panic.
fn assemble(ops: &[Op]) -> BpfProgram {
    let mut at = std::collections::HashMap::new();
    let mut pc = 0usize;
    for op in ops {
        match op {
            Op::Mark(l) => {
                at.insert(*l, pc);
            }
            _ => pc += 1,
        }
    }
    let mut out = Vec::with_capacity(pc);
    for op in ops {
        let here = out.len();
        let off = |l: Label| -> u8 {
            if l == Label::Next {
                return 0;
            }
            let target = at[&l];
            u8::try_from(target - here - 1).expect("seccomp jump out of range")
        };
        let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        let jmp = libc::BPF_JMP | libc::BPF_K;
        out.push(match *op {
            Op::Mark(_) => continue,
            Op::Load(k) => ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, k),
            Op::Jeq(k, t, f) => ins(jmp | libc::BPF_JEQ, off(t), off(f), k),
            Op::Jge(k, t, f) => ins(jmp | libc::BPF_JGE, off(t), off(f), k),
            Op::Jset(k, t, f) => ins(jmp | libc::BPF_JSET, off(t), off(f), k),
            Op::Ret(k) => ins(libc::BPF_RET | libc::BPF_K, 0, 0, k),
        });
    }
    out
}

/// Calls that set a file's mode, and the argument that holds it (`open`-like calls: the flags
/// and the mode). `openat2` takes its mode behind a pointer, which a filter cannot read: it
/// answers ENOSYS, and libc falls back to `openat`.
fn mode_calls() -> Vec<(i64, Verdict)> {
    let mut calls = vec![
        (libc::SYS_fchmod, Verdict::SetIdMode(1)),
        (libc::SYS_fchmodat, Verdict::SetIdMode(2)),
        (libc::SYS_fchmodat2, Verdict::SetIdMode(2)),
        (libc::SYS_mkdirat, Verdict::SetIdMode(2)),
        (libc::SYS_mknodat, Verdict::SetIdMode(2)),
        (libc::SYS_openat, Verdict::SetIdCreate(2, 3)),
        (libc::SYS_openat2, Verdict::Enosys),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        (libc::SYS_chmod, Verdict::SetIdMode(1)),
        (libc::SYS_creat, Verdict::SetIdMode(1)),
        (libc::SYS_mkdir, Verdict::SetIdMode(1)),
        (libc::SYS_mknod, Verdict::SetIdMode(1)),
        (libc::SYS_open, Verdict::SetIdCreate(1, 2)),
    ]);
    calls
}

/// Calls that change the resource limits, priority, CPU placement or memory placement of a
/// process named by a pid: only the caller itself may be named (pid 0), so that no confined
/// process can starve the server, its keeper or another client's processes.
fn caller_only_calls() -> [(i64, Verdict); 9] {
    [
        (libc::SYS_prlimit64, Verdict::PrlimitCheck),
        (
            libc::SYS_setpriority,
            Verdict::CallerProcessOnly(libc::PRIO_PROCESS),
        ),
        // IOPRIO_WHO_PROCESS
        (libc::SYS_ioprio_set, Verdict::CallerProcessOnly(1)),
        (libc::SYS_sched_setaffinity, Verdict::CallerOnly(0)),
        (libc::SYS_sched_setscheduler, Verdict::CallerOnly(0)),
        (libc::SYS_sched_setparam, Verdict::CallerOnly(0)),
        (libc::SYS_sched_setattr, Verdict::CallerOnly(0)),
        (libc::SYS_migrate_pages, Verdict::CallerOnly(0)),
        (libc::SYS_move_pages, Verdict::CallerOnly(0)),
    ]
}

/// The syscall table of a spec: number → verdict, sorted.
fn table(spec: FilterSpec) -> Vec<(u32, Verdict)> {
    let mut t: Vec<(u32, Verdict)> = DENY.iter().map(|&n| (n as u32, Verdict::Eperm)).collect();
    t.push((libc::SYS_clone3 as u32, Verdict::Enosys));
    t.push((libc::SYS_ioctl as u32, Verdict::IoctlCheck));
    t.push((libc::SYS_clone as u32, Verdict::CloneCheck));
    t.extend(
        mode_calls()
            .into_iter()
            .chain(caller_only_calls())
            .map(|(n, v)| (n as u32, v)),
    );
    if spec.block_network {
        t.push((libc::SYS_socket as u32, Verdict::Eperm));
    } else {
        t.push((libc::SYS_socket as u32, Verdict::SocketCheck));
    }
    t.sort_unstable_by_key(|e| e.0);
    t.dedup_by_key(|e| e.0);
    t
}

/// The instructions that check the arguments for `v` (entered at `Label::Check(v)`).
fn check_block(v: Verdict) -> Vec<Op> {
    let ns_mask = CLONE_NS_FLAGS.iter().fold(0u64, |m, f| m | f) as u32;
    match v {
        Verdict::Eperm | Verdict::Enosys => Vec::new(),
        Verdict::IoctlCheck => vec![
            Op::Load(off_arg_low(1)),
            Op::Jeq(libc::TIOCSTI as u32, Label::Eperm, Label::Next),
            Op::Jeq(libc::TIOCLINUX as u32, Label::Eperm, Label::Allow),
        ],
        Verdict::CloneCheck => vec![
            Op::Load(off_arg_low(0)),
            Op::Jset(ns_mask, Label::Eperm, Label::Allow),
        ],
        Verdict::SetIdMode(mode) => vec![
            Op::Load(off_arg_low(mode)),
            Op::Jset(SET_ID_BITS, Label::Eperm, Label::Allow),
        ],
        Verdict::SetIdCreate(flags, mode) => vec![
            Op::Load(off_arg_low(flags)),
            Op::Jset(CREATE_FLAGS, Label::Next, Label::Allow),
            Op::Load(off_arg_low(mode)),
            Op::Jset(SET_ID_BITS, Label::Eperm, Label::Allow),
        ],
        Verdict::CallerOnly(pid) => vec![
            Op::Load(off_arg_low(pid)),
            Op::Jeq(0, Label::Allow, Label::Eperm),
        ],
        Verdict::CallerProcessOnly(kind) => vec![
            Op::Load(off_arg_low(0)),
            Op::Jeq(kind, Label::Next, Label::Eperm),
            Op::Load(off_arg_low(1)),
            Op::Jeq(0, Label::Allow, Label::Eperm),
        ],
        // Family and protocol are `int`s for the kernel.
        Verdict::SocketCheck => vec![
            Op::Load(off_arg_low(0)),
            Op::Jeq(AF_SMC, Label::Eperm, Label::Next),
            Op::Load(off_arg_low(2)),
            Op::Jeq(IPPROTO_MPTCP, Label::Eperm, Label::Allow),
        ],
        // The new-limits pointer is 64 bits wide: NULL only when both halves are zero.
        Verdict::PrlimitCheck => vec![
            Op::Load(off_arg_low(0)),
            Op::Jeq(0, Label::Allow, Label::Next),
            Op::Load(off_arg_low(2)),
            Op::Jeq(0, Label::Next, Label::Eperm),
            Op::Load(off_arg_high(2)),
            Op::Jeq(0, Label::Allow, Label::Eperm),
        ],
    }
}

/// Why the filter refused a call, as words for a denial report: the arguments its verdict
/// looked at, decoded (`AF_INET`, `SOCK_STREAM`, `CLONE_NEWUSER`, `mode=04755`, `pid=1234`,
/// `TIOCSTI`). Empty for calls refused whatever their arguments (except the decoded flags of
/// `unshare`).
pub fn refusal_args(nr: i64, args: [u64; 6]) -> Vec<String> {
    let int = |i: u32| args[i as usize] as u32;
    let verdict = table(FilterSpec {
        block_network: true,
        notify: false,
    })
    .into_iter()
    .find(|e| e.0 as i64 == nr)
    .map(|e| e.1);
    let ns_flags = |flags: u32| -> Vec<String> {
        let names = [
            (libc::CLONE_NEWNS, "CLONE_NEWNS"),
            (libc::CLONE_NEWCGROUP, "CLONE_NEWCGROUP"),
            (libc::CLONE_NEWUTS, "CLONE_NEWUTS"),
            (libc::CLONE_NEWIPC, "CLONE_NEWIPC"),
            (libc::CLONE_NEWUSER, "CLONE_NEWUSER"),
            (libc::CLONE_NEWPID, "CLONE_NEWPID"),
            (libc::CLONE_NEWNET, "CLONE_NEWNET"),
            (0x80, "CLONE_NEWTIME"),
        ];
        names
            .iter()
            .filter(|(f, _)| flags & *f as u32 != 0)
            .map(|(_, n)| n.to_string())
            .collect()
    };
    if nr == libc::SYS_unshare {
        return ns_flags(int(0));
    }
    match verdict {
        Some(Verdict::SocketCheck) => socket_words(int(0), int(1), int(2)),
        Some(Verdict::Eperm) if nr == libc::SYS_socket => socket_words(int(0), int(1), int(2)),
        Some(Verdict::IoctlCheck) => vec![match int(1) as u64 {
            libc::TIOCSTI => "TIOCSTI".to_string(),
            libc::TIOCLINUX => "TIOCLINUX".to_string(),
            other => format!("request={other:#x}"),
        }],
        Some(Verdict::CloneCheck) => ns_flags(int(0)),
        Some(Verdict::SetIdMode(m)) | Some(Verdict::SetIdCreate(_, m)) => {
            vec![format!("mode=0{:o}", int(m) & 0o7777)]
        }
        Some(Verdict::CallerOnly(p)) => vec![format!("pid={}", int(p) as i32)],
        Some(Verdict::PrlimitCheck) => vec![format!("pid={}", int(0) as i32)],
        Some(Verdict::CallerProcessOnly(_)) => {
            vec![
                format!("which={}", int(0) as i32),
                format!("who={}", int(1) as i32),
            ]
        }
        _ => Vec::new(),
    }
}

/// `socket(family, type, protocol)` as words: the family and type names (numbers when
/// unknown), and the protocol when it is what the filter refuses (MPTCP).
fn socket_words(family: u32, ty: u32, protocol: u32) -> Vec<String> {
    let family = match family as i32 {
        libc::AF_UNIX => "AF_UNIX".to_string(),
        libc::AF_INET => "AF_INET".to_string(),
        libc::AF_INET6 => "AF_INET6".to_string(),
        libc::AF_NETLINK => "AF_NETLINK".to_string(),
        libc::AF_PACKET => "AF_PACKET".to_string(),
        libc::AF_VSOCK => "AF_VSOCK".to_string(),
        libc::AF_BLUETOOTH => "AF_BLUETOOTH".to_string(),
        libc::AF_ALG => "AF_ALG".to_string(),
        43 => "AF_SMC".to_string(),
        other => format!("family={other}"),
    };
    let kind = ty & 0xf;
    let ty = match kind as i32 {
        libc::SOCK_STREAM => "SOCK_STREAM".to_string(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".to_string(),
        libc::SOCK_RAW => "SOCK_RAW".to_string(),
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET".to_string(),
        libc::SOCK_RDM => "SOCK_RDM".to_string(),
        other => format!("type={other}"),
    };
    let mut words = vec![family, ty];
    if protocol == IPPROTO_MPTCP {
        words.push("IPPROTO_MPTCP".into());
    }
    words
}

/// Generates the filter; the programs are applied in order (there is one).
pub fn compile(spec: FilterSpec) -> Vec<BpfProgram> {
    let mut g = Gen {
        ops: vec![
            Op::Load(OFF_ARCH),
            Op::Jeq(AUDIT_ARCH, Label::Next, Label::Kill),
            Op::Load(OFF_NR),
        ],
        next_subtree: 0,
    };
    if cfg!(target_arch = "x86_64") {
        g.ops
            .push(Op::Jge(X32_SYSCALL_BIT, Label::Enosys, Label::Next));
    }
    let table = table(spec);
    g.search(&table);
    // One shared block per distinct argument check, after the search.
    let mut checks: Vec<Verdict> = Vec::new();
    for &(_, v) in &table {
        if matches!(Label::from(v), Label::Check(_)) && !checks.contains(&v) {
            checks.push(v);
        }
    }
    for v in checks {
        g.ops.push(Op::Mark(Label::Check(v)));
        g.ops.extend(check_block(v));
    }
    g.ops.extend([
        Op::Mark(Label::Allow),
        Op::Ret(RET_ALLOW),
        Op::Mark(Label::Eperm),
        Op::Ret(if spec.notify {
            RET_USER_NOTIF
        } else {
            RET_ERRNO | libc::EPERM as u32
        }),
        Op::Mark(Label::Enosys),
        Op::Ret(RET_ERRNO | libc::ENOSYS as u32),
        Op::Mark(Label::Kill),
        Op::Ret(RET_KILL_PROCESS),
    ]);
    vec![assemble(&g.ops)]
}

/// Serializes programs for the keeper request: per program, a u32 instruction count and the
/// 8-byte instructions.
pub fn encode(programs: &[BpfProgram]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in programs {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        for ins in p {
            out.extend_from_slice(&ins.code.to_le_bytes());
            out.push(ins.jt);
            out.push(ins.jf);
            out.extend_from_slice(&ins.k.to_le_bytes());
        }
    }
    out
}

/// The inverse of [`encode`].
pub fn decode(mut b: &[u8]) -> Option<Vec<Vec<libc::sock_filter>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (n, rest) = b.split_first_chunk::<4>()?;
        let n = u32::from_le_bytes(*n) as usize;
        if rest.len() < n * 8 {
            return None;
        }
        let prog = rest[..n * 8]
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        out.push(prog);
        b = &rest[n * 8..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions [`assemble`] emits: the verdict and the
    /// number of instructions executed.
    fn run_counted(prog: &[libc::sock_filter], data: &[u32; 16]) -> (u32, usize) {
        let (mut pc, mut a, mut steps) = (0usize, 0u32, 0usize);
        loop {
            let i = prog[pc];
            let code = i.code as u32;
            pc += 1;
            steps += 1;
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                a = data[(i.k / 4) as usize];
            } else if code == libc::BPF_RET | libc::BPF_K {
                return (i.k, steps);
            } else {
                let taken = match code & 0xf0 {
                    c if c == libc::BPF_JEQ => a == i.k,
                    c if c == libc::BPF_JGE => a >= i.k,
                    c if c == libc::BPF_JSET => a & i.k != 0,
                    _ => panic!("unexpected instruction {code:#x}"),
                };
                pc += if taken { i.jt } else { i.jf } as usize;
            }
        }
    }

    fn run(prog: &[libc::sock_filter], data: &[u32; 16]) -> u32 {
        run_counted(prog, data).0
    }

    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u32; 16] {
        let mut d = [0u32; 16];
        d[0] = nr;
        d[1] = arch;
        for (i, a) in args.iter().enumerate() {
            d[4 + 2 * i] = *a as u32;
            d[5 + 2 * i] = (*a >> 32) as u32;
        }
        d
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

    /// What the filter must answer, written independently of the generator (from the
    /// kernel's reading of each argument: pids, flags and `which` are `int`, modes `umode_t`).
    fn expected(block_network: bool, nr: u32, args: [u64; 6]) -> u32 {
        let n = nr as i64;
        let int = |i: usize| args[i] as u32 as i32;
        let set_id = |i: usize| (args[i] as u16) & 0o6000 != 0;
        let creates = |i: usize| int(i) & (libc::O_CREAT | 0o20000000) != 0;
        let legacy = cfg!(target_arch = "x86_64");
        let refused = match n {
            _ if DENY.contains(&n) => true,
            _ if block_network && n == libc::SYS_socket => true,
            libc::SYS_socket => int(0) == 43 || int(2) == 262, // AF_SMC, IPPROTO_MPTCP
            libc::SYS_ioctl => [libc::TIOCSTI, libc::TIOCLINUX].contains(&(args[1] & 0xffff_ffff)),
            libc::SYS_clone => CLONE_NS_FLAGS.iter().any(|f| args[0] & f != 0),
            libc::SYS_fchmod => set_id(1),
            libc::SYS_fchmodat | libc::SYS_fchmodat2 | libc::SYS_mkdirat | libc::SYS_mknodat => {
                set_id(2)
            }
            libc::SYS_openat => creates(2) && set_id(3),
            90 | 85 | 83 | 133 if legacy => set_id(1), // chmod, creat, mkdir, mknod
            2 if legacy => creates(1) && set_id(2),    // open
            libc::SYS_prlimit64 => int(0) != 0 && args[2] != 0,
            libc::SYS_setpriority => int(0) != libc::PRIO_PROCESS as i32 || int(1) != 0,
            libc::SYS_ioprio_set => int(0) != 1 || int(1) != 0,
            libc::SYS_sched_setaffinity
            | libc::SYS_sched_setscheduler
            | libc::SYS_sched_setparam
            | libc::SYS_sched_setattr
            | libc::SYS_migrate_pages
            | libc::SYS_move_pages => int(0) != 0,
            _ => false,
        };
        if nr >= X32_SYSCALL_BIT && cfg!(target_arch = "x86_64") {
            ENOSYS
        } else if refused {
            EPERM
        } else if n == libc::SYS_clone3 || n == libc::SYS_openat2 {
            ENOSYS
        } else {
            RET_ALLOW
        }
    }

    /// Interesting argument values: set-id and plain modes, bits the kernel drops, create
    /// flags, pids, pointers with a zero low half, the ioctl requests and clone flags.
    fn values() -> Vec<u64> {
        let mut values: Vec<u64> = vec![
            1,
            1234,
            0o755,
            0o1777,
            0o4755,
            0o2755,
            0o100000 | 0o4000,
            0xffff_0000 | 0o755,   // bits the kernel drops from a umode_t
            (1 << 40) | 0o2000,    // high bits: still set-id
            0xffff_ffff_0000_0000, // an int 0 with garbage above
            0x7fff_0000_0000,      // a pointer whose low half is 0
            libc::O_CREAT as u64,
            libc::O_TMPFILE as u64,
            libc::O_DIRECTORY as u64,
            (libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY) as u64,
            2,
            3,
            43,
            262,
            u64::MAX,
        ];
        for f in CLONE_NS_FLAGS {
            values.push(f | libc::SIGCHLD as u64);
        }
        for cmd in [
            libc::TIOCSTI,
            libc::TIOCLINUX,
            libc::TIOCGWINSZ,
            libc::FIONREAD,
        ] {
            values.push(cmd);
            values.push(cmd | 0xdead_0000_0000);
        }
        values
    }

    /// All-zero arguments, and each interesting value alone in each of the first four
    /// positions.
    fn single_argsets() -> Vec<[u64; 6]> {
        let mut sets = vec![[0u64; 6]];
        for p in 0..4 {
            for v in values() {
                let mut a = [0u64; 6];
                a[p] = v;
                sets.push(a);
            }
        }
        sets
    }

    /// Every pair of interesting values in every pair of the first four positions (a flag and
    /// a mode, a kind and a pid, a pid and a pointer).
    fn pair_argsets() -> Vec<[u64; 6]> {
        let values = values();
        let mut sets = Vec::new();
        for p in 0..4 {
            for q in p + 1..4 {
                for &v in &values {
                    for &w in &values {
                        let mut a = [0u64; 6];
                        a[p] = v;
                        a[q] = w;
                        sets.push(a);
                    }
                }
            }
        }
        sets
    }

    /// The calls whose verdict depends on their arguments, per `expected` (numbers of the
    /// legacy x86_64 calls written out).
    const ARGUMENT_CHECKED: &[i64] = &[
        libc::SYS_ioctl,
        libc::SYS_clone,
        libc::SYS_fchmod,
        libc::SYS_fchmodat,
        libc::SYS_fchmodat2,
        libc::SYS_mkdirat,
        libc::SYS_mknodat,
        libc::SYS_openat,
        90,
        85,
        83,
        133,
        2,
        libc::SYS_prlimit64,
        libc::SYS_setpriority,
        libc::SYS_ioprio_set,
        libc::SYS_sched_setaffinity,
        libc::SYS_sched_setscheduler,
        libc::SYS_sched_setparam,
        libc::SYS_sched_setattr,
        libc::SYS_migrate_pages,
        libc::SYS_move_pages,
        libc::SYS_socket,
    ];

    #[test]
    fn every_syscall_number_gets_its_verdict() {
        let (singles, pairs) = (single_argsets(), pair_argsets());
        for (block_network, notify) in [(false, false), (true, false), (false, true), (true, true)]
        {
            let p = compile(FilterSpec {
                block_network,
                notify,
            });
            assert_eq!(p.len(), 1);
            let p = &p[0];
            assert!(p.len() < 160, "{} instructions", p.len());
            // The notify variant hands exactly the EPERM refusals to the supervisor.
            let want = |nr: u32, args: [u64; 6]| match expected(block_network, nr, args) {
                EPERM if notify => RET_USER_NOTIF,
                other => other,
            };
            let check = |nr: u32, args: &[u64; 6]| {
                assert_eq!(
                    run(p, &data(AUDIT_ARCH, nr, *args)),
                    want(nr, *args),
                    "nr {nr} args {args:?} network blocked {block_network} notify {notify}"
                );
            };
            for nr in (0..1024u32).chain([X32_SYSCALL_BIT, X32_SYSCALL_BIT | 101, u32::MAX]) {
                for args in &singles {
                    check(nr, args);
                }
            }
            for &nr in ARGUMENT_CHECKED {
                for args in &pairs {
                    check(nr as u32, args);
                }
            }
            // A foreign ABI is killed whatever the call.
            for nr in [0, 26, 101] {
                assert_eq!(run(p, &data(0x4000_0003, nr, [0; 6])), RET_KILL_PROCESS);
            }
        }
    }

    #[test]
    fn every_argument_check_refuses_and_allows() {
        // The exhaustive test above compares with `expected`; this one pins the decisions
        // themselves, so that a mistake made in both places still shows.
        let p = &compile(FilterSpec {
            block_network: false,
            notify: false,
        })[0];
        let at = |nr: i64, args: [u64; 6]| run(p, &data(AUDIT_ARCH, nr as u32, args));
        let creat = (libc::O_CREAT | libc::O_WRONLY) as u64;
        let tmpfile = (libc::O_TMPFILE | libc::O_WRONLY) as u64;
        let cases: &[(i64, [u64; 6], u32)] = &[
            (libc::SYS_fchmodat, [0, 0, 0o4755, 0, 0, 0], EPERM),
            (libc::SYS_fchmodat, [0, 0, 0o2755, 0, 0, 0], EPERM),
            (libc::SYS_fchmodat, [0, 0, 0o1777, 0, 0, 0], RET_ALLOW),
            (libc::SYS_fchmod, [3, 0o6755, 0, 0, 0, 0], EPERM),
            (libc::SYS_fchmodat2, [0, 0, 0o755, 0x100, 0, 0], RET_ALLOW),
            (libc::SYS_openat, [0, 0, creat, 0o4755, 0, 0], EPERM),
            (libc::SYS_openat, [0, 0, tmpfile, 0o2700, 0, 0], EPERM),
            (libc::SYS_openat, [0, 0, creat, 0o644, 0, 0], RET_ALLOW),
            (
                libc::SYS_openat,
                [0, 0, libc::O_RDONLY as u64, 0o4755, 0, 0],
                RET_ALLOW,
            ),
            (libc::SYS_openat2, [0, 0, 0, 24, 0, 0], ENOSYS),
            (libc::SYS_mknodat, [0, 0, 0o104755, 0, 0, 0], EPERM),
            (libc::SYS_mkdirat, [0, 0, 0o2755, 0, 0, 0], EPERM),
            (libc::SYS_prlimit64, [0, 7, 0x7ffd_0000, 0, 0, 0], RET_ALLOW),
            (
                libc::SYS_prlimit64,
                [1234, 7, 0, 0x7ffd_0000, 0, 0],
                RET_ALLOW,
            ),
            (
                libc::SYS_prlimit64,
                [1234, 7, 0x7ffd_0000_0000, 0, 0, 0],
                EPERM,
            ),
            (
                libc::SYS_prlimit64,
                [1 << 32, 7, 0x7ffd_0000, 0, 0, 0],
                RET_ALLOW,
            ),
            (libc::SYS_socket, [2, 1, 0, 0, 0, 0], RET_ALLOW), // AF_INET stream
            (libc::SYS_socket, [10, 1, 6, 0, 0, 0], RET_ALLOW), // AF_INET6 TCP
            (libc::SYS_socket, [2, 2, 17, 0, 0, 0], RET_ALLOW), // UDP
            (libc::SYS_socket, [2, 1, 262, 0, 0, 0], EPERM),   // MPTCP
            (libc::SYS_socket, [10, 1, 262, 0, 0, 0], EPERM),
            (libc::SYS_socket, [43, 1, 0, 0, 0, 0], EPERM), // AF_SMC
            (libc::SYS_setpriority, [0, 0, 19, 0, 0, 0], RET_ALLOW),
            (libc::SYS_setpriority, [0, 1234, 19, 0, 0, 0], EPERM),
            (libc::SYS_setpriority, [2, 0, 19, 0, 0, 0], EPERM), // PRIO_USER: every process
            (libc::SYS_ioprio_set, [1, 0, 3 << 13, 0, 0, 0], RET_ALLOW),
            (libc::SYS_ioprio_set, [3, 0, 3 << 13, 0, 0, 0], EPERM), // IOPRIO_WHO_USER
            (
                libc::SYS_sched_setaffinity,
                [0, 8, 0x7ffd_0000, 0, 0, 0],
                RET_ALLOW,
            ),
            (
                libc::SYS_sched_setaffinity,
                [1234, 8, 0x7ffd_0000, 0, 0, 0],
                EPERM,
            ),
            (libc::SYS_sched_setattr, [1, 0x7ffd_0000, 0, 0, 0, 0], EPERM),
            (libc::SYS_move_pages, [1234, 0, 0, 0, 0, 0], EPERM),
        ];
        for &(nr, args, want) in cases {
            assert_eq!(at(nr, args), want, "nr {nr} args {args:?}");
        }
    }

    #[test]
    fn the_search_is_shallow() {
        // The point of generating the filter: no syscall walks a long chain. The bound is the
        // header (4), the search (at most 6 comparisons here, then 3 in a leaf), the longest
        // argument check (6) and the return.
        let p = &compile(FilterSpec {
            block_network: true,
            notify: false,
        })[0];
        for nr in 0..512u32 {
            for args in [[0u64; 6], [1234, 0, 1, 0, 0, 0]] {
                let (_, steps) = run_counted(p, &data(AUDIT_ARCH, nr, args));
                assert!(steps <= 20, "syscall {nr} takes {steps} instructions");
            }
        }
    }

    #[test]
    fn encode_roundtrips() {
        let p = compile(FilterSpec {
            block_network: true,
            notify: false,
        });
        let d = decode(&encode(&p)).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].len(), p[0].len());
        for (x, y) in d[0].iter().zip(&p[0]) {
            assert_eq!((x.code, x.jt, x.jf, x.k), (y.code, y.jt, y.jf, y.k));
        }
    }
}
