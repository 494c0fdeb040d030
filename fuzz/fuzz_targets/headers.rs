//! `cargo fuzz run headers`: see `nanofaas_control_plane::fuzzing::headers` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nanofaas_control_plane::fuzzing::headers(data);
});
