//! Benchmark driver for `scripts/bench`: every figure next to its baseline, in one run.
//!
//! `cargo run --release --example bench -- [--quick]` prints a Markdown table.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    line: Vec<u8>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let bin =
            std::env::var("STOCKADE_BIN").unwrap_or_else(|_| "target/release/stockade".into());
        let mut cmd = Command::new(bin);
        cmd.arg("serve").args(args);
        Server::start_cmd(cmd)
    }

    /// Any executor that speaks the protocol on stdio (stockade, or the reference).
    fn start_cmd(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the executor");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
        let mut s = Server {
            child,
            stdin,
            stdout,
            next_id: 1,
            line: Vec::new(),
        };
        s.call("initialize", json!({"clientName": "bench"}));
        s.send(&json!({"method": "initialized"}));
        s
    }

    fn send(&mut self, v: &Value) {
        let mut b = serde_json::to_vec(v).unwrap();
        b.push(b'\n');
        self.stdin.write_all(&b).unwrap();
    }

    fn recv(&mut self) -> &[u8] {
        self.line.clear();
        let n = self.stdout.read_until(b'\n', &mut self.line).unwrap();
        assert!(n > 0, "server closed");
        &self.line
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"id": id, "method": method, "params": params}));
        loop {
            let v: Value = serde_json::from_slice(self.recv()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{v}");
                return v["result"].clone();
            }
        }
    }

    /// Starts a process and waits for `process/closed`; returns decoded output bytes.
    fn run(&mut self, pid: &str, argv: &[&str], extra: Value) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let mut params = json!({"processId": pid, "argv": argv, "cwd": "file:///tmp",
            "env": {"PATH": "/usr/bin:/bin"}, "tty": false});
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        self.send(&json!({"id": id, "method": "process/start", "params": params}));
        let mut bytes = 0;
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut decoded = Vec::new();
        loop {
            let line = self.recv();
            #[derive(serde::Deserialize)]
            struct Msg<'a> {
                id: Option<u64>,
                method: Option<&'a str>,
                #[serde(borrow)]
                params: Option<Params<'a>>,
                error: Option<Value>,
            }
            #[derive(serde::Deserialize)]
            struct Params<'a> {
                chunk: Option<&'a str>,
            }
            let m: Msg = serde_json::from_slice(line).unwrap();
            if m.id == Some(id) {
                assert!(m.error.is_none(), "{:?}", m.error);
            }
            match m.method {
                Some("process/output") => {
                    let chunk = m.params.and_then(|p| p.chunk).unwrap();
                    decoded.clear();
                    engine.decode_vec(chunk, &mut decoded).unwrap();
                    bytes += decoded.len();
                }
                Some("process/closed") => return bytes,
                _ => {}
            }
        }
    }
}

impl Server {
    /// Starts `count` processes at once and waits until all are closed.
    fn run_many(&mut self, prefix: &str, count: usize, argv: &[&str], extra: Value) {
        for k in 0..count {
            let id = self.next_id;
            self.next_id += 1;
            let mut params = json!({"processId": format!("{prefix}{k}"), "argv": argv, "cwd": "/tmp",
                "env": {"PATH": "/usr/bin:/bin"}, "tty": false});
            for (key, v) in extra.as_object().unwrap() {
                params[key] = v.clone();
            }
            self.send(&json!({"id": id, "method": "process/start", "params": params}));
        }
        let mut closed = 0;
        while closed < count {
            let v: Value = serde_json::from_slice(self.recv()).unwrap();
            assert!(v.get("error").is_none(), "{v}");
            if v["method"] == "process/closed" {
                closed += 1;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pct(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nanoseconds per refused `socket(AF_INET)` in a confined Python loop (network off), as the
/// program itself measures it, and per call of its allowed counterpart (`socketpair`).
fn refused_call_ns(s: &mut Server, tag: &str, calls: usize) -> (f64, f64) {
    let out = std::env::temp_dir().join(format!("stockade-bench-{tag}-{}", std::process::id()));
    let code = format!(
        "import socket, time\nn = {calls}\nt = time.perf_counter_ns()\nfor _ in range(n):\n try:\n  socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n except OSError:\n  pass\nr = (time.perf_counter_ns() - t) / n\nt = time.perf_counter_ns()\nfor _ in range(n):\n try:\n  a, b = socket.socketpair()\n  a.close(); b.close()\n except OSError:\n  pass\nk = (time.perf_counter_ns() - t) / n\nopen({:?}, 'w').write(f'{{r}} {{k}}')\n",
        out.to_str().unwrap()
    );
    s.run(
        tag,
        &["/usr/bin/python3", "-c", &code],
        json!({"sandboxPolicy": {"type": "workspace-write", "network_access": false}}),
    );
    let text = std::fs::read_to_string(&out).expect("the refusal loop's result");
    let _ = std::fs::remove_file(&out);
    let mut it = text.split(' ').map(|x| x.parse::<f64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// `--refusals`: what seccomp user notification costs (issue 16): a refused call answered by
/// the server against the plain filter's kernel answer (a server started under an outer
/// seccomp listener, so that its processes fall back to the plain filter), and the sandboxed
/// spawn against the unsandboxed one.
fn refusal_rows(n: usize) {
    let calls = 20_000;
    let mut notified =
        Server::start(&["--retain-exited-ms", "0", "--ceiling", "danger-full-access"]);
    let bin = std::env::var("STOCKADE_BIN").unwrap_or_else(|_| "target/release/stockade".into());
    let mut cmd = Command::new(bin);
    cmd.arg("serve").args(["--retain-exited-ms", "0"]);
    // SAFETY: between fork and exec only raw syscalls on stack data.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let allow = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            let prog = libc::sock_fprog {
                len: 1,
                filter: allow.as_ptr() as *mut _,
            };
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::fcntl(fd as i32, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let mut plain = Server::start_cmd(cmd);
    let (mut with_notify, mut with_plain, mut allowed) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..5 {
        let (r, a) = refused_call_ns(&mut notified, &format!("rn{k}"), calls);
        with_notify.push(r);
        allowed.push(a);
        with_plain.push(refused_call_ns(&mut plain, &format!("rp{k}"), calls).0);
    }
    let (rn, rp, al) = (
        pct(&mut with_notify, 0.5),
        pct(&mut with_plain, 0.5),
        pct(&mut allowed, 0.5),
    );
    let unconfined = json!({"sandboxPolicy": {"type": "danger-full-access"}});
    let confined = json!({"sandboxPolicy": {"type": "workspace-write"}});
    let (mut sto, mut sbx) = (Vec::new(), Vec::new());
    for k in 0..n {
        let t = Instant::now();
        notified.run(&format!("p{k}"), &["/bin/true"], unconfined.clone());
        sto.push(ms(t.elapsed()));
        let t = Instant::now();
        notified.run(&format!("s{k}"), &["/bin/true"], confined.clone());
        sbx.push(ms(t.elapsed()));
    }
    let (sm, xm) = (pct(&mut sto, 0.5), pct(&mut sbx, 0.5));
    println!("| figure | baseline | measured | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| refused `socket(AF_INET)` with user notification, in a Python loop, median of 5x{calls} | plain filter (EPERM in the kernel) {:.2} µs | {:.2} µs | +{:.2} µs |",
        rp / 1000.0,
        rn / 1000.0,
        (rn - rp) / 1000.0
    );
    println!(
        "| the loop's allowed counterpart (`socketpair` + 2 `close`) | - | {:.2} µs | - |",
        al / 1000.0
    );
    println!(
        "| spawn `/bin/true` sandboxed (workspace-write, with the listener), median (n={n}) | unsandboxed {sm:.3} ms | {xm:.3} ms | {:.2} |",
        xm / sm
    );
}

fn main() {
    if std::env::args().any(|a| a == "--refusals") {
        refusal_rows(200);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // `--spawn-only`: the spawn rows alone (for profiling the spawn path without the rest).
    let spawn_only = std::env::args().any(|a| a == "--spawn-only");
    let n = if quick { 200 } else { 1000 };
    let total: usize = if quick { 200_000_000 } else { 1_000_000_000 };

    // Spawn latency, interleaved so all variants see the same machine conditions.
    let mut s = Server::start(&["--retain-exited-ms", "0", "--ceiling", "danger-full-access"]);
    let unconfined = json!({"sandboxPolicy": {"type": "danger-full-access"}});
    let confined = json!({"sandboxPolicy": {"type": "workspace-write"}});
    let bwrap = !spawn_only && std::path::Path::new("/usr/bin/bwrap").exists();
    let bwrap_args = [
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--unshare-all",
        "--die-with-parent",
        "/bin/true",
    ];
    for k in 0..50 {
        s.run(&format!("w{k}"), &["/bin/true"], unconfined.clone());
        s.run(&format!("ws{k}"), &["/bin/true"], confined.clone());
        Command::new("/bin/true").status().unwrap();
    }
    let (mut plain, mut sto, mut sbx, mut bw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..n {
        let t = Instant::now();
        let st = Command::new("/bin/true")
            .stdin(Stdio::null())
            .status()
            .unwrap();
        plain.push(ms(t.elapsed()));
        assert!(st.success());
        let t = Instant::now();
        s.run(&format!("p{k}"), &["/bin/true"], unconfined.clone());
        sto.push(ms(t.elapsed()));
        let t = Instant::now();
        s.run(&format!("s{k}"), &["/bin/true"], confined.clone());
        sbx.push(ms(t.elapsed()));
    }
    // bwrap in a loop of its own, interleaved with its own plain baseline: `--unshare-all`
    // creates a network namespace whose teardown runs asynchronously in a kernel worker, and
    // that CPU time would otherwise be billed to whatever the loop measured next.
    let mut bw_plain = Vec::new();
    if bwrap {
        for _ in 0..(n / 4).max(20) {
            let t = Instant::now();
            Command::new("/bin/true")
                .stdin(Stdio::null())
                .status()
                .unwrap();
            bw_plain.push(ms(t.elapsed()));
            let t = Instant::now();
            let st = Command::new("/usr/bin/bwrap")
                .args(bwrap_args)
                .stdin(Stdio::null())
                .status()
                .unwrap();
            bw.push(ms(t.elapsed()));
            assert!(st.success());
        }
    }
    let (pm, sm, xm) = (pct(&mut plain, 0.5), pct(&mut sto, 0.5), pct(&mut sbx, 0.5));
    let (p9, s9, x9) = (pct(&mut plain, 0.9), pct(&mut sto, 0.9), pct(&mut sbx, 0.9));
    let bwm = if bwrap {
        Some((pct(&mut bw_plain, 0.5), pct(&mut bw, 0.5)))
    } else {
        None
    };
    if spawn_only {
        println!(
            "| spawn unsandboxed, median (n={n}) | plain {pm:.3} ms | {sm:.3} ms | {:.2} |",
            sm / pm
        );
        println!(
            "| spawn unsandboxed, p90 | plain {p9:.3} ms | {s9:.3} ms | {:.2} |",
            s9 / p9
        );
        println!(
            "| spawn sandboxed, median | unsandboxed {sm:.3} ms | {xm:.3} ms | {:.2} |",
            xm / sm
        );
        println!(
            "| spawn sandboxed, p90 | unsandboxed {s9:.3} ms | {x9:.3} ms | {:.2} |",
            x9 / s9
        );
        return;
    }

    // Streaming: plain pipe read vs. through stockade (JSON + base64 decoded by this client).
    let count = total.to_string();
    let cmd = ["head", "-c", count.as_str(), "/dev/zero"];
    let t = Instant::now();
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0;
    loop {
        let k = out.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got += k;
    }
    child.wait().unwrap();
    let raw = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    assert_eq!(got, total);
    let t = Instant::now();
    let got = s.run("stream", &cmd, unconfined.clone());
    let through = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    assert_eq!(got, total);

    // Sandbox with the private mount namespace: a workspace with an existing .git.
    let repo = std::env::temp_dir().join(format!("stockade-bench-repo-{}", std::process::id()));
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    let repo_s = repo.to_string_lossy().to_string();
    let with_mounts = json!({"cwd": repo_s, "sandboxPolicy": {"type": "workspace-write"}});
    let mut mnt = Vec::new();
    for k in 0..(n / 4).max(20) {
        let t = Instant::now();
        s.run(&format!("mnt{k}"), &["/bin/true"], with_mounts.clone());
        mnt.push(ms(t.elapsed()));
    }
    let mm = pct(&mut mnt, 0.5);
    let _ = std::fs::remove_dir_all(&repo);

    // A syscall-heavy job: plain vs unsandboxed vs sandboxed.
    let job = ["sh", "-c", "find /usr -type f | wc -l"];
    let reps = if quick { 3 } else { 7 };
    let (mut fp, mut fu, mut fs_) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..reps {
        let t = Instant::now();
        Command::new(job[0])
            .args(&job[1..])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        fp.push(ms(t.elapsed()));
        let t = Instant::now();
        s.run(&format!("fu{k}"), &job, unconfined.clone());
        fu.push(ms(t.elapsed()));
        let t = Instant::now();
        s.run(
            &format!("fs{k}"),
            &job,
            json!({"sandboxPolicy": {"type": "read-only"}}),
        );
        fs_.push(ms(t.elapsed()));
    }
    let (fpm, fum, fsm) = (pct(&mut fp, 0.5), pct(&mut fu, 0.5), pct(&mut fs_, 0.5));

    // Concurrent spawns per second: 200 at once.
    let burst = 200;
    let t = Instant::now();
    let children: Vec<_> = (0..burst)
        .map(|_| {
            Command::new("/bin/true")
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        c.wait().unwrap();
    }
    let plain_rate = burst as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    s.run_many("bu", burst, &["/bin/true"], unconfined.clone());
    let sto_rate = burst as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    s.run_many("bs", burst, &["/bin/true"], confined.clone());
    let sbx_rate = burst as f64 / t.elapsed().as_secs_f64();

    // The reference Codex executor (scripts/compat-codex installs it), when present.
    let codex = std::env::var("CODEX_BIN").ok().or_else(|| {
        let p = std::env::temp_dir().join("stockade-codex-ref/node_modules/.bin/codex");
        p.exists().then(|| p.to_string_lossy().into_owned())
    });
    // Both unsandboxed and with the `sandbox` object current Codex clients send (read-only
    // root, the workspace writable); stockade gets the same object.
    let profile = json!({"sandbox": {
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"}]}},
        "cwd": "file:///tmp", "workspaceRoots": ["file:///tmp"],
        "windowsSandboxLevel": "disabled", "useLegacyLandlock": false}});
    let codex_medians = codex.map(|bin| {
        let mut cmd = Command::new(bin);
        cmd.args(["exec-server", "--listen", "stdio"]);
        let mut r = Server::start_cmd(cmd);
        let (mut plain_ref, mut boxed_ref, mut boxed_us) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..(n / 4).max(20) {
            let t = Instant::now();
            r.run(&format!("c{k}"), &["/bin/true"], json!({}));
            plain_ref.push(ms(t.elapsed()));
            let t = Instant::now();
            r.run(&format!("cs{k}"), &["/bin/true"], profile.clone());
            boxed_ref.push(ms(t.elapsed()));
            let t = Instant::now();
            s.run(&format!("us{k}"), &["/bin/true"], profile.clone());
            boxed_us.push(ms(t.elapsed()));
        }
        (
            pct(&mut plain_ref, 0.5),
            pct(&mut boxed_ref, 0.5),
            pct(&mut boxed_us, 0.5),
        )
    });

    // Filesystem API: 4 KiB read and write, with a policy vs. without (danger-full-access).
    let dir = std::env::temp_dir().join(format!("stockade-bench-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let small = dir.join("small");
    let large = dir.join("large");
    std::fs::write(&small, vec![b'x'; 4096]).unwrap();
    std::fs::write(&large, vec![b'y'; 1 << 20]).unwrap();
    let (small_s, large_s) = (small.to_str().unwrap(), large.to_str().unwrap());
    let policy = json!({"sandboxPolicy": {"type": "workspace-write"},
                        "sandboxCwd": dir.to_str().unwrap()});
    let none = json!({"sandboxPolicy": {"type": "danger-full-access"}});
    let data4k = base64::engine::general_purpose::STANDARD.encode(vec![b'z'; 4096]);
    let merged = |base: &Value, extra: Value| {
        let mut p = extra;
        for (k, v) in base.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let (mut rd0, mut rd1, mut wr0, mut wr1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..n + 50 {
        let mut time = |params: Value, method: &str, into: &mut Vec<f64>| {
            let t = Instant::now();
            s.call(method, params);
            if k >= 50 {
                into.push(ms(t.elapsed()));
            }
        };
        time(
            merged(&none, json!({"path": small_s})),
            "fs/readFile",
            &mut rd0,
        );
        time(
            merged(&policy, json!({"path": small_s})),
            "fs/readFile",
            &mut rd1,
        );
        let w = json!({"path": dir.join("w").to_str().unwrap(), "dataBase64": data4k});
        time(merged(&none, w.clone()), "fs/writeFile", &mut wr0);
        time(merged(&policy, w), "fs/writeFile", &mut wr1);
    }
    let (rd0m, rd1m) = (pct(&mut rd0, 0.5), pct(&mut rd1, 0.5));
    let (wr0m, wr1m) = (pct(&mut wr0, 0.5), pct(&mut wr1, 0.5));
    let reps_1m = if quick { 20 } else { 100 };
    let t = Instant::now();
    for _ in 0..reps_1m {
        std::hint::black_box(std::fs::read(&large).unwrap());
    }
    let plain_1m = reps_1m as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..reps_1m {
        let r = s.call("fs/readFile", merged(&policy, json!({"path": large_s})));
        let text = r["dataBase64"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(bytes.len(), 1 << 20);
    }
    let api_1m = reps_1m as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    // `git status` on a large tree: plain vs. unsandboxed vs. sandboxed (workspace-write,
    // which makes .git read-only through the mount namespace).
    let git = Command::new("git").arg("--version").output().is_ok();
    let git_row = git.then(|| {
        let files = if quick { 5_000 } else { 20_000 };
        let repo = std::env::temp_dir().join(format!("stockade-bench-git-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&repo);
        for i in 0..files {
            let d = repo.join(format!("d{}", i / 100));
            if i % 100 == 0 {
                std::fs::create_dir_all(&d).unwrap();
            }
            std::fs::write(d.join(format!("f{i}")), format!("{i}\n")).unwrap();
        }
        let git_in = |args: &[&str]| {
            let st = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["-c", "user.name=b", "-c", "user.email=b@b"])
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "git {args:?}");
        };
        git_in(&["init", "-q"]);
        git_in(&["add", "-A"]);
        git_in(&["commit", "-q", "-m", "bench"]);
        let repo_s = repo.to_str().unwrap().to_string();
        let env = json!({"PATH": "/usr/bin:/bin", "GIT_OPTIONAL_LOCKS": "0"});
        let job = ["git", "status", "--porcelain"];
        let (mut gp, mut gu, mut gs) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..(if quick { 5 } else { 15 }) {
            let t = Instant::now();
            Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["status", "--porcelain"])
                .env("GIT_OPTIONAL_LOCKS", "0")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            gp.push(ms(t.elapsed()));
            let t = Instant::now();
            s.run(
                &format!("gu{k}"),
                &job,
                json!({"cwd": repo_s, "env": env, "sandboxPolicy": {"type": "danger-full-access"}}),
            );
            gu.push(ms(t.elapsed()));
            let t = Instant::now();
            s.run(
                &format!("gs{k}"),
                &job,
                json!({"cwd": repo_s, "env": env, "sandboxPolicy": {"type": "workspace-write"}}),
            );
            gs.push(ms(t.elapsed()));
        }
        let _ = std::fs::remove_dir_all(&repo);
        (
            files,
            pct(&mut gp, 0.5),
            pct(&mut gu, 0.5),
            pct(&mut gs, 0.5),
        )
    });

    println!("| figure | baseline | measured | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| spawn `/bin/true` unsandboxed, start→closed, median (n={n}) | plain spawn {pm:.3} ms | {sm:.3} ms | {:.2} |",
        sm / pm
    );
    println!(
        "| spawn `/bin/true` unsandboxed, p90 | plain spawn {p9:.3} ms | {s9:.3} ms | {:.2} |",
        s9 / p9
    );
    println!(
        "| spawn `/bin/true` sandboxed (workspace-write), median | unsandboxed {sm:.3} ms | {xm:.3} ms | {:.2} |",
        xm / sm
    );
    println!(
        "| spawn `/bin/true` sandboxed (workspace-write), p90 | unsandboxed {s9:.3} ms | {x9:.3} ms | {:.2} |",
        x9 / s9
    );
    match bwm {
        Some((bp, b)) => println!(
            "| `bwrap --ro-bind / / --unshare-all --die-with-parent /bin/true`, median (own loop) | plain spawn {bp:.3} ms | {b:.3} ms | {:.2} |",
            b / bp
        ),
        None => println!("| bwrap | not installed | - | - |"),
    }
    println!(
        "| spawn sandboxed with a protected `.git` (mount namespace), median | unsandboxed {sm:.3} ms | {mm:.3} ms | {:.2} |",
        mm / sm
    );
    println!(
        "| `find /usr -type f \\| wc -l` unsandboxed, median of {reps} | plain {fpm:.0} ms | {fum:.0} ms | {:.2} |",
        fum / fpm
    );
    println!(
        "| `find /usr -type f \\| wc -l` sandboxed (read-only), median of {reps} | unsandboxed {fum:.0} ms | {fsm:.0} ms | {:.2} |",
        fsm / fum
    );
    println!(
        "| 200 concurrent `/bin/true`, unsandboxed | plain {plain_rate:.0}/s | {sto_rate:.0}/s | {:.2} |",
        sto_rate / plain_rate
    );
    println!(
        "| 200 concurrent `/bin/true`, sandboxed | unsandboxed {sto_rate:.0}/s | {sbx_rate:.0}/s | {:.2} |",
        sbx_rate / sto_rate
    );
    println!(
        "| stdout streaming, {} MB, unsandboxed | pipe {raw:.0} MB/s | {through:.0} MB/s | {:.2} |",
        total / 1_000_000,
        through / raw
    );
    match codex_medians {
        Some((c, cs, us)) => {
            println!(
                "| reference `codex exec-server` (0.169.0) spawn `/bin/true` unsandboxed, median | stockade unsandboxed {sm:.3} ms | {c:.3} ms | {:.2} |",
                c / sm
            );
            println!(
                "| reference `codex exec-server` spawn `/bin/true` with the same `sandbox` profile, median | stockade with that profile {us:.3} ms | {cs:.3} ms | {:.2} |",
                cs / us
            );
        }
        None => println!(
            "| reference `codex exec-server` | not installed (run scripts/compat-codex once) | - | - |"
        ),
    }
    match git_row {
        Some((files, gpm, gum, gsm)) => {
            println!(
                "| `git status` on {files} files, unsandboxed, median | plain {gpm:.1} ms | {gum:.1} ms | {:.2} |",
                gum / gpm
            );
            println!(
                "| `git status` on {files} files, sandboxed (workspace-write, .git read-only), median | unsandboxed {gum:.1} ms | {gsm:.1} ms | {:.2} |",
                gsm / gum
            );
        }
        None => println!("| `git status` | git not installed | - | - |"),
    }
    println!(
        "| `fs/readFile` 4 KiB, median (n={n}) | no policy {rd0m:.3} ms | workspace-write {rd1m:.3} ms | {:.2} |",
        rd1m / rd0m
    );
    println!(
        "| `fs/writeFile` 4 KiB, median (n={n}) | no policy {wr0m:.3} ms | workspace-write {wr1m:.3} ms | {:.2} |",
        wr1m / wr0m
    );
    println!(
        "| `fs/readFile` 1 MiB with a policy, decoded by the client | `std::fs::read` {:.0} MB/s | {:.0} MB/s | {:.2} |",
        plain_1m * 1.048576,
        api_1m * 1.048576,
        api_1m / plain_1m
    );
}
