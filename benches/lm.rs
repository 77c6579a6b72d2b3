//! The language-model runtime on the `gdn-tiny` fixture: prefill (logits at every
//! position, as `run` scores a context) and one decode step. `cargo bench --bench lm`;
//! tokens/s is criterion's "thrpt". The larger random-weight model, the share of the
//! FMA floor and decode after 1M tokens are in `examples/lm_bench.rs`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ltm_engine::hash::SplitMix64;
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::Device;

fn ids(n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = SplitMix64::new(3);
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}

fn gdn_tiny(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gdn-tiny");
    let model = LanguageModel::load(dir, Device::Cpu).unwrap();
    let vocab = model.config().vocab_size;
    let mut group = c.benchmark_group("gdn_tiny");
    group.sample_size(10);
    let tokens = ids(2048, vocab);
    for window in [256usize, 512, 1024] {
        group.throughput(Throughput::Elements(tokens.len() as u64));
        group.bench_function(BenchmarkId::new("prefill_scored", window), |b| {
            b.iter(|| {
                let mut s = model.session().unwrap();
                s.set_window(window).unwrap();
                s.feed_with(&tokens, Logits::All, &mut |l| {
                    std::hint::black_box(l);
                })
                .unwrap();
            })
        });
    }
    let mut s = model.session().unwrap();
    s.feed(&tokens, Logits::None).unwrap();
    group.throughput(Throughput::Elements(1));
    let mut next = 17u32;
    group.bench_function("decode_step_after_2048", |b| {
        b.iter(|| {
            next = (next * 31 + 7) % vocab as u32;
            std::hint::black_box(s.step(next).unwrap());
        })
    });
    group.finish();
}

criterion_group!(benches, gdn_tiny);
criterion_main!(benches);
