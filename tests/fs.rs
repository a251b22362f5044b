//! Filesystem API tests (PROTOCOL.md section 8) over the real binary: every method's happy
//! path and exact errors, symlink escapes, a symlink-swap race, large files, and the parity
//! property test (fs API decision == what a real child under the same policy experiences).
//! `.ci/run` runs this file as root and again as uid 65534.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

const PY: &str = "/usr/bin/python3";

/// The common scratch tree (`ws/` writable, `outside/` readable), with a secret outside.
fn scratch(tag: &str) -> Scratch {
    let s = Scratch::new(tag);
    std::fs::write(s.outside().join("secret"), "outside\n").unwrap();
    s
}

fn rel(s: &Scratch, rel: &str) -> String {
    s.root.join(rel).to_str().unwrap().to_string()
}

/// workspace-write on `ws` only (no /tmp, no $TMPDIR); reads everywhere.
fn ws_write(s: &Scratch) -> Value {
    json!({"sandboxPolicy": {"type": "workspace-write", "exclude_slash_tmp": true,
                             "exclude_tmpdir_env_var": true},
           "sandboxCwd": s.ws().to_str().unwrap()})
}

/// workspace-write on `ws`, reads only in the platform defaults and `ws`: `outside` is none.
fn ws_only(s: &Scratch) -> Value {
    json!({"sandboxPolicy": {"type": "workspace-write", "exclude_slash_tmp": true,
                             "exclude_tmpdir_env_var": true,
                             "read_only_access": {"type": "restricted", "readable_roots": []}},
           "sandboxCwd": s.ws().to_str().unwrap()})
}

fn with(policy: &Value, params: Value) -> Value {
    let mut p = params;
    for (k, v) in policy.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

async fn client() -> Client {
    let mut c = Client::stdio(&[]).await;
    c.initialize().await;
    c
}

fn err(r: Result<Value, Value>) -> (i64, String) {
    let e = r.expect_err("expected an error");
    (
        e["code"].as_i64().unwrap(),
        e["message"].as_str().unwrap().to_string(),
    )
}

fn denied(op: &str, path: &str) -> (i64, String) {
    (-32600, format!("fs/{op} is not permitted for path {path}"))
}

const ENOENT: &str = "No such file or directory (os error 2)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_happy_path_and_errors() {
    let s = scratch("fsbasic");
    let c = client().await;
    let pol = ws_write(&s);
    let ws = s.ws();
    let w = |rel: &str| ws.join(rel).to_str().unwrap().to_string();

    // writeFile / readFile, plain paths and file URIs.
    c.ok(
        "fs/writeFile",
        with(
            &pol,
            json!({"path": w("a.txt"), "dataBase64": b64(b"hello")}),
        ),
    )
    .await;
    let r = c
        .ok(
            "fs/readFile",
            with(&pol, json!({"path": format!("file://{}", w("a.txt"))})),
        )
        .await;
    assert_eq!(unb64(r["dataBase64"].as_str().unwrap()), b"hello");
    // Truncates and replaces, keeping the mode.
    std::fs::set_permissions(
        w("a.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    c.ok(
        "fs/writeFile",
        with(&pol, json!({"path": w("a.txt"), "dataBase64": b64(b"hi")})),
    )
    .await;
    assert_eq!(std::fs::read(w("a.txt")).unwrap(), b"hi");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(w("a.txt")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o640, "mode kept across the atomic replace");
    assert_eq!(
        err(c
            .call(
                "fs/writeFile",
                with(&pol, json!({"path": w("a.txt"), "dataBase64": "!!"}))
            )
            .await),
        (
            -32600,
            "fs/writeFile requires valid base64 dataBase64: Invalid symbol 33, offset 0.".into()
        )
    );
    assert_eq!(
        std::fs::read(w("a.txt")).unwrap(),
        b"hi",
        "bad base64 wrote nothing"
    );
    assert_eq!(
        err(c
            .call(
                "fs/writeFile",
                with(&pol, json!({"path": w("nodir/x"), "dataBase64": ""}))
            )
            .await),
        (-32004, ENOENT.into())
    );
    assert_eq!(
        err(c
            .call("fs/readFile", with(&pol, json!({"path": w("missing")})))
            .await),
        (-32004, ENOENT.into())
    );
    assert_eq!(
        err(c
            .call("fs/readFile", with(&pol, json!({"path": w("")})))
            .await),
        (-32600, format!("path `{}` is not a file", w("")))
    );
    let (code, msg) = err(c.call("fs/readFile", json!({"path": "relative/x"})).await);
    assert_eq!(code, -32602);
    assert!(msg.contains("path"), "{msg}");
    assert_eq!(
        err(c.call("fs/readFile", json!({})).await),
        (-32602, "invalid params: missing field `path`".into())
    );

    // createDirectory: recursive default, non-recursive errors.
    c.ok(
        "fs/createDirectory",
        with(&pol, json!({"path": w("d/e/f")})),
    )
    .await;
    assert!(ws.join("d/e/f").is_dir());
    c.ok(
        "fs/createDirectory",
        with(&pol, json!({"path": w("d/e/f")})),
    )
    .await;
    assert_eq!(
        err(c
            .call(
                "fs/createDirectory",
                with(&pol, json!({"path": w("d/e/f"), "recursive": false}))
            )
            .await),
        (-32603, "File exists (os error 17)".into())
    );
    assert_eq!(
        err(c
            .call(
                "fs/createDirectory",
                with(&pol, json!({"path": w("x/y"), "recursive": false}))
            )
            .await),
        (-32004, ENOENT.into())
    );

    // getMetadata: fields, symlinks followed except isSymlink.
    std::fs::write(ws.join("d/file"), vec![7u8; 1234]).unwrap();
    symlink("d/file", ws.join("flink")).unwrap();
    symlink("/nonexistent-target", ws.join("dangling")).unwrap();
    let m = c
        .ok("fs/getMetadata", with(&pol, json!({"path": w("flink")})))
        .await;
    assert_eq!(m["isSymlink"], true);
    assert_eq!(m["isFile"], true);
    assert_eq!(m["isDirectory"], false);
    assert_eq!(m["size"], 1234);
    assert!(m["modifiedAtMs"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(m["createdAtMs"].is_u64());
    let m = c
        .ok("fs/getMetadata", with(&pol, json!({"path": w("d")})))
        .await;
    assert_eq!(
        (m["isDirectory"].clone(), m["isSymlink"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(
        err(c
            .call("fs/getMetadata", with(&pol, json!({"path": w("dangling")})))
            .await),
        (-32004, ENOENT.into())
    );

    // readDirectory: dangling links listed with both flags false.
    let r = c
        .ok("fs/readDirectory", with(&pol, json!({"path": w("")})))
        .await;
    let entries = r["entries"].as_array().unwrap();
    let find = |n: &str| entries.iter().find(|e| e["fileName"] == n).cloned();
    assert_eq!(
        find("dangling").unwrap(),
        json!({"fileName": "dangling", "isDirectory": false, "isFile": false})
    );
    assert_eq!(find("d").unwrap()["isDirectory"], true);
    assert_eq!(find("flink").unwrap()["isFile"], true);
    assert_eq!(
        err(c
            .call("fs/readDirectory", with(&pol, json!({"path": w("a.txt")})))
            .await),
        (-32603, "Not a directory (os error 20)".into())
    );

    // canonicalize: the form of the request.
    let r = c
        .ok("fs/canonicalize", with(&pol, json!({"path": w("flink")})))
        .await;
    assert_eq!(r["path"], w("d/file"));
    let r = c
        .ok(
            "fs/canonicalize",
            with(
                &pol,
                json!({"path": format!("file://{}", w("d/e/../file"))}),
            ),
        )
        .await;
    assert_eq!(r["path"], format!("file://{}", w("d/file")));

    // copy: rules and errors.
    std::fs::create_dir_all(ws.join("src/sub")).unwrap();
    std::fs::write(ws.join("src/sub/g"), "g").unwrap();
    symlink("sub/g", ws.join("src/glink")).unwrap();
    nix_mkfifo(&ws.join("src/fifo"));
    assert_eq!(
        err(c
            .call(
                "fs/copy",
                with(
                    &pol,
                    json!({"sourcePath": w("src"), "destinationPath": w("dst"), "recursive": false})
                )
            )
            .await),
        (
            -32600,
            "fs/copy requires recursive: true when sourcePath is a directory".into()
        )
    );
    assert_eq!(
        err(c
            .call(
                "fs/copy",
                with(&pol, json!({"sourcePath": w("src"), "destinationPath": w("src/sub/x"), "recursive": true}))
            )
            .await),
        (-32600, "fs/copy cannot copy a directory to itself or one of its descendants".into())
    );
    assert_eq!(
        err(c
            .call(
                "fs/copy",
                with(&pol, json!({"sourcePath": w("src/fifo"), "destinationPath": w("fifo2"), "recursive": false}))
            )
            .await),
        (-32600, "fs/copy only supports regular files, directories, and symlinks".into())
    );
    // A FIFO nobody reads: the write fails at once instead of blocking a worker; reading one
    // is refused.
    assert_eq!(
        err(c
            .call(
                "fs/writeFile",
                with(&pol, json!({"path": w("src/fifo"), "dataBase64": "eA=="}))
            )
            .await),
        (-32603, "No such device or address (os error 6)".into())
    );
    assert_eq!(
        err(c
            .call("fs/readFile", with(&pol, json!({"path": w("src/fifo")})))
            .await),
        (-32600, format!("path `{}` is not a file", w("src/fifo")))
    );
    c.ok(
        "fs/copy",
        with(
            &pol,
            json!({"sourcePath": w("src"), "destinationPath": w("dst"), "recursive": true}),
        ),
    )
    .await;
    assert_eq!(std::fs::read(ws.join("dst/sub/g")).unwrap(), b"g");
    assert_eq!(
        std::fs::read_link(ws.join("dst/glink")).unwrap(),
        Path::new("sub/g"),
        "symlink recreated, not followed"
    );
    assert!(
        std::fs::symlink_metadata(ws.join("dst/fifo")).is_err(),
        "special files are skipped inside a recursive copy"
    );
    c.ok(
        "fs/copy",
        with(
            &pol,
            json!({"sourcePath": w("flink"), "destinationPath": w("flink2"), "recursive": false}),
        ),
    )
    .await;
    assert_eq!(
        std::fs::read_link(ws.join("flink2")).unwrap(),
        Path::new("d/file")
    );
    c.ok(
        "fs/copy",
        with(
            &pol,
            json!({"sourcePath": w("a.txt"), "destinationPath": w("a.txt"), "recursive": false}),
        ),
    )
    .await;
    assert_eq!(
        std::fs::read(w("a.txt")).unwrap(),
        b"hi",
        "copy onto itself keeps the file"
    );
    assert_eq!(
        err(c
            .call(
                "fs/copy",
                with(
                    &pol,
                    json!({"sourcePath": w("nope"), "destinationPath": w("x"), "recursive": true})
                )
            )
            .await),
        (-32004, ENOENT.into())
    );

    // remove: a symlink is removed, not followed; force; non-recursive on a full dir.
    c.ok("fs/remove", with(&pol, json!({"path": w("flink")})))
        .await;
    assert!(ws.join("d/file").exists(), "the link's target survives");
    assert!(std::fs::symlink_metadata(ws.join("flink")).is_err());
    c.ok("fs/remove", with(&pol, json!({"path": w("gone")})))
        .await;
    assert_eq!(
        err(c
            .call(
                "fs/remove",
                with(&pol, json!({"path": w("gone"), "force": false}))
            )
            .await),
        (-32004, ENOENT.into())
    );
    assert_eq!(
        err(c
            .call(
                "fs/remove",
                with(&pol, json!({"path": w("d"), "recursive": false}))
            )
            .await),
        (-32603, "Directory not empty (os error 39)".into())
    );
    c.ok("fs/remove", with(&pol, json!({"path": w("d")}))).await;
    assert!(!ws.join("d").exists());
}

fn nix_mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_and_ceiling_apply() {
    let s = scratch("fsdefault");
    // The server's default policy is workspace-write rooted at its working directory.
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve").current_dir(s.ws());
    let mut c = Client::stdio_cmd(cmd).await;
    c.initialize().await;
    c.ok(
        "fs/writeFile",
        json!({"path": rel(&s, "ws/in"), "dataBase64": b64(b"1")}),
    )
    .await;
    // Outside the server's cwd and /tmp (which the default policy also makes writable).
    let outside = format!("/usr/{}", marker("fsdenied"));
    assert_eq!(
        err(c
            .call(
                "fs/writeFile",
                json!({"path": outside, "dataBase64": b64(b"1")})
            )
            .await),
        denied("write", &outside)
    );
    assert!(!Path::new(&outside).exists());
    let (code, msg) = err(c
        .call(
            "fs/readFile",
            json!({"path": rel(&s, "ws/in"), "sandboxPolicy": {"type": "danger-full-access"}}),
        )
        .await);
    assert_eq!(code, -32020, "{msg}");
    assert!(msg.contains("ceiling is `workspace-write`"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_escapes_are_denied_for_every_method() {
    let s = scratch("fsescape");
    let c = client().await;
    let ws = s.ws();
    // A link inside the workspace to outside; a parent-component link; `link/../`.
    symlink(s.outside(), ws.join("out")).unwrap();
    symlink(s.outside().join("secret"), ws.join("secretlink")).unwrap();
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    symlink(s.outside().join("deeper"), ws.join("sub/deeplink")).unwrap();
    std::fs::create_dir_all(s.outside().join("deeper")).unwrap();
    std::fs::write(ws.join("src.txt"), "s").unwrap();
    let w = |rel: &str| ws.join(rel).to_str().unwrap().to_string();

    for pol in [ws_write(&s), ws_only(&s)] {
        let writes: Vec<(&str, Value, String)> = vec![
            (
                "fs/writeFile",
                json!({"path": w("out/new"), "dataBase64": "eA=="}),
                w("out/new"),
            ),
            (
                "fs/writeFile",
                json!({"path": w("secretlink"), "dataBase64": "eA=="}),
                w("secretlink"),
            ),
            (
                "fs/writeFile",
                json!({"path": w("sub/deeplink/../new"), "dataBase64": "eA=="}),
                w("sub/deeplink/../new"),
            ),
            (
                "fs/createDirectory",
                json!({"path": w("out/newdir")}),
                w("out/newdir"),
            ),
            (
                "fs/createDirectory",
                json!({"path": w("sub/deeplink/../nd"), "recursive": false}),
                w("sub/deeplink/../nd"),
            ),
            (
                "fs/remove",
                json!({"path": w("out/secret")}),
                w("out/secret"),
            ),
            (
                "fs/remove",
                json!({"path": w("sub/deeplink/../secret")}),
                w("sub/deeplink/../secret"),
            ),
            (
                "fs/copy",
                json!({"sourcePath": w("sub"), "destinationPath": w("out/copy"), "recursive": true}),
                w("out/copy"),
            ),
            (
                "fs/copy",
                json!({"sourcePath": w("src.txt"), "destinationPath": w("out/c2"), "recursive": false}),
                w("out/c2"),
            ),
        ];
        for (method, params, shown) in writes {
            assert_eq!(
                err(c.call(method, with(&pol, params.clone())).await),
                denied("write", &shown),
                "{method} {params}"
            );
        }
        assert_eq!(
            std::fs::read_dir(s.outside()).unwrap().count(),
            2,
            "nothing was created outside"
        );
        assert_eq!(
            std::fs::read(s.outside().join("secret")).unwrap(),
            b"outside\n"
        );
        // The allowed counterparts succeed: the links themselves live in the workspace.
        c.ok(
            "fs/writeFile",
            with(&pol, json!({"path": w("sub/ok"), "dataBase64": "eA=="})),
        )
        .await;
        c.ok("fs/readFile", with(&pol, json!({"path": w("sub/ok")})))
            .await;
    }

    // Reads through links are denied where the target is `none`, allowed where readable.
    let none = ws_only(&s);
    let reads: Vec<(&str, Value, String)> = vec![
        (
            "fs/readFile",
            json!({"path": w("secretlink")}),
            w("secretlink"),
        ),
        (
            "fs/readFile",
            json!({"path": w("out/secret")}),
            w("out/secret"),
        ),
        (
            "fs/readFile",
            json!({"path": w("sub/deeplink/../secret")}),
            w("sub/deeplink/../secret"),
        ),
        (
            "fs/getMetadata",
            json!({"path": w("secretlink")}),
            w("secretlink"),
        ),
        ("fs/readDirectory", json!({"path": w("out")}), w("out")),
        (
            "fs/canonicalize",
            json!({"path": w("out/secret")}),
            w("out/secret"),
        ),
        (
            "fs/copy",
            json!({"sourcePath": w("out/secret"), "destinationPath": w("stolen"), "recursive": false}),
            w("out/secret"),
        ),
    ];
    for (method, params, shown) in reads {
        assert_eq!(
            err(c.call(method, with(&none, params.clone())).await),
            denied("read", &shown),
            "{method} {params}"
        );
    }
    assert!(!ws.join("stolen").exists());
    let readable = ws_write(&s);
    let r = c
        .ok(
            "fs/readFile",
            with(&readable, json!({"path": w("secretlink")})),
        )
        .await;
    assert_eq!(unb64(r["dataBase64"].as_str().unwrap()), b"outside\n");
    // Removing the link itself is allowed: only the link goes.
    c.ok(
        "fs/remove",
        with(&readable, json!({"path": w("secretlink")})),
    )
    .await;
    assert!(s.outside().join("secret").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_paths_follow_the_process_rules() {
    let s = scratch("fsprotect");
    let c = client().await;
    let ws = s.ws();
    std::fs::create_dir_all(ws.join(".git")).unwrap();
    std::fs::write(ws.join(".git/config"), "[core]\n").unwrap();
    let pol = ws_write(&s);
    let w = |rel: &str| ws.join(rel).to_str().unwrap().to_string();
    assert_eq!(
        err(c
            .call(
                "fs/writeFile",
                with(
                    &pol,
                    json!({"path": w(".git/config"), "dataBase64": "eA=="})
                )
            )
            .await),
        denied("write", &w(".git/config"))
    );
    assert_eq!(
        err(c
            .call("fs/remove", with(&pol, json!({"path": w(".git")})))
            .await),
        denied("write", &w(".git"))
    );
    // Reading is fine; so is writing next to it.
    c.ok("fs/readFile", with(&pol, json!({"path": w(".git/config")})))
        .await;
    c.ok(
        "fs/writeFile",
        with(&pol, json!({"path": w(".gitignore"), "dataBase64": "eA=="})),
    )
    .await;
    // A `none` subtree inside the workspace (6.3 shape) cannot be traversed, even by a link.
    std::fs::create_dir_all(ws.join("private")).unwrap();
    std::fs::write(ws.join("private/key"), "k").unwrap();
    symlink("private/key", ws.join("keylink")).unwrap();
    let uri = format!("file://{}", ws.display());
    let managed = json!({"sandbox": {
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "minimal"}}, "access": "read"},
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "project_roots", "subpath": "private"}}, "access": "none"}]}},
        "cwd": uri, "workspaceRoots": [uri]}});
    for (method, params, shown) in [
        (
            "fs/readFile",
            json!({"path": w("private/key")}),
            w("private/key"),
        ),
        ("fs/readFile", json!({"path": w("keylink")}), w("keylink")),
        (
            "fs/getMetadata",
            json!({"path": w("private/key")}),
            w("private/key"),
        ),
        (
            "fs/readDirectory",
            json!({"path": w("private")}),
            w("private"),
        ),
    ] {
        assert_eq!(
            err(c.call(method, with(&managed, params.clone())).await),
            denied("read", &shown),
            "{method}"
        );
    }
    c.ok(
        "fs/readFile",
        with(&managed, json!({"path": w(".gitignore")})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_directory_for_a_symlink_never_writes_outside() {
    let s = scratch("fsrace");
    let c = std::sync::Arc::new(client().await);
    let ws = s.ws();
    let pol = ws_write(&s);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (d, outside, stop) = (ws.join("d"), s.outside(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::create_dir(&d);
                std::thread::yield_now();
                let _ = std::fs::remove_dir_all(&d);
                let _ = symlink(&outside, &d);
                std::thread::yield_now();
                let _ = std::fs::remove_file(&d);
            }
        })
    };
    let target = ws.join("d/f").to_str().unwrap().to_string();
    let mut ok = 0;
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let (c, pol, target) = (c.clone(), pol.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..750 {
                let r = c
                    .call(
                        "fs/writeFile",
                        with(&pol, json!({"path": target, "dataBase64": b64(&[lane])})),
                    )
                    .await;
                if r.is_ok() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    for t in tasks {
        ok += t.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    let outside: Vec<_> = std::fs::read_dir(s.outside())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, vec!["secret"], "a write escaped the workspace");
    assert!(
        ok > 0,
        "no write ever succeeded: the race was not exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_are_read_once_and_limited() {
    let s = scratch("fslarge");
    let c = client().await;
    let pol = ws_write(&s);
    let ws = s.ws();
    // Over the limit: refused before reading (the file is sparse).
    let big = std::fs::File::create(ws.join("big")).unwrap();
    big.set_len(512 * 1024 * 1024 + 1).unwrap();
    assert_eq!(
        err(c
            .call(
                "fs/readFile",
                with(&pol, json!({"path": ws.join("big").to_str().unwrap()}))
            )
            .await),
        (
            -32600,
            "file is too large to read: limit is 536870912 bytes".into()
        )
    );
    // 96 MiB: the server's peak memory grows by about one base64 copy, not two or three.
    let size: usize = 96 * 1024 * 1024;
    let f = std::fs::File::create(ws.join("mid")).unwrap();
    f.set_len(size as u64).unwrap();
    let pid = c.server.as_ref().unwrap().id().unwrap();
    let before = proc_status_kb(pid, "VmHWM");
    let r = c
        .ok(
            "fs/readFile",
            with(&pol, json!({"path": ws.join("mid").to_str().unwrap()})),
        )
        .await;
    let grown_mb = (proc_status_kb(pid, "VmHWM") - before) / 1024;
    let text = r["dataBase64"].as_str().unwrap();
    assert_eq!(text.len(), size.div_ceil(3) * 4);
    assert!(text.starts_with("AAAA") && text.ends_with("AAAA"));
    let b64_mb = (size.div_ceil(3) * 4 / (1024 * 1024)) as u64;
    assert!(
        grown_mb < b64_mb * 3 / 2,
        "peak memory grew by {grown_mb} MiB for a {b64_mb} MiB response"
    );
}

// ---------------------------------------------------------------------------------------
// Parity: the fs API decides exactly as a process under the same policy experiences.

/// A small deterministic generator (xorshift64*), so CI runs a fixed set of cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Makes every directory under `p` searchable and writable again (a `-wx` or `r-x` directory
/// left by [`build_tree`] could not otherwise be emptied by an unprivileged test).
fn reset_modes(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return;
    };
    if m.is_dir() {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            reset_modes(&e.path());
        }
    }
}

/// True when the tests run as root.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Another user than the one running the tests (root can give files to it).
const OTHER_UID: u32 = 4242;

/// Gives the tree of a seed ordinary-permission cases, the same every time: mode-000 files,
/// read-only files, `-wx` (listable by nobody) and `r-x` directories, and as root files and
/// directories of another user (private, or writable by all). A process holds no
/// capability that overrides them, so neither may the fs API.
fn apply_dac(seed: u64, dirs: &[PathBuf], files: &[PathBuf]) {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let give = |p: &Path| std::os::unix::fs::chown(p, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let root = running_as_root();
    let mut rng = Rng(seed.rotate_left(17) | 1);
    for f in files {
        match rng.below(7) {
            0 => set(f, 0o000),
            1 => set(f, 0o444),
            2 if root => {
                give(f);
                set(f, 0o600);
            }
            3 if root => {
                give(f);
                set(f, 0o666);
            }
            _ => {}
        }
    }
    // Deepest first, so that a parent's mode does not stop the test from changing a child.
    // `t` itself stays as it is (the probe's working directory).
    for d in dirs.iter().skip(1).rev() {
        match rng.below(6) {
            0 => set(d, 0o300),
            1 => set(d, 0o555),
            2 if root => {
                give(d);
                set(d, 0o755);
            }
            _ => {}
        }
    }
}

/// Builds the same tree for a seed every time: directories, files and symlinks (inside,
/// outside, relative with `..`, dangling) under `t`, and an `o` directory beside it, with
/// the permission cases of [`apply_dac`].
fn build_tree(base: &Path, seed: u64) -> (Vec<PathBuf>, Vec<PathBuf>) {
    reset_modes(base);
    let _ = std::fs::remove_dir_all(base);
    let t = base.join("t");
    let o = base.join("o");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::create_dir_all(o.join("od")).unwrap();
    std::fs::write(o.join("of"), "o").unwrap();
    std::fs::write(o.join("od/f"), "o").unwrap();
    let mut rng = Rng(seed);
    let mut dirs = vec![t.clone()];
    let mut files = Vec::new();
    for i in 0..5 {
        let parent = dirs[rng.below(dirs.len())].clone();
        let d = parent.join(format!("d{i}"));
        std::fs::create_dir(&d).unwrap();
        dirs.push(d);
    }
    for i in 0..6 {
        let parent = dirs[rng.below(dirs.len())].clone();
        let f = parent.join(format!("f{i}"));
        std::fs::write(&f, format!("{i}")).unwrap();
        files.push(f);
    }
    let mut links = Vec::new();
    for i in 0..5 {
        let parent = dirs[rng.below(dirs.len())].clone();
        let l = parent.join(format!("l{i}"));
        let target: PathBuf = match rng.below(5) {
            0 => o.clone(),
            1 => o.join("of"),
            2 => dirs[rng.below(dirs.len())].clone(),
            3 => files[rng.below(files.len())].clone(),
            _ => PathBuf::from("../nowhere"),
        };
        symlink(&target, &l).unwrap();
        links.push(l);
    }
    let mut nodes: Vec<PathBuf> = dirs.iter().chain(&files).chain(&links).cloned().collect();
    nodes.push(o.clone());
    nodes.push(o.join("of"));
    nodes.push(o.join("od"));
    // Paths through links: `lN/x` and `lN/../x`.
    for l in &links {
        nodes.push(l.join("f"));
        nodes.push(l.join("..").join("of"));
    }
    let mut parents: Vec<PathBuf> = dirs.clone();
    parents.push(o.clone());
    parents.extend(links.iter().cloned());
    apply_dac(seed, &dirs, &files);
    (nodes, parents)
}

fn random_policy(rng: &mut Rng, base: &Path, tree: &[PathBuf]) -> Value {
    let t = base.join("t");
    let mut candidates = tree.to_vec();
    candidates.extend([base.join("o/od"), base.to_path_buf()]);
    let mut entries =
        vec![json!({"path": {"type": "special", "value": {"kind": "minimal"}}, "access": "read"})];
    let mut add = |p: &Path, access: &str| {
        entries.push(
            json!({"path": {"type": "path", "path": p.to_str().unwrap()},
                            "access": access, "missing_path_behavior": "skip"}),
        );
    };
    // An outer entry (the tree or its parent), then entries nested inside it: that is where
    // Landlock alone is not enough (read-only and hidden carve-outs).
    add([&t, base][rng.below(2)], ["read", "write"][rng.below(2)]);
    for _ in 0..1 + rng.below(3) {
        let p = &candidates[rng.below(candidates.len())];
        add(p, ["read", "write", "none"][rng.below(3)]);
    }
    let uri = format!("file://{}", t.display());
    json!({"permissions": {"type": "managed", "network": "restricted",
                           "file_system": {"type": "restricted", "entries": entries}},
           "cwd": uri, "workspaceRoots": [uri]})
}

const PROBE: &str = r#"
import os, sys, json, errno
res = []
for op, p in json.loads(sys.argv[1]):
    try:
        if op == "readfile":
            with open(p, "rb") as f:
                f.read()
        elif op == "readdir":
            os.listdir(p)
        elif op == "write":
            with open(p, "wb") as f:
                f.write(b"x")
        elif op == "mkdir":
            os.mkdir(p)
        elif op == "remove":
            os.unlink(p)
        res.append("ok")
    except OSError as e:
        res.append(errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(res))
"#;

fn errno_name(msg: &str) -> String {
    let n: i32 = msg
        .rsplit("(os error ")
        .next()
        .and_then(|s| s.trim_end_matches(')').parse().ok())
        .unwrap_or(-1);
    match n {
        1 | 13 | 30 => "deny".into(),
        2 => "ENOENT".into(),
        17 => "EEXIST".into(),
        20 => "ENOTDIR".into(),
        21 => "EISDIR".into(),
        39 => "ENOTEMPTY".into(),
        40 => "ELOOP".into(),
        other => format!("errno{other}"),
    }
}

fn fs_class(r: &Result<Value, Value>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e)
            if e["message"]
                .as_str()
                .unwrap_or("")
                .contains("is not permitted for path") =>
        {
            "deny".into()
        }
        Err(e) if e["code"] == -32004 => "ENOENT".into(),
        Err(e) => errno_name(e["message"].as_str().unwrap_or("")),
    }
}

fn proc_class(r: &str) -> String {
    match r {
        // EBUSY: unlinking a carve-out's mountpoint.
        "EACCES" | "EPERM" | "EROFS" | "EBUSY" => "deny".into(),
        "ok" => "ok".into(),
        other => other.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_with_a_real_process_under_the_same_policy() {
    let base = std::env::temp_dir().join(marker("fsparity"));
    std::fs::create_dir_all(&base).unwrap();
    let base = base.canonicalize().unwrap();
    // The hard-link census is off here: it deliberately makes processes stricter than fs calls
    // (names it cannot vouch for, such as those in directories the server cannot list, are
    // read-only for a process, while fs calls never write through a link: they replace the
    // file), so with it on a non-root server's `-wx` directories differ by design. The census
    // has its own tests (tests/hardening_census.rs); this one is about Landlock, DAC and the
    // carve-outs.
    let mut c = Client::stdio(&["--no-protect-hard-links"]).await;
    c.initialize().await;
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut cases = 0;
    let mut compared = 0;
    let mut mismatches = Vec::new();
    let mut attempts = 0;
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    while cases < 24 {
        attempts += 1;
        assert!(attempts < 60, "too many policies the host refused");
        let seed = rng.next() | 1;
        let (nodes, parents) = build_tree(&base, seed);
        let policy = random_policy(&mut rng, &base, &parents);
        // The operations, decided from the tree as it is (symlinks followed).
        let mut ops: Vec<(String, PathBuf)> = Vec::new();
        for n in &nodes {
            match std::fs::metadata(n) {
                Ok(m) if m.is_dir() => ops.push(("readdir".into(), n.clone())),
                Ok(_) => ops.push(("readfile".into(), n.clone())),
                Err(_) => {}
            }
        }
        for (i, p) in parents.iter().enumerate() {
            ops.push(("write".into(), p.join(format!("new{i}"))));
            ops.push(("mkdir".into(), p.join(format!("nd{i}"))));
        }
        for n in &nodes {
            match std::fs::metadata(n) {
                Ok(m) if m.is_file() => ops.push(("write".into(), n.clone())),
                _ => {}
            }
        }
        // Removing an entry path changes how the policy resolves: a process keeps what it
        // was started with, while each fs call resolves the policy afresh (as a new process
        // would). Such removals are not comparable within one probe run.
        let entry_paths: Vec<&str> = policy["permissions"]["file_system"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["path"]["path"].as_str())
            .collect();
        for n in &nodes {
            if std::fs::symlink_metadata(n).is_ok_and(|m| !m.is_dir())
                && !entry_paths.contains(&n.to_str().unwrap())
            {
                ops.push(("remove".into(), n.clone()));
            }
        }
        let list: Vec<Value> = ops
            .iter()
            .map(|(o, p)| json!([o, p.to_str().unwrap()]))
            .collect();
        // The process first.
        let id = format!("p{attempts}");
        let started = c
            .start_with(
                &id,
                &[PY, "-c", PROBE, &Value::Array(list).to_string()],
                json!({"cwd": base.join("t").to_str().unwrap(), "sandbox": policy}),
            )
            .await;
        if let Err(e) = &started {
            // Policies the host cannot enforce for a process (e.g. an entry granting more
            // inside a hidden one) are refused; the fs API must not be tested on them.
            assert_eq!(e["code"], -32021, "{e}");
            continue;
        }
        let ev = c.closed(&id).await;
        let out = String::from_utf8_lossy(&ev.stdout).into_owned();
        let proc_results: Vec<String> = serde_json::from_str(out.trim()).unwrap_or_else(|_| {
            panic!(
                "probe output: {out}\n{}\npolicy {policy}",
                String::from_utf8_lossy(&ev.stderr)
            )
        });
        // The same tree again, then the fs API.
        build_tree(&base, seed);
        for ((op, p), proc_r) in ops.iter().zip(&proc_results) {
            let path = p.to_str().unwrap();
            let params = match op.as_str() {
                "readfile" => ("fs/readFile", json!({"path": path})),
                "readdir" => ("fs/readDirectory", json!({"path": path})),
                "write" => ("fs/writeFile", json!({"path": path, "dataBase64": "eA=="})),
                "mkdir" => (
                    "fs/createDirectory",
                    json!({"path": path, "recursive": false}),
                ),
                _ => (
                    "fs/remove",
                    json!({"path": path, "recursive": false, "force": false}),
                ),
            };
            let mut req = params.1;
            req["sandbox"] = policy.clone();
            let fs_r = fs_class(&c.call(params.0, req).await);
            let pr = proc_class(proc_r);
            compared += 1;
            *seen.entry(format!("{op}:{pr}")).or_insert(0) += 1;
            // A hidden subtree is absent for a process and denied for the fs API.
            let same = fs_r == pr || (pr == "ENOENT" && fs_r == "deny");
            if !same {
                mismatches.push(format!("{op} {path}: process {proc_r}, fs API {fs_r}"));
            }
        }
        cases += 1;
        assert!(
            mismatches.is_empty(),
            "parity broken under policy {policy}:\n{}",
            mismatches.join("\n")
        );
    }
    eprintln!("parity: {compared} decisions in {cases} cases ({attempts} policies): {seen:?}");
    assert!(compared > 300, "only {compared} decisions compared");
    // The generated cases must exercise both outcomes of every operation.
    for op in ["readfile", "readdir", "write", "mkdir", "remove"] {
        for class in ["ok", "deny"] {
            assert!(
                seen.contains_key(&format!("{op}:{class}")),
                "no case where {op} was {class}: {seen:?}"
            );
        }
    }
    reset_modes(&base);
    let _ = std::fs::remove_dir_all(&base);
}

/// The workers are confined by the kernel, not only by the userspace guard: an operation
/// that ignores the guard still cannot write outside the policy (Landlock says EACCES).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_confined_by_landlock_itself() {
    use stockade::sandbox::policy::{Context, from_sandbox_policy};
    let s = scratch("fskernel");
    let policy = from_sandbox_policy(
        &json!({"type": "workspace-write", "exclude_slash_tmp": true,
                "exclude_tmpdir_env_var": true}),
        &Context {
            cwd: &s.ws(),
            tmpdir: None,
        },
    )
    .unwrap();
    let abi = stockade::sandbox::probe::landlock_abi();
    assert!(abi >= 1, "these tests need Landlock");
    let workers = stockade::fs::workers::FsWorkers::new(2);
    let (inside, outside) = (s.ws().join("k"), s.outside().join("k"));
    let (i2, o2) = (inside.clone(), outside.clone());
    let (wrote_inside, wrote_outside) = workers
        .run(&policy, abi, move |_guard| {
            (std::fs::write(&i2, "x"), std::fs::write(&o2, "x"))
        })
        .await
        .unwrap();
    wrote_inside.expect("the workspace is writable");
    assert_eq!(
        wrote_outside
            .expect_err("outside must be refused")
            .raw_os_error(),
        Some(libc::EACCES)
    );
    assert!(inside.exists() && !outside.exists());
    // The calling thread itself is not confined.
    std::fs::write(&outside, "x").unwrap();
}

/// A write that fails part-way leaves the old file complete (PROTOCOL.md 8 via the issue:
/// "a failed write does not leave a truncated file where a complete one was").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_keeps_the_old_file() {
    let s = scratch("fsatomic");
    // The server runs with a 1 MiB file size limit (and SIGXFSZ ignored, so writes beyond it
    // fail with EFBIG instead of killing it).
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut c = Client::stdio_cmd(cmd).await;
    c.initialize().await;
    let pol = ws_write(&s);
    let file = s.ws().join("doc.txt");
    let old = b"the complete old content\n".repeat(100);
    std::fs::write(&file, &old).unwrap();
    let big = vec![b'n'; 3 << 20];
    let (code, msg) = err(c
        .call(
            "fs/writeFile",
            with(
                &pol,
                json!({"path": file.to_str().unwrap(), "dataBase64": b64(&big)}),
            ),
        )
        .await);
    assert_eq!(
        (code, msg.as_str()),
        (-32603, "File too large (os error 27)")
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        old,
        "the old file was damaged"
    );
    let names: Vec<_> = std::fs::read_dir(s.ws())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["doc.txt"], "a temporary file was left behind");
    // A write within the limit succeeds.
    c.ok(
        "fs/writeFile",
        with(
            &pol,
            json!({"path": file.to_str().unwrap(), "dataBase64": b64(b"new")}),
        ),
    )
    .await;
    assert_eq!(std::fs::read(&file).unwrap(), b"new");
}

/// Fail closed: a host whose Landlock cannot enforce the policy refuses fs calls (-32021),
/// unless degradation is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_calls_fail_closed_without_landlock() {
    let s = scratch("fsabi");
    std::fs::write(s.ws().join("f"), "f").unwrap();
    let path = s.ws().join("f").to_str().unwrap().to_string();
    let mut c = Client::stdio(&["--landlock-abi", "0"]).await;
    c.initialize().await;
    let (code, msg) = err(c
        .call("fs/readFile", with(&ws_write(&s), json!({"path": path})))
        .await);
    assert_eq!(code, -32021, "{msg}");
    assert!(msg.contains("Landlock"), "{msg}");
    let mut c = Client::stdio(&["--landlock-abi", "2"]).await;
    c.initialize().await;
    let (code, msg) = err(c
        .call("fs/readFile", with(&ws_write(&s), json!({"path": path})))
        .await);
    assert_eq!(code, -32021, "{msg}");
    assert!(msg.contains("ABI 3"), "{msg}");
    // Allowed degradation: the guard alone decides, and still refuses what the policy forbids.
    let mut c = Client::stdio(&["--landlock-abi", "0", "--allow-degraded"]).await;
    c.initialize().await;
    c.ok("fs/readFile", with(&ws_write(&s), json!({"path": path})))
        .await;
    let outside = s.outside().join("x").to_str().unwrap().to_string();
    assert_eq!(
        err(c
            .call(
                "fs/writeFile",
                with(&ws_write(&s), json!({"path": outside, "dataBase64": ""}))
            )
            .await),
        denied("write", &outside)
    );
}

// Both transports carry fs results the same way, including a result built as raw JSON text
// (`fs/readFile`) and the `jsonrpc` field inserted into it when the client sent one.
both_transports!(fs_over_both_transports, |t| async move {
    let s = scratch("fsws");
    let c = Client::new(t, &[]).await;
    let pol = ws_write(&s);
    let path = s.ws().join("f").to_str().unwrap().to_string();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    c.ok(
        "fs/writeFile",
        with(&pol, json!({"path": path, "dataBase64": b64(&data)})),
    )
    .await;
    let r = c.ok("fs/readFile", with(&pol, json!({"path": path}))).await;
    assert_eq!(unb64(r["dataBase64"].as_str().unwrap()), data);
    // A connection whose first message carries `jsonrpc` gets it on every answer.
    let c = Client::uninitialized(t, &[]).await;
    c.send_raw(r#"{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"clientName":"t"}}"#);
    c.response(&json!("i")).await;
    c.send_raw(r#"{"jsonrpc":"2.0","method":"initialized"}"#);
    c.send_raw(
        &json!({"jsonrpc": "2.0", "id": "rf", "method": "fs/readFile",
                "params": with(&pol, json!({"path": path}))})
        .to_string(),
    );
    let r = c.response(&json!("rf")).await;
    assert_eq!(r["jsonrpc"], "2.0", "{}", &r.to_string()[..80]);
    assert_eq!(unb64(r["result"]["dataBase64"].as_str().unwrap()), data);
});

/// Policy params of fs calls: both shapes at once, a relative `sandboxCwd`, and the
/// `policyContext` current Codex clients put inside `sandbox`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_policy_params() {
    let s = scratch("fspol");
    let c = client().await;
    let path = s.ws().join("f").to_str().unwrap().to_string();
    std::fs::write(&path, "f").unwrap();
    let both = json!({"path": path, "sandboxPolicy": {"type": "read-only"},
                      "sandbox": {"permissions": {"type": "disabled"}}});
    let (code, msg) = err(c.call("fs/readFile", both).await);
    assert_eq!(code, -32602, "{msg}");
    assert!(msg.contains("not both"), "{msg}");
    let (code, msg) = err(c
        .call(
            "fs/readFile",
            json!({"path": path, "sandboxPolicy": {"type": "read-only"}, "sandboxCwd": "rel"}),
        )
        .await);
    assert_eq!(code, -32602, "{msg}");
    assert!(msg.contains("sandboxCwd"), "{msg}");
    // project_roots from policyContext: the workspace is writable, its sibling is not.
    let uri = format!("file://{}", s.ws().display());
    let managed = |p: &str| {
        json!({"path": p, "dataBase64": "eA==", "sandbox": {
            "permissions": {"type": "managed", "network": "restricted", "file_system": {
                "type": "restricted", "entries": [
                    {"path": {"type": "special", "value": {"kind": "minimal"}}, "access": "read"},
                    {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"}]}},
            "policyContext": {"cwd": uri, "workspaceRoots": [uri]}, "userHomeDir": "file:///root"}})
    };
    c.ok("fs/writeFile", managed(&path)).await;
    let outside = s.outside().join("x").to_str().unwrap().to_string();
    assert_eq!(
        err(c.call("fs/writeFile", managed(&outside)).await),
        denied("write", &outside)
    );
}

/// A `none` and a `write` entry for the same path, with no entry above it: `none` wins
/// (PROTOCOL.md 6.1), for a process and for the fs API alike (the losing `write` must not
/// become a Landlock rule, and there is no outer entry that would make it a carve-out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tie_between_none_and_write_denies() {
    let s = scratch("fstie");
    let c = client().await;
    let ws = s.ws().to_str().unwrap().to_string();
    std::fs::write(s.ws().join("f"), "f").unwrap();
    let uri = format!("file://{ws}");
    let sandbox = json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "minimal"}}, "access": "read"},
                {"path": {"type": "path", "path": ws}, "access": "write"},
                {"path": {"type": "path", "path": ws}, "access": "none"}]}},
        "cwd": uri, "workspaceRoots": [uri]});
    let f = format!("{ws}/f");
    let ev = {
        c.start_with(
            "tie",
            &[
                "sh",
                "-c",
                &format!("cat {f}; echo x > {ws}/new; echo rc=$?"),
            ],
            json!({"cwd": "/", "sandbox": sandbox}),
        )
        .await
        .unwrap();
        c.closed("tie").await
    };
    let out = String::from_utf8_lossy(&ev.stdout);
    // `cat` printed nothing and the redirection failed.
    assert!(
        !out.starts_with('f'),
        "the process read a `none` path: {out}"
    );
    assert!(!out.contains("rc=0"), "{out}");
    assert!(
        !s.ws().join("new").exists(),
        "the process wrote into a `none` path"
    );
    for (method, params, need) in [
        ("fs/readFile", json!({"path": f}), "read"),
        (
            "fs/writeFile",
            json!({"path": format!("{ws}/new2"), "dataBase64": "eA=="}),
            "write",
        ),
    ] {
        let mut p = params.clone();
        p["sandbox"] = sandbox.clone();
        let shown = params["path"].as_str().unwrap().to_string();
        assert_eq!(
            err(c.call(method, p).await),
            denied(need, &shown),
            "{method}"
        );
    }
}

/// `fs/copy` onto a destination that is a hard link to a file outside the writable roots
/// replaces the destination instead of writing through it: the outside file keeps its
/// content. (`fs/writeFile` always replaces.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_never_reach_an_outside_file_through_a_hard_link() {
    let s = scratch("fs-hardlink");
    let c = client().await;
    let ws = s.ws();
    std::fs::hard_link(s.outside().join("secret"), ws.join("linked")).unwrap();
    std::fs::hard_link(s.outside().join("secret"), ws.join("linked2")).unwrap();
    std::fs::write(ws.join("src"), "new content\n").unwrap();
    let pol = ws_write(&s);
    c.call(
        "fs/copy",
        with(
            &pol,
            json!({"sourcePath": rel(&s, "ws/src"), "destinationPath": rel(&s, "ws/linked"), "recursive": false}),
        ),
    )
    .await
    .unwrap();
    c.call(
        "fs/writeFile",
        with(
            &pol,
            json!({"path": rel(&s, "ws/linked2"), "dataBase64": "eA=="}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(s.outside().join("secret")).unwrap(),
        "outside\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("linked")).unwrap(),
        "new content\n"
    );
    assert_eq!(std::fs::read_to_string(ws.join("linked2")).unwrap(), "x");
}
