//! `cargo fuzz run config`: see `nanofaas_control_plane::fuzzing::config` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nanofaas_control_plane::fuzzing::config(data);
});
