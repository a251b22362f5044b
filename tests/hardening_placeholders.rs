//! Missing protected names (issue 14, item 3): `.agents` and `.codex` at the top of every
//! writable root, and 6.3 entries without `missing_path_behavior: "skip"`, cannot be created
//! by a confined process; stockade holds a placeholder there and removes it again when no
//! namespace relies on it. Attacks a confined process really attempts; `.ci/run` runs this
//! file as root and again as uid 65534.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::probe::*;
use common::*;
use serde_json::{Value, json};

/// Creating anything inside a read-only placeholder fails (EROFS, or EACCES where its mode
/// is checked first).
fn refused(r: &BTreeMap<String, String>, name: &str) {
    let got = r.get(name).map(String::as_str);
    assert!(
        matches!(got, Some("EROFS") | Some("EACCES")),
        "{name}: expected a refusal, got {got:?} ({r:?})"
    );
}

/// Polls (bounded) until `path` no longer exists.
async fn gone(path: &Path) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while std::fs::symlink_metadata(path).is_ok() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Ends a stdio server the way a client does (stdin EOF) and waits until it has gone.
async fn shut_down(c: &Client) {
    c.close();
    c.wait_disconnected().await;
}

/// The attempts on `.agents` and `.codex` in the cwd.
const ATTACK: &str = r#"
t("mkdir_codex", lambda: os.mkdir(".codex"))
t("config", lambda: open(".codex/config.toml", "w"))
t("mkdir_agents", lambda: os.mkdir(".agents"))
t("skills", lambda: os.makedirs(".agents/skills/x"))
t("rmdir_codex", lambda: os.rmdir(".codex"))
t("rename_codex", lambda: os.rename(".codex", "old"))
t("git_init", lambda: os.makedirs(".git/hooks", exist_ok=True))
"#;

fn attack_refused(r: &BTreeMap<String, String>) {
    expect(r, "mkdir_codex", "EEXIST");
    refused(r, "config");
    expect(r, "mkdir_agents", "EEXIST");
    refused(r, "skills");
    expect(r, "rmdir_codex", "EBUSY");
    expect(r, "rename_codex", "EBUSY");
    // `.git` is only protected when it exists: `git init` works in a fresh workspace.
    expect(r, "git_init", "OK");
}

/// 6.2 `workspace-write`: a fresh workspace has no `.codex` or `.agents`; a process must not
/// be able to plant them (configuration and skills the user's own Codex would load). After
/// the server is done, nothing of the placeholders is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_codex_and_agents_cannot_be_planted_sandbox_policy() {
    let s = Scratch::new("ph-62");
    let ws = s.ws();
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(&c, "p", &ws, &json!({"type": "workspace-write"}), ATTACK).await;
    attack_refused(&r);
    assert!(!ws.join(".codex/config.toml").exists());
    assert!(ws.join(".git/hooks").is_dir());
    shut_down(&c).await;
    assert!(gone(&ws.join(".codex")).await, "placeholder left behind");
    assert!(gone(&ws.join(".agents")).await, "placeholder left behind");
}

/// The same through the 6.3 profile the Codex CLI sends (`.agents`/`.codex` entries with
/// `missing_path_behavior: "skip"`): still protected, and the filesystem API refuses them
/// too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_codex_and_agents_cannot_be_planted_codex_profile() {
    let s = Scratch::new("ph-63");
    let ws = s.ws();
    let text = include_str!("fixtures/codex-0.169-start-workspace-write.json");
    let fixture: Value = serde_json::from_str(&text.replace("@WS@", ws.to_str().unwrap())).unwrap();
    let profile = fixture["sandbox"].clone();
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(&c, "p", &ws, &profile, ATTACK).await;
    attack_refused(&r);
    // The filesystem API under the same profile: creating them is refused as well.
    for path in [ws.join(".codex/config.toml"), ws.join(".agents")] {
        let method = if path.ends_with("config.toml") {
            json!({"path": path.to_str().unwrap(), "dataBase64": b64(b"x"), "sandbox": profile})
        } else {
            json!({"path": path.to_str().unwrap(), "sandbox": profile})
        };
        let name = if path.ends_with("config.toml") {
            "fs/writeFile"
        } else {
            "fs/createDirectory"
        };
        let e = c
            .call(name, method)
            .await
            .expect_err("creating a protected name through the fs API");
        assert_eq!(e["code"], -32600, "{e}");
    }
    shut_down(&c).await;
    assert!(gone(&ws.join(".codex")).await, "placeholder left behind");
}

/// 6.3 entries for missing paths inside a writable root, without `skip`: the request used to
/// fail (-32021); now the process runs and cannot create them (a `none` entry stays hidden,
/// a `read` entry read-only; a missing parent is held itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_profile_entries_are_held_not_refused() {
    let s = Scratch::new("ph-entries");
    let ws = s.ws();
    let entry = |p: &Path, access: &str| json!({"path": {"type": "path", "path": p.to_str().unwrap()}, "access": access});
    let uri = format!("file://{}", ws.display());
    let profile = json!({"permissions": {"type": "managed", "network": "restricted",
        "file_system": {"type": "restricted", "entries": [
            json!({"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}),
            entry(&ws, "write"),
            entry(&ws.join("secrets"), "none"),
            entry(&ws.join("a/b"), "read"),
        ]}}, "cwd": uri, "workspaceRoots": [uri]});
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "p",
        &ws,
        &profile,
        r#"
t("mkdir_secrets", lambda: os.mkdir("secrets"))
t("plant_secret", lambda: open("secrets/key", "w"))
t("list_secrets", lambda: os.listdir("secrets"))
t("rmdir_secrets", lambda: os.rmdir("secrets"))
t("mkdir_a", lambda: os.mkdir("a"))
t("mkdir_b", lambda: os.makedirs("a/b"))
t("rename_a", lambda: os.rename("a", "z"))
t("other", lambda: open("other", "w"))
"#,
    )
    .await;
    expect(&r, "mkdir_secrets", "EEXIST");
    expect(&r, "plant_secret", "EACCES");
    expect(&r, "list_secrets", "EACCES");
    expect(&r, "rmdir_secrets", "EBUSY");
    expect(&r, "mkdir_a", "EEXIST");
    refused(&r, "mkdir_b");
    expect(&r, "rename_a", "EBUSY");
    expect(&r, "other", "OK");
    shut_down(&c).await;
    assert!(gone(&ws.join("secrets")).await, "placeholder left behind");
    assert!(gone(&ws.join("a")).await, "placeholder left behind");
}

/// Two servers rely on the same placeholder: the first one ending must not remove it while
/// the second's process still runs (it would then be free to create the name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_outlives_one_of_two_servers() {
    let s = Scratch::new("ph-two");
    let ws = s.ws();
    let policy = json!({"type": "workspace-write"});
    let first = Client::new(Transport::Stdio, &[]).await;
    let second = Client::new(Transport::Stdio, &[]).await;
    let r = probe(&first, "p", &ws, &policy, ATTACK).await;
    attack_refused(&r);
    // The second server's process waits for a line, then attacks.
    let script = format!("{PRELUDE}\nprint('ready', flush=True)\nsys.stdin.readline()\n{ATTACK}");
    second
        .start_with(
            "late",
            &[PY, "-c", &script],
            json!({"cwd": ws.to_str().unwrap(), "sandboxPolicy": policy, "pipeStdin": true}),
        )
        .await
        .unwrap();
    second.wait_output("late", "ready").await;
    shut_down(&first).await;
    second
        .ok(
            "process/write",
            json!({"processId": "late", "chunk": b64(b"go\n")}),
        )
        .await;
    let ev = second.closed("late").await;
    attack_refused(&probe_results(&ev.stdout));
    assert!(!ws.join(".codex/config.toml").exists());
    shut_down(&second).await;
    assert!(gone(&ws.join(".codex")).await, "placeholder left behind");
}

/// A placeholder a server left behind when it died (an empty mode-0444 directory) is adopted
/// and removed when its last user is done; a real `.agents` with content is never removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_placeholder_is_adopted_and_removed() {
    let s = Scratch::new("ph-left");
    let ws = s.ws();
    std::fs::create_dir(ws.join(".codex")).unwrap();
    std::fs::set_permissions(ws.join(".codex"), std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::create_dir_all(ws.join(".agents/skills")).unwrap();
    let c = Client::new(Transport::Stdio, &[]).await;
    let r = probe(
        &c,
        "p",
        &ws,
        &json!({"type": "workspace-write"}),
        r#"
t("config", lambda: open(".codex/config.toml", "w"))
t("skill", lambda: open(".agents/skills/x", "w"))
"#,
    )
    .await;
    refused(&r, "config");
    expect(&r, "skill", "EROFS");
    shut_down(&c).await;
    assert!(gone(&ws.join(".codex")).await, "leftover placeholder kept");
    assert!(
        ws.join(".agents/skills").is_dir(),
        "a real directory was removed"
    );
}
