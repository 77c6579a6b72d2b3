//! Configurations no fixture has (tied embeddings, β up to 2, no output gate, a
//! sigmoid gate, grouped value heads, bf16/f16 weights, other conv widths and MLP
//! sizes) against an independent float64 implementation of SEMANTICS.md that reads
//! the checkpoint's tensors by name; and every refused config field and tensor
//! problem, with the message naming it.

mod common;

use common::lm_configs::*;
use ltm_engine::lm::{LanguageModel, Logits};
use ltm_engine::Device;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

#[test]
fn configurations_beyond_the_fixtures_match_a_float64_reference() {
    every_configuration(&check);
}

fn load_err(
    config: &Value,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &base_config(), Wt::F32, 3);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    edit(&mut tensors);
    write_tensors(&dir.path().join("model.safetensors"), &tensors);
    match LanguageModel::load(dir.path(), Device::Cpu) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_refused_config_field_is_named() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("model_type", json!("llama"), "model_type is \"llama\""),
        ("attn", json!({"layers": [1], "num_heads": 4}), "attn is"),
        ("use_short_conv", json!(false), "use_short_conv is false"),
        ("hidden_act", json!("gelu"), "hidden_act is \"gelu\""),
        (
            "output_gate_activation",
            json!("relu"),
            "output_gate_activation is \"relu\"",
        ),
        ("num_v_heads", json!(3), "num_v_heads is 3"),
        ("hidden_size", json!(0), "hidden_size is 0"),
        ("hidden_size", json!(-4), "hidden_size is -4"),
        ("head_dim", json!("16"), "head_dim is \"16\""),
        ("expand_v", json!(1.03), "expand_v is 1.03"),
        ("norm_eps", json!(0.0), "norm_eps is 0"),
        ("conv_size", json!(1000), "conv_size is 1000"),
        ("vocab_size", json!(1e12), "vocab_size is"),
        ("attnres_block_size", json!(4), "attnres_block_size is 4"),
        ("conv_bias", json!(true), "conv_bias is true"),
        (
            "tie_word_embeddings",
            json!("yes"),
            "tie_word_embeddings is \"yes\"",
        ),
        (
            "some_new_switch",
            json!(true),
            "unknown field(s) some_new_switch",
        ),
    ];
    for (field, value, want) in cases {
        let mut c = base_config();
        c[field] = value;
        let err = load_err(&c, |_| {});
        assert!(
            err.contains(want) && err.contains("config.json"),
            "{field}: {err}"
        );
    }
    let mut c = base_config();
    c.as_object_mut().unwrap().remove("hidden_size");
    let err = load_err(&c, |_| {});
    assert!(err.contains("hidden_size is missing"), "{err}");
}

#[test]
fn every_tensor_problem_is_named() {
    let c = base_config();
    let err = load_err(&c, |t| {
        t.retain(|x| x.0 != "model.layers.1.attn.k_proj.weight")
    });
    assert!(
        err.contains("`model.layers.1.attn.k_proj.weight` is missing"),
        "{err}"
    );
    let err = load_err(&c, |t| {
        let x = t
            .iter_mut()
            .find(|x| x.0 == "model.layers.0.attn.o_proj.weight")
            .unwrap();
        x.2 = vec![x.2[1], x.2[0]];
    });
    assert!(
        err.contains("model.layers.0.attn.o_proj.weight")
            && err.contains("[48, 64]")
            && err.contains("[64, 48]"),
        "{err}"
    );
    let err = load_err(&c, |t| {
        let x = t.iter_mut().find(|x| x.0 == "model.norm.weight").unwrap();
        x.1 = Dtype::I32;
    });
    assert!(
        err.contains("model.norm.weight") && err.contains("I32"),
        "{err}"
    );
    let err = load_err(&c, |t| {
        t.push((
            "model.layers.0.attn.q_conv1d.bias".into(),
            Dtype::F32,
            vec![32],
            vec![0; 128],
        ))
    });
    assert!(err.contains("model.layers.0.attn.q_conv1d.bias"), "{err}");
    // A tied model must not need lm_head; an untied one must have it.
    let mut tied = base_config();
    tied["tie_word_embeddings"] = json!(false);
    let err = load_err(&tied, |t| t.retain(|x| x.0 != "lm_head.weight"));
    assert!(err.contains("`lm_head.weight` is missing"), "{err}");
}

#[test]
fn sharded_checkpoints_load_like_one_file_and_bad_indexes_are_named() {
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gdn-gva");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let tensors: Vec<_> = part
            .iter()
            .map(|n| {
                let t = st.tensor(n).unwrap();
                (n.clone(), t.dtype(), t.shape().to_vec(), t.data().to_vec())
            })
            .collect();
        write_tensors(&dir.path().join(&file), &tensors);
        for n in part {
            map.insert(n.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let sharded = LanguageModel::load(dir.path(), Device::Cpu).unwrap();
    let single = LanguageModel::load(&src, Device::Cpu).unwrap();
    assert_eq!(sharded.fingerprint(), single.fingerprint());
    let ids: Vec<u32> = (0..80).map(|i| (i * 37 % 4000) as u32).collect();
    let a = sharded.session().unwrap().feed(&ids, Logits::All).unwrap();
    let b = single.session().unwrap().feed(&ids, Logits::All).unwrap();
    assert_eq!(a, b);

    // An index naming a missing shard, or a path outside the directory, is named.
    let mut bad = index.clone();
    bad["weight_map"]["model.norm.weight"] = json!("../elsewhere.safetensors");
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        bad.to_string(),
    )
    .unwrap();
    let err = LanguageModel::load(dir.path(), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("../elsewhere.safetensors"), "{err}");
    let mut bad = index;
    bad["weight_map"]["model.norm.weight"] = json!("model-00009-of-00002.safetensors");
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        bad.to_string(),
    )
    .unwrap();
    let err = LanguageModel::load(dir.path(), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model-00009-of-00002.safetensors"), "{err}");
}
