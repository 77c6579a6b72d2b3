//! The forward's trace hook (`ModelSession::set_trace`), which the LM kernels' emulator
//! check reads its stage inputs and outputs from: it sees every stage of every layer
//! with the shapes the kernels' geometry assumes, what it sees is what the forward
//! computed, and setting it changes nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use ltm_engine::lm::kernels::LmDims;
use ltm_engine::lm::session::TraceStage as S;
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::Device;

type Seen = Rc<RefCell<HashMap<(S, usize), Vec<f32>>>>;

fn traced(session: &mut ltm_engine::lm::ModelSession<'_>) -> Seen {
    let seen: Seen = Rc::default();
    let sink = seen.clone();
    session.set_trace(Some(Box::new(move |stage, layer, values| {
        let old = sink.borrow_mut().insert((stage, layer), values.to_vec());
        assert!(
            old.is_none(),
            "{stage:?} of layer {layer} seen twice in one window"
        );
    })));
    seen
}

#[test]
fn the_trace_sees_every_stage_and_changes_nothing() {
    for name in ["gdn-gva", "gdn-tiny"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let model = LanguageModel::load(&dir, Device::Cpu).unwrap();
        let c = model.config();
        let dims = LmDims::of(c);
        let ids: Vec<u32> = (0..23u32)
            .map(|i| (i * 37 + 5) % c.vocab_size as u32)
            .collect();
        let rows = ids.len();

        let mut plain = model.session().unwrap();
        let want = plain.feed(&ids, Logits::All).unwrap();
        let mut session = model.session().unwrap();
        let seen = traced(&mut session);
        let got = session.feed(&ids, Logits::All).unwrap();
        assert_eq!(got, want, "{name}: tracing changed the logits");

        let seen = seen.borrow();
        let width = |s: S| match s {
            S::Residual | S::AttnNorm | S::ResidualMid | S::MlpNorm => rows * dims.hidden,
            S::Proj => rows * dims.in_proj_width(),
            S::ConvCacheBefore | S::ConvCacheAfter => dims.channels() * dims.conv_size,
            S::MemQ | S::MemK => rows * dims.value_heads * dims.head_dim,
            S::MemV | S::MemOut | S::GatedNorm => rows * dims.value_width(),
            S::Beta | S::Gate => rows * dims.value_heads,
            S::Mlp => rows * 2 * dims.intermediate,
            S::Act => rows * dims.intermediate,
            S::ResidualOut | S::FinalNorm => rows * dims.hidden,
        };
        let per_layer = [
            S::Residual,
            S::AttnNorm,
            S::Proj,
            S::ConvCacheBefore,
            S::ConvCacheAfter,
            S::MemQ,
            S::MemK,
            S::MemV,
            S::Beta,
            S::Gate,
            S::MemOut,
            S::GatedNorm,
            S::ResidualMid,
            S::MlpNorm,
            S::Mlp,
            S::Act,
        ];
        for l in 0..c.layers {
            for s in per_layer {
                let v = seen
                    .get(&(s, l))
                    .unwrap_or_else(|| panic!("{name}: no {s:?} of layer {l}"));
                assert_eq!(v.len(), width(s), "{name}: {s:?} of layer {l}");
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "{name}: {s:?} of layer {l}"
                );
            }
        }
        for s in [S::ResidualOut, S::FinalNorm] {
            assert_eq!(seen[&(s, c.layers)].len(), width(s), "{name}: {s:?}");
        }
        assert_eq!(
            seen.len(),
            per_layer.len() * c.layers + 2,
            "{name}: stages seen"
        );
        // What it saw is the session's state: the caches after the window, and zeros
        // before the first one.
        let state = session.snapshot().unwrap();
        for (l, layer) in state.layers.iter().enumerate() {
            assert_eq!(
                seen[&(S::ConvCacheAfter, l)],
                layer.conv,
                "{name}: layer {l}"
            );
            assert!(seen[&(S::ConvCacheBefore, l)].iter().all(|&x| x == 0.0));
        }
        // The residual entering layer 0 is the embedding rows of the ids.
        let d = dims.hidden;
        for (t, &id) in ids.iter().enumerate() {
            let row = &seen[&(S::Residual, 0)][t * d..(t + 1) * d];
            assert_eq!(
                row,
                &model.weights().unwrap().embeddings[id as usize * d..][..d]
            );
        }
    }
}
