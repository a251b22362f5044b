//! The TOML server config and its sandbox section never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stockade::config::ConfigFile;
use stockade::sandbox::prepare::SandboxSettings;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = ConfigFile::parse(text, "fuzz") {
        let mut s = SandboxSettings::default();
        let _ = c.sandbox.apply(&mut s);
    }
});
