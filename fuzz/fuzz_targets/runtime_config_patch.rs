//! `cargo fuzz run runtime_config_patch`: see `nanofaas_control_plane::fuzzing::runtime_config_patch` and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nanofaas_control_plane::fuzzing::runtime_config_patch(data);
});
