//! The stdio frame decoder: arbitrary bytes split at arbitrary points must never panic, never
//! emit a frame longer than the limit, and must be independent of how the input was split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stockade::transport::{Frame, lines::LineDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let max = 1 + (cut as usize % 64);
    let run = |pieces: &[&[u8]]| {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        for p in pieces {
            d.push(p, &mut out);
        }
        d.finish(&mut out);
        out
    };
    let whole = run(&[rest]);
    let split_at = (cut as usize * 7) % (rest.len() + 1);
    let split = run(&[&rest[..split_at], &rest[split_at..]]);
    assert_eq!(whole, split);
    for f in &whole {
        if let Frame::Message(m) = f {
            assert!(m.len() <= max);
            assert!(!m.contains(&b'\n'));
        }
    }
});
