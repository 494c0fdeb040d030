//! `cargo fuzz run duration`: see `nanofaas_control_plane::fuzzing::duration` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nanofaas_control_plane::fuzzing::duration(data);
});
