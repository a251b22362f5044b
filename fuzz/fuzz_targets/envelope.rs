//! Envelope decoding and per-method params decoding never panic on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stockade::protocol::envelope::parse_params;
use stockade::protocol::envelope::{Incoming, decode};
use stockade::protocol::fs::{
    CopyParams, CreateDirectoryParams, PathParams, RemoveParams, WriteFileParams,
};
use stockade::protocol::process::{
    ReadParams, ResizeParams, SignalParams, StartParams, WriteParams,
};

fuzz_target!(|data: &[u8]| {
    let Ok(d) = decode(data) else { return };
    if let Incoming::Request { params, .. } = d.message {
        let _ = parse_params::<StartParams>(params.clone());
        let _ = parse_params::<ReadParams>(params.clone());
        let _ = parse_params::<WriteParams>(params.clone());
        let _ = parse_params::<SignalParams>(params.clone());
        let _ = parse_params::<ResizeParams>(params.clone());
        let _ = parse_params::<PathParams>(params.clone());
        let _ = parse_params::<WriteFileParams>(params.clone());
        let _ = parse_params::<CreateDirectoryParams>(params.clone());
        let _ = parse_params::<RemoveParams>(params.clone());
        let _ = parse_params::<CopyParams>(params);
    }
});
