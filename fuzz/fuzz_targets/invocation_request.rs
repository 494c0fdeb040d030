//! `cargo fuzz run invocation_request`: see `nanofaas_control_plane::fuzzing::invocation_request` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nanofaas_control_plane::fuzzing::invocation_request(data);
});
