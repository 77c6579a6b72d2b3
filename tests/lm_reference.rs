//! The language-model runtime against flash-linear-attention's own outputs on the two
//! fixture checkpoints (tests/fixtures/README.md): logits, every layer's state and conv
//! cache, split calls, greedy generation, perplexity, and the tokenizer.

mod common;

use common::lm::{fixture, rel_err, Reference};
use ltm_engine::lm::{LanguageModel, Logits, ModelState, Sampler, Sampling};
use ltm_engine::Device;

const LOGIT_TOL: f64 = 1e-4;
const STATE_TOL: f64 = 1e-4;

/// Compares every layer's state with `prefix` (`state`, `split.state_a`, `gen.state`).
fn check_state(model: &LanguageModel, state: &ModelState, r: &Reference, prefix: &str) {
    let c = model.config();
    let (hv, kd, vd, w) = (c.value_heads, c.head_dim, c.value_dim, c.conv_size);
    for (l, layer) in state.layers.iter().enumerate() {
        // fla keeps S as [B, HV, V, K]; the engine as [B, HV, K, V].
        let want = r.f32(&format!("{prefix}.L{l}.recurrent"));
        let mut transposed = vec![0.0f32; want.len()];
        for h in 0..hv {
            for v in 0..vd {
                for k in 0..kd {
                    transposed[(h * kd + k) * vd + v] = want[(h * vd + v) * kd + k];
                }
            }
        }
        let e = rel_err(layer.memory.values(), &transposed);
        assert!(
            e < STATE_TOL,
            "{prefix} layer {l} recurrent state: error {e:.2e}"
        );
        let mut conv = r.f32(&format!("{prefix}.L{l}.conv_q"));
        conv.extend(r.f32(&format!("{prefix}.L{l}.conv_k")));
        conv.extend(r.f32(&format!("{prefix}.L{l}.conv_v")));
        assert_eq!(conv.len(), layer.conv.len());
        let e = rel_err(&layer.conv, &conv);
        assert!(
            e < STATE_TOL,
            "{prefix} layer {l} conv cache: error {e:.2e}"
        );
        let _ = w;
    }
}

fn against_reference(name: &str) {
    let model = LanguageModel::load(fixture(name), Device::Cpu).unwrap();
    let r = Reference::load(name);
    let ids = r.ids("input_ids");
    assert_eq!(ids.len(), 300);
    let vocab = model.config().vocab_size;

    // One call over the prompt.
    let mut session = model.session().unwrap();
    let logits = session.feed(&ids, Logits::All).unwrap();
    let e = rel_err(&logits, &r.f32("logits"));
    eprintln!("{name}: logits error {e:.2e}");
    assert!(e < LOGIT_TOL, "{name} logits: error {e:.2e}");
    check_state(&model, &session.snapshot().unwrap(), &r, "state");

    // Perplexity of the prompt, as generation.json gives it.
    let gen: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(name).join("generation.json")).unwrap(),
    )
    .unwrap();
    let mut nll = 0.0f64;
    for t in 0..ids.len() - 1 {
        let row = &logits[t * vocab..(t + 1) * vocab];
        nll += ltm_engine::lm::ops::log_sum_exp(row) - row[ids[t + 1] as usize] as f64;
    }
    let mean = nll / (ids.len() - 1) as f64;
    let want = gen["prompt_mean_ce_nats"].as_f64().unwrap();
    assert!(
        ((mean - want) / want).abs() < 1e-4,
        "{name}: mean NLL {mean} vs {want}"
    );

    // Two calls, 139 + 161 tokens, and the same prompt in small windows.
    let mut split = model.session().unwrap();
    let a = split.feed(&ids[..139], Logits::All).unwrap();
    let e = rel_err(&a, &r.f32("split.logits_a"));
    assert!(e < LOGIT_TOL, "{name} split a: {e:.2e}");
    check_state(&model, &split.snapshot().unwrap(), &r, "split.state_a");
    let b = split.feed(&ids[139..], Logits::All).unwrap();
    let e = rel_err(&b, &r.f32("split.logits_b"));
    assert!(e < LOGIT_TOL, "{name} split b: {e:.2e}");
    check_state(&model, &split.snapshot().unwrap(), &r, "split.state_b");
    let mut windows = model.session().unwrap();
    windows.set_window(37).unwrap();
    let small = windows.feed(&ids, Logits::All).unwrap();
    let e = rel_err(&small, &r.f32("logits"));
    assert!(e < LOGIT_TOL, "{name} windows of 37: {e:.2e}");

    // 40 greedy tokens, one call per token, from the prompt's state.
    let mut sampler = Sampler::new(Sampling::default()).unwrap();
    let mut gen_logits = Vec::new();
    gen_logits.extend_from_slice(session.next_logits().unwrap());
    let mut got = Vec::new();
    let want_ids = r.ids("gen.ids");
    let mut next = sampler.pick(&gen_logits);
    for _ in 0..40 {
        got.push(next);
        let l = session.step(next).unwrap().to_vec();
        next = sampler.pick(&l);
        if gen_logits.len() < 40 * vocab {
            gen_logits.extend_from_slice(&l);
        }
    }
    assert_eq!(got, want_ids, "{name}: greedy ids");
    let e = rel_err(&gen_logits, &r.f32("gen.logits"));
    assert!(e < LOGIT_TOL, "{name} generation logits: {e:.2e}");
    check_state(&model, &session.snapshot().unwrap(), &r, "gen.state");

    // generate() gives the same ids from a fresh session.
    let mut fresh = model.session().unwrap();
    let ids2 = fresh
        .generate(&ids, 40, &mut Sampler::new(Sampling::default()).unwrap())
        .unwrap();
    assert_eq!(ids2, want_ids);

    // The tokenizer gives the prompt's ids.
    let tok = model.require_tokenizer().unwrap();
    let text = gen["prompt_text"].as_str().unwrap();
    let plain = text.strip_prefix("<s>").unwrap_or(text);
    assert_eq!(
        tok.encode(plain, true).unwrap(),
        ids,
        "{name}: tokenizer ids"
    );
    assert_eq!(
        tok.encode(text, false).unwrap(),
        ids,
        "{name}: tokenizer ids of the text with <s>"
    );
}

#[test]
fn gdn_tiny_matches_flash_linear_attention() {
    against_reference("gdn-tiny");
}

#[test]
fn gdn_gva_matches_flash_linear_attention() {
    against_reference("gdn-gva");
}
