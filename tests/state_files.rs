//! State files: round trip, and every kind of bad file gets a clear error.

mod common;

use common::*;
use ltm_engine::state_file::{load_state, save_state};
use ltm_engine::{Error, MemoryConfig};

fn saved(dir: &std::path::Path) -> (MemoryConfig, ltm_engine::State, std::path::PathBuf) {
    let config = MemoryConfig::new(2, 16, 8);
    let mut rng = rng("state-file");
    let mut state = random_state(&mut rng, &config, 3);
    state.set_tokens_seen(123_456_789_000);
    let path = dir.join("mem.ltmstate");
    save_state(&path, &config, &state).unwrap();
    (config, state, path)
}

fn problem(e: Error) -> String {
    match e {
        Error::StateFile { problem, .. } => problem,
        other => panic!("expected a state file error, got {other}"),
    }
}

#[test]
fn round_trip_keeps_values_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state, path) = saved(dir.path());
    let loaded = load_state(&path, &config).unwrap();
    assert_eq!(loaded, state);
    assert_eq!(loaded.tokens_seen(), 123_456_789_000);
    // Nothing but the file itself is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn truncated_corrupted_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, path) = saved(dir.path());
    let bytes = std::fs::read(&path).unwrap();

    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    assert!(problem(load_state(&path, &config).unwrap_err()).contains("truncated"));
    std::fs::write(&path, &bytes[..20]).unwrap();
    assert!(problem(load_state(&path, &config).unwrap_err()).contains("truncated"));

    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    assert!(problem(load_state(&path, &config).unwrap_err()).contains("checksum"));

    let mut version = bytes.clone();
    version[8] = 99;
    std::fs::write(&path, &version).unwrap();
    assert!(problem(load_state(&path, &config).unwrap_err()).contains("version 99"));

    std::fs::write(&path, b"hello world, not a state").unwrap();
    assert!(problem(load_state(&path, &config).unwrap_err()).contains("magic"));

    std::fs::write(&path, &bytes).unwrap();
    let other = MemoryConfig::new(2, 16, 8).with_scale(0.5);
    assert!(problem(load_state(&path, &other).unwrap_err()).contains("another configuration"));

    let err = load_state(dir.path().join("absent"), &config).unwrap_err();
    assert!(err.to_string().contains("absent"));
}

#[test]
fn a_failed_save_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state, path) = saved(dir.path());
    let before = std::fs::read(&path).unwrap();
    // A state of another shape cannot be saved under this configuration.
    let wrong = random_state(&mut rng("wrong"), &MemoryConfig::new(1, 4, 4), 1);
    assert!(save_state(&path, &config, &wrong).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // A save into a directory that does not exist fails without touching anything.
    assert!(save_state(dir.path().join("no/such/dir/s"), &config, &state).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
