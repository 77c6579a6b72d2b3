//! The attention baseline next to the memory, at the same heads and dimensions:
//! a whole context (attention prefill vs the memory's forward) and one generated
//! token after a long context (attention over the KV cache vs one state update).
//! `cargo bench --bench attention`; tokens/s is criterion's "thrpt".

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ltm_engine::baseline::{AttentionBackend, AttentionConfig, CpuAttention, KvCache};
use ltm_engine::bench::workload::Workload;
use ltm_engine::{Backend, CpuBackend, MemoryConfig, State};

const HEADS: usize = 4;
const DIM: usize = 64;

fn prefill_vs_forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("context_f32_H4_D64");
    group.sample_size(10);
    let memory = CpuBackend::new();
    let attention = CpuAttention::new();
    let (mc, ac) = (
        MemoryConfig::new(HEADS, DIM, DIM),
        AttentionConfig::new(HEADS, DIM),
    );
    for tokens in [4096, 16_384] {
        let w = Workload::new(tokens, HEADS, DIM, 7);
        let mut out = vec![0.0; tokens * HEADS * DIM];
        group.throughput(Throughput::Elements(tokens as u64));
        group.bench_function(BenchmarkId::new("memory_forward", tokens), |b| {
            b.iter(|| {
                let mut state = State::zeros(&mc, 1);
                memory
                    .forward_into(&mc, &w.memory_inputs(0, tokens), &mut state, &mut out)
                    .unwrap();
            })
        });
        let mut cache = KvCache::with_capacity(&ac, 1, tokens).unwrap();
        group.bench_function(BenchmarkId::new("attention_prefill", tokens), |b| {
            b.iter(|| {
                cache.clear();
                attention
                    .attend_into(&ac, &w.attention_inputs(0, tokens), &mut cache, &mut out)
                    .unwrap();
            })
        });
    }
    group.finish();
}

fn decode_after_context(c: &mut Criterion) {
    let context = 65_536;
    let mut group = c.benchmark_group("decode_f32_H4_D64");
    group.throughput(Throughput::Elements(1));
    let (mc, ac) = (
        MemoryConfig::new(HEADS, DIM, DIM),
        AttentionConfig::new(HEADS, DIM),
    );
    let w = Workload::new(context, HEADS, DIM, 11);
    let mut out = vec![0.0; HEADS * DIM];

    let memory = CpuBackend::new();
    let mut state = State::zeros(&mc, 1);
    let mut scratch = vec![0.0; context * HEADS * DIM];
    memory
        .forward_into(&mc, &w.memory_inputs(0, context), &mut state, &mut scratch)
        .unwrap();
    drop(scratch);
    group.bench_function(BenchmarkId::new("memory_decode", context), |b| {
        b.iter(|| {
            memory
                .decode_into(&mc, &w.memory_inputs(0, 1), &mut state, &mut out)
                .unwrap()
        })
    });

    let attention = CpuAttention::new();
    let mut cache = KvCache::with_capacity(&ac, 1, context + 1).unwrap();
    cache.append(&ac, &w.attention_inputs(0, context)).unwrap();
    group.bench_function(BenchmarkId::new("attention_decode", context), |b| {
        b.iter(|| {
            cache.truncate(context);
            attention
                .attend_into(&ac, &w.attention_inputs(0, 1), &mut cache, &mut out)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, prefill_vs_forward, decode_after_context);
criterion_main!(benches);
