//! State files: round trip, and every kind of bad file gets a clear error.

mod common;

use common::*;
use ltm_engine::state::MAX_TOKENS;
use ltm_engine::state_file::{load_state, save_state, HEADER_LEN};
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
    // What the free-space check before a run asks for is what a save writes.
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        ltm_engine::state_file::file_bytes(&state)
    );
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

/// `file` with `bytes` written at `at` and the checksum made right again, so only the
/// field's own check stands between it and a load.
fn with_field(file: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    out[at..at + bytes.len()].copy_from_slice(bytes);
    let crc_at = HEADER_LEN - 4;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..crc_at]);
    crc.update(&out[HEADER_LEN..]);
    out[crc_at..HEADER_LEN].copy_from_slice(&crc.finalize().to_le_bytes());
    out
}

// Offsets of the header fields (see `state_file`).
const DIMS: usize = 20;
const TOKENS: usize = 36;
const SOURCE_TOKENS: usize = 44;
const SOURCE_BYTES: usize = 52;
const SOURCE_CRC: usize = 60;

#[test]
fn every_header_byte_flipped_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, path) = saved(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let mut refused = 0;
    for at in 0..HEADER_LEN {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[at] ^= mask;
            std::fs::write(&path, &b).unwrap();
            match load_state(&path, &config) {
                Err(Error::StateFile { .. }) => refused += 1,
                Err(other) => panic!("byte {at} ^ {mask:#x}: unexpected error kind {other}"),
                Ok(_) => panic!("byte {at} ^ {mask:#x}: a changed header was accepted"),
            }
        }
    }
    assert_eq!(refused, HEADER_LEN * 3);
}

#[test]
fn each_header_field_is_checked_even_under_a_valid_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, path) = saved(dir.path());
    let good = std::fs::read(&path).unwrap();
    let le32 = |xs: [u32; 4]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // B = 3, H = 2, K = 16, V = 8 saved; the same product in other dimensions.
        ("H = 1", with_field(&good, DIMS, &le32([3, 1, 32, 8]))),
        ("B = 0", with_field(&good, DIMS, &le32([0, 2, 16, 8]))),
        (
            "tokens seen",
            with_field(&good, TOKENS, &u64::MAX.to_le_bytes()),
        ),
        (
            "more than the",
            with_field(&good, SOURCE_TOKENS, &(123_456_789_001u64).to_le_bytes()),
        ),
        (
            "of no bytes",
            with_field(
                &with_field(&good, SOURCE_TOKENS, &5u64.to_le_bytes()),
                SOURCE_BYTES,
                &0u64.to_le_bytes(),
            ),
        ),
        (
            "of no bytes",
            with_field(&good, SOURCE_CRC, &7u32.to_le_bytes()),
        ),
    ];
    for (needle, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let p = problem(load_state(&path, &config).unwrap_err());
        assert!(p.contains(needle), "{needle}: {p}");
    }
}

#[test]
fn a_count_at_the_limit_fails_the_next_write_instead_of_wrapping() {
    let config = MemoryConfig::new(1, 4, 4);
    let mut state = ltm_engine::State::zeros(&config, 1);
    state.set_tokens_seen(MAX_TOKENS);
    let x = vec![0.5f32; 4];
    let one = [0.5f32];
    let zero = [0.0f32];
    let inputs = ltm_engine::ForwardInputs {
        batch: 1,
        tokens: 1,
        q: (&x).into(),
        k: (&x).into(),
        v: (&x).into(),
        beta: (&one[..]).into(),
        g: (&zero[..]).into(),
    };
    let backend = ltm_engine::CpuBackend::new();
    let e = ltm_engine::Backend::forward(&backend, &config, &inputs, &mut state).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    assert_eq!(state.tokens_seen(), MAX_TOKENS);
}

#[test]
fn the_source_round_trips_and_old_versions_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (config, mut state, path) = saved(dir.path());
    let source = ltm_engine::Source {
        tokens: 1000,
        bytes: 5000,
        crc32: 0xdead_beef,
    };
    state.set_source(source);
    save_state(&path, &config, &state).unwrap();
    assert_eq!(load_state(&path, &config).unwrap().source(), source);
    let bytes = std::fs::read(&path).unwrap();
    let old = with_field(&bytes, 8, &1u32.to_le_bytes());
    std::fs::write(&path, old).unwrap();
    let p = problem(load_state(&path, &config).unwrap_err());
    assert!(p.contains("version 1") && p.contains("older"), "{p}");
}

#[test]
fn devices_directories_and_fifos_are_not_read_as_state_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = MemoryConfig::new(1, 4, 4);
    for path in [std::path::Path::new("/dev/zero"), dir.path()] {
        let e = load_state(path, &config).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}

#[test]
fn temporary_files_of_dead_processes_are_removed_on_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state, path) = saved(dir.path());
    // A process that has exited: its pid names a temporary file nobody will finish.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let mut alive = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let stale = dir.path().join(format!(".mem.ltmstate.tmp.{}", dead.id()));
    let busy = dir.path().join(format!(".mem.ltmstate.tmp.{}", alive.id()));
    let other = dir.path().join(format!(".other.tmp.{}", dead.id()));
    for f in [&stale, &busy, &other] {
        std::fs::write(f, b"half a state").unwrap();
    }
    save_state(&path, &config, &state).unwrap();
    let _ = alive.kill();
    let _ = alive.wait();
    assert!(
        !stale.exists(),
        "the dead process's temporary file is still there"
    );
    assert!(busy.exists(), "a live process's temporary file was removed");
    assert!(other.exists(), "another file's temporary file was removed");
    assert_eq!(load_state(&path, &config).unwrap(), state);
}
