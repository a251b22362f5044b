//! Env patterns: no panic, `*` alone matches everything, a pattern without wildcards matches
//! exactly its own name (case-insensitively).
#![no_main]
use libfuzzer_sys::fuzz_target;
use stockade::env::matches;

fuzz_target!(|data: (String, String)| {
    let (pattern, name) = data;
    let _ = matches(&pattern, &name);
    assert!(matches("*", &name));
    if !pattern.contains(['*', '?']) {
        assert_eq!(
            matches(&pattern, &name),
            pattern.to_lowercase() == name.to_lowercase()
        );
    }
});
