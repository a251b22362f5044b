//! Sandbox policy and env policy conversion never panic, and the longest-prefix decision is
//! total for every path.
#![no_main]
use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stockade::env::EnvPolicy;
use stockade::sandbox::policy::from_request;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let env = BTreeMap::from([("TMPDIR".to_string(), "/tmp/x".to_string())]);
    for (a, b) in [(Some(&v), None), (None, Some(&v))] {
        if let Ok(Some(p)) = from_request(a, b, Path::new("/work"), &env) {
            for probe in ["/", "/work", "/work/.git/config", "/tmp/x/y", "/etc/passwd"] {
                let _ = p.access_at(Path::new(probe));
            }
        }
    }
    let _ = EnvPolicy::from_json(&v);
});
