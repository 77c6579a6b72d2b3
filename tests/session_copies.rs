//! A memory session keeps its state where the backend computes: streaming windows
//! through it makes no whole-state copy to the host; only snapshots and hand-backs do.
//! (Its own test binary: the counter is process-wide.)

use ltm_engine::backend::session::state_copies;
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::{Backend, CpuBackend, ForwardInputs, MemoryConfig, State};

#[test]
fn streaming_copies_no_state_and_snapshots_count() {
    let config = MemoryConfig::new(2, 16, 16);
    let backend = CpuBackend::new();
    let mut session = backend.open(&config, State::zeros(&config, 1)).unwrap();
    let tokens = 100;
    let n = tokens * 2;
    let (q, k, v) = (
        vec![0.1f32; n * 16],
        vec![0.2f32; n * 16],
        vec![1.0f32; n * 16],
    );
    let (beta, g) = (vec![0.5f32; n], vec![-0.1f32; n]);
    let inputs = ForwardInputs {
        batch: 1,
        tokens,
        q: (&q).into(),
        k: (&k).into(),
        v: (&v).into(),
        beta: (&beta).into(),
        g: (&g).into(),
    };
    let mut out = vec![0.0f32; n * 16];
    let before = state_copies();
    for _ in 0..20 {
        session.feed(&inputs, &mut out).unwrap();
    }
    assert_eq!(state_copies(), before, "a window copied the state");
    let snap = session.snapshot().unwrap();
    assert_eq!(snap.tokens_seen(), 2000);
    assert_eq!(state_copies(), before + 1);
    let end = session.into_state().unwrap();
    assert_eq!(end, snap);
    assert_eq!(state_copies(), before + 2);

    // A language model holds one session per layer: a long feed copies nothing, a
    // snapshot copies each layer once.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gdn-gva");
    let model = LanguageModel::load(dir, ltm_engine::Device::Cpu).unwrap();
    let mut s = model.session().unwrap();
    s.set_window(64);
    let ids: Vec<u32> = (0..1000).map(|i| (i * 7 % 4000) as u32).collect();
    let before = state_copies();
    s.feed(&ids, Logits::None).unwrap();
    assert_eq!(state_copies(), before);
    s.snapshot().unwrap();
    assert_eq!(state_copies(), before + model.config().layers as u64);
}
