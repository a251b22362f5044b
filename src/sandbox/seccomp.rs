//! Policy → seccomp BPF program, generated in the parent (once per distinct setting, cached
//! by the caller) and applied by the child as the very last step before `execve`.
//!
//! One filter, generated here rather than with a filter compiler, because its *shape* is
//! what a spawn pays for: the kernel converts, JITs and, for its per-syscall action cache,
//! emulates every installed filter once per syscall number and architecture. A linear chain
//! of rules (seccompiler's output was 289 instructions here, two filters) cost about 220 µs
//! per sandboxed spawn; a balanced binary search over the syscall number with shared action
//! blocks is a fraction of that (see `scripts/bench`). Refusals answer EPERM, and `clone3`
//! ENOSYS so that libc falls back to `clone`, whose flags the filter can inspect. A syscall
//! of a foreign ABI (i386 `int 0x80`) kills the process: its numbers mean other calls, so no
//! rule here could filter it. x32 calls (the x32 bit set) answer ENOSYS.

/// What the filter must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FilterSpec {
    /// Refuse creating sockets (every family; `socketpair` stays allowed).
    pub block_network: bool,
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

/// What the filter does with one syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Eperm,
    Enosys,
    /// `ioctl`: EPERM for the terminal-injection requests, allowed otherwise.
    IoctlCheck,
    /// `clone`: EPERM when a namespace flag is set, allowed otherwise.
    CloneCheck,
}

/// Jump targets before layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Label {
    Next,
    Allow,
    Eperm,
    Enosys,
    Kill,
    Ioctl,
    Clone,
    /// The first instruction of a subtree, by its index in `Gen::subtrees`.
    Subtree(usize),
}

impl From<Verdict> for Label {
    fn from(v: Verdict) -> Label {
        match v {
            Verdict::Eperm => Label::Eperm,
            Verdict::Enosys => Label::Enosys,
            Verdict::IoctlCheck => Label::Ioctl,
            Verdict::CloneCheck => Label::Clone,
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

/// The syscall table of a spec: number → verdict, sorted.
fn table(spec: FilterSpec) -> Vec<(u32, Verdict)> {
    let mut t: Vec<(u32, Verdict)> = DENY.iter().map(|&n| (n as u32, Verdict::Eperm)).collect();
    t.push((libc::SYS_clone3 as u32, Verdict::Enosys));
    t.push((libc::SYS_ioctl as u32, Verdict::IoctlCheck));
    t.push((libc::SYS_clone as u32, Verdict::CloneCheck));
    if spec.block_network {
        t.push((libc::SYS_socket as u32, Verdict::Eperm));
    }
    t.sort_unstable_by_key(|e| e.0);
    t.dedup_by_key(|e| e.0);
    t
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
    g.search(&table(spec));
    let ns_mask = CLONE_NS_FLAGS.iter().fold(0u64, |m, f| m | f);
    g.ops.extend([
        Op::Mark(Label::Ioctl),
        Op::Load(off_arg_low(1)),
        Op::Jeq(libc::TIOCSTI as u32, Label::Eperm, Label::Next),
        Op::Jeq(libc::TIOCLINUX as u32, Label::Eperm, Label::Allow),
        Op::Mark(Label::Clone),
        Op::Load(off_arg_low(0)),
        Op::Jset(ns_mask as u32, Label::Eperm, Label::Allow),
        Op::Mark(Label::Allow),
        Op::Ret(RET_ALLOW),
        Op::Mark(Label::Eperm),
        Op::Ret(RET_ERRNO | libc::EPERM as u32),
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

    /// What the filter must answer, written independently of the generator.
    fn expected(block_network: bool, nr: u32, args: [u64; 6]) -> u32 {
        let n = nr as i64;
        if nr >= X32_SYSCALL_BIT && cfg!(target_arch = "x86_64") {
            ENOSYS
        } else if DENY.contains(&n) || (block_network && n == libc::SYS_socket) {
            EPERM
        } else if n == libc::SYS_clone3 {
            ENOSYS
        } else {
            let injection = n == libc::SYS_ioctl
                && [libc::TIOCSTI, libc::TIOCLINUX].contains(&(args[1] & 0xffff_ffff));
            let new_namespace =
                n == libc::SYS_clone && CLONE_NS_FLAGS.iter().any(|f| args[0] & f != 0);
            if injection || new_namespace {
                EPERM
            } else {
                RET_ALLOW
            }
        }
    }

    #[test]
    fn every_syscall_number_gets_its_verdict() {
        for block_network in [false, true] {
            let p = compile(FilterSpec { block_network });
            assert_eq!(p.len(), 1);
            let p = &p[0];
            assert!(p.len() < 100, "{} instructions", p.len());
            let mut argsets = vec![[0u64; 6]];
            for f in CLONE_NS_FLAGS {
                argsets.push([f | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]);
            }
            for cmd in [
                libc::TIOCSTI,
                libc::TIOCLINUX,
                libc::TIOCGWINSZ,
                libc::FIONREAD,
            ] {
                argsets.push([0, cmd, 0, 0, 0, 0]);
                argsets.push([0, cmd | 0xdead_0000_0000, 0, 0, 0, 0]);
            }
            for nr in (0..1024u32).chain([X32_SYSCALL_BIT, X32_SYSCALL_BIT | 101, u32::MAX]) {
                for args in &argsets {
                    assert_eq!(
                        run(p, &data(AUDIT_ARCH, nr, *args)),
                        expected(block_network, nr, *args),
                        "nr {nr} args {args:?} network blocked {block_network}"
                    );
                }
            }
            // A foreign ABI is killed whatever the call.
            for nr in [0, 26, 101] {
                assert_eq!(run(p, &data(0x4000_0003, nr, [0; 6])), RET_KILL_PROCESS);
            }
        }
    }

    #[test]
    fn the_search_is_shallow() {
        // The point of generating the filter: no syscall walks a long chain.
        let p = &compile(FilterSpec {
            block_network: true,
        })[0];
        for nr in 0..512u32 {
            let (_, steps) = run_counted(p, &data(AUDIT_ARCH, nr, [0; 6]));
            assert!(steps <= 16, "syscall {nr} takes {steps} instructions");
        }
    }

    #[test]
    fn encode_roundtrips() {
        let p = compile(FilterSpec {
            block_network: true,
        });
        let d = decode(&encode(&p)).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].len(), p[0].len());
        for (x, y) in d[0].iter().zip(&p[0]) {
            assert_eq!((x.code, x.jt, x.jf, x.k), (y.code, y.jt, y.jf, y.k));
        }
    }
}
