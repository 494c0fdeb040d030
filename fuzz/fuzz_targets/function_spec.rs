//! `cargo fuzz run function_spec`: see `nanofaas_control_plane::fuzzing::function_spec` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nanofaas_control_plane::fuzzing::function_spec(data);
});
