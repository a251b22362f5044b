//! The fs API's path walker resolves like the kernel: for any path built from names, `..`,
//! `.` and links in a fixed tree, the real path it finds equals `std::fs::canonicalize`
//! (which asks the kernel), and it never panics.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stockade::fs::guard::{Guard, Need};
use stockade::fs::walk::locate;

fn tree() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("stockade-fuzz-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/f"), "f").unwrap();
        let link =
            |target: &str, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
        link("a/b", "l1");
        link("../..", "a/b/up");
        link("/tmp", "a/abs");
        link("loop2", "loop1");
        link("loop1", "loop2");
        link("c/../../f", "a/b/rel");
        link("missing", "a/dangling");
        root.canonicalize().unwrap()
    })
}

const NAMES: [&str; 14] = [
    "a", "b", "c", "f", "l1", "up", "abs", "loop1", "rel", "dangling", "..", ".", "x", "",
];

fuzz_target!(|data: &[u8]| {
    let root = tree();
    let mut path = root.clone();
    for b in data.iter().take(24) {
        path.push(NAMES[*b as usize % NAMES.len()]);
    }
    let guard = Guard::unrestricted();
    let walked = locate(&path, true, &guard, Need::Read);
    match (walked, std::fs::canonicalize(&path)) {
        (Ok(loc), Ok(real)) => {
            assert!(
                loc.leaf.is_some(),
                "{path:?} exists but the walk found nothing"
            );
            assert_eq!(loc.real(), real, "{path:?}");
        }
        (Ok(loc), Err(_)) => assert!(loc.leaf.is_none() || loc.real().is_dir(), "{path:?}"),
        (Err(_), Ok(real)) => panic!("{path:?} resolves to {real:?} but the walk failed"),
        (Err(_), Err(_)) => {}
    }
});
