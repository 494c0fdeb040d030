//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`, seeds and regressions) through the same
//! entry points the `cargo fuzz` targets call, so CI checks every saved input in seconds without
//! nightly Rust or cargo-fuzz. A panic is a finding; see `docs/fuzzing.md`.

use std::fs;
use std::path::Path;

use nanofaas_control_plane::fuzzing;

/// What a `fuzz_target!` calls with each input.
type Entry = fn(&[u8]);

/// Every fuzz target: its corpus directory name and the function its `fuzz_target!` calls.
const TARGETS: [(&str, Entry); 7] = [
    ("function_spec", fuzzing::function_spec),
    ("invocation_request", fuzzing::invocation_request),
    ("callback", fuzzing::callback),
    ("headers", fuzzing::headers),
    ("duration", fuzzing::duration),
    ("config", fuzzing::config),
    ("runtime_config_patch", fuzzing::runtime_config_patch),
];

#[test]
fn every_corpus_input_is_handled_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failed = Vec::new();
    for (target, run) in TARGETS {
        let dir = root.join(target);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable corpus entry").path())
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "{target}: the corpus is empty");
        for path in entries {
            let data = fs::read(&path).expect("a readable corpus file");
            // Each panic's message is printed by the hook; the list names every input that failed.
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that panicked: {failed:#?}");
}

#[test]
fn every_fuzz_target_has_a_corpus_and_an_entry_here() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = fs::read_dir(&dir)
        .expect("fuzz/fuzz_targets")
        .map(|e| {
            let path = e.expect("an entry").path();
            path.file_stem()
                .expect("a file")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "fuzz_targets/*.rs and TARGETS differ");
}
