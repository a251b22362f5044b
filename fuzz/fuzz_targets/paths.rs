//! Wire paths and file URIs: no panic; a parsed path is absolute and survives a URI roundtrip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stockade::paths::{parse_wire_path, to_file_uri};

fuzz_target!(|s: String| {
    if let Ok((p, _)) = parse_wire_path(&s) {
        assert!(p.is_absolute());
        let uri = to_file_uri(&p);
        assert_eq!(parse_wire_path(&uri).unwrap().0, p);
    }
});
