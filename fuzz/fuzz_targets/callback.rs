//! `cargo fuzz run callback`: see `nanofaas_control_plane::fuzzing::callback` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nanofaas_control_plane::fuzzing::callback(data);
});
