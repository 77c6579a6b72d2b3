//! `model_type: gated_deltanet`, as flash-linear-attention's `GatedDeltaNetConfig` and
//! `save_pretrained` write it: the config's fields are read (and refused by name) in
//! [`GdnConfig`]; here they become a [`ModelDesc`], and the checkpoint's names
//! (`model.layers.{l}.attn.q_proj.weight`, …) the description's weights.

use crate::error::{Error, Result};

use super::super::config::GdnConfig;
use super::super::desc::{
    Block, ChannelMixer, GateActivation, GatedDeltaNet, ModelDesc, Norm, NormForm, TokenMixer,
};
use super::{BlockTensors, Reader, Tensor};

/// fla's Gated DeltaNet: every norm `x̂ · w` with the config's epsilon, pre-norm blocks
/// of the gated delta rule and a SwiGLU MLP.
pub struct GatedDeltaNetReader<'c>(pub &'c GdnConfig);

impl GatedDeltaNetReader<'_> {
    fn norm(&self) -> Norm {
        Norm {
            form: NormForm::Weight,
            eps: self.0.norm_eps,
        }
    }
}

impl Reader for GatedDeltaNetReader<'_> {
    fn desc(&self) -> ModelDesc {
        let c = self.0;
        let mixer = GatedDeltaNet {
            heads: c.heads,
            value_heads: c.value_heads,
            head_dim: c.head_dim,
            value_dim: c.value_dim,
            conv_width: c.conv_size,
            beta_scale: if c.allow_neg_eigval { 2.0 } else { 1.0 },
            output_gate: c.use_gate.then_some(c.gate_activation),
            out_norm: self.norm(),
        };
        let block = Block {
            mixer_norm: self.norm(),
            token_mixer: TokenMixer::GatedDeltaNet(mixer),
            channel_norm: self.norm(),
            channel_mixer: ChannelMixer::SwiGlu {
                intermediate: c.intermediate_size,
            },
        };
        ModelDesc {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            blocks: vec![block; c.layers],
            final_norm: self.norm(),
            tied_head: c.tie_word_embeddings,
        }
    }

    fn embeddings(&self) -> Tensor {
        let c = self.0;
        (
            "model.embeddings.weight".into(),
            vec![c.vocab_size, c.hidden_size],
        )
    }

    fn block(&self, l: usize) -> BlockTensors {
        let c = self.0;
        let (d, dk, dv, hv, i) = (
            c.hidden_size,
            c.key_width(),
            c.value_width(),
            c.value_heads,
            c.intermediate_size,
        );
        let p = |s: &str, shape: Vec<usize>| (format!("model.layers.{l}.{s}"), shape);
        let mut in_proj = vec![
            p("attn.q_proj.weight", vec![dk, d]),
            p("attn.k_proj.weight", vec![dk, d]),
            p("attn.v_proj.weight", vec![dv, d]),
        ];
        if c.use_gate {
            in_proj.push(p("attn.g_proj.weight", vec![dv, d]));
        }
        in_proj.push(p("attn.a_proj.weight", vec![hv, d]));
        in_proj.push(p("attn.b_proj.weight", vec![hv, d]));
        let w = c.conv_size;
        BlockTensors {
            attn_norm: vec![p("attn_norm.weight", vec![d])],
            in_proj,
            conv: vec![
                p("attn.q_conv1d.weight", vec![dk, 1, w]),
                p("attn.k_conv1d.weight", vec![dk, 1, w]),
                p("attn.v_conv1d.weight", vec![dv, 1, w]),
            ],
            decay_rate: vec![p("attn.A_log", vec![hv])],
            dt_bias: vec![p("attn.dt_bias", vec![hv])],
            o_norm: vec![p("attn.o_norm.weight", vec![c.value_dim])],
            o_proj: vec![p("attn.o_proj.weight", vec![d, dv])],
            mlp_norm: vec![p("mlp_norm.weight", vec![d])],
            gate_up: vec![
                p("mlp.gate_proj.weight", vec![i, d]),
                p("mlp.up_proj.weight", vec![i, d]),
            ],
            down: vec![p("mlp.down_proj.weight", vec![d, i])],
        }
    }

    fn final_norm(&self) -> Tensor {
        ("model.norm.weight".into(), vec![self.0.hidden_size])
    }

    fn head(&self) -> Option<Tensor> {
        let c = self.0;
        (!c.tie_word_embeddings)
            .then(|| ("lm_head.weight".into(), vec![c.vocab_size, c.hidden_size]))
    }

    fn layers(&self) -> usize {
        self.0.layers
    }
}

/// The config a description made in code amounts to (no `config.json`): every block
/// the same gated-delta-rule block with a SwiGLU MLP, as this runtime holds them, its
/// numbers through the same checks as a file's. A description this reader would not
/// give back as it is (blocks that differ, a `1 + w` norm, β scaled otherwise than by 1
/// or 2) is refused, naming what.
pub fn config_of(desc: &ModelDesc) -> Result<GdnConfig> {
    let refuse = |what: &str| Error::Config(format!("a Gated DeltaNet description {what}"));
    let first = desc
        .blocks
        .first()
        .ok_or_else(|| refuse("with no blocks"))?;
    let TokenMixer::GatedDeltaNet(m) = &first.token_mixer;
    let ChannelMixer::SwiGlu { intermediate } = first.channel_mixer;
    let beta = if m.beta_scale == 1.0 || m.beta_scale == 2.0 {
        m.beta_scale == 2.0
    } else {
        let s = m.beta_scale;
        return Err(refuse(&format!("with β scaled by {s} (1 or 2 only)")));
    };
    let fields = serde_json::json!({
        "model_type": "gated_deltanet",
        "hidden_size": desc.hidden_size,
        "num_hidden_layers": desc.blocks.len(),
        "num_heads": m.heads,
        "num_v_heads": m.value_heads,
        "head_dim": m.head_dim,
        "expand_v": m.value_dim as f64 / m.head_dim.max(1) as f64,
        "conv_size": m.conv_width,
        "norm_eps": desc.final_norm.eps,
        "intermediate_size": intermediate,
        "vocab_size": desc.vocab_size,
        "tie_word_embeddings": desc.tied_head,
        "use_gate": m.output_gate.is_some(),
        "output_gate_activation": match m.output_gate {
            Some(GateActivation::Sigmoid) => "sigmoid",
            _ => "swish",
        },
        "allow_neg_eigval": beta,
    });
    let config =
        GdnConfig::parse(&fields.to_string()).map_err(|e| refuse(&format!("whose {e}")))?;
    // Whatever the config cannot say (blocks that differ, norm forms, epsilons per norm)
    // shows as a difference here.
    if GatedDeltaNetReader(&config).desc() != *desc {
        return Err(refuse(
            "with blocks that differ, a `1 + w` norm, or norms of several epsilons: the \
             gated_deltanet runtime holds uniform blocks with `w` norms of one epsilon",
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::readers::tensors;

    #[test]
    fn the_description_carries_every_option_of_the_config() {
        let mut c = GdnConfig::fla_defaults(64, 3, 2, 16, 100).unwrap();
        c.allow_neg_eigval = true;
        c.use_gate = false;
        c.tie_word_embeddings = true;
        let d = GatedDeltaNetReader(&c).desc();
        assert_eq!(d.blocks.len(), 3);
        assert!(d.tied_head);
        let TokenMixer::GatedDeltaNet(m) = d.blocks[0].token_mixer;
        assert_eq!(m.beta_scale, 2.0);
        assert_eq!(m.output_gate, None);
        assert_eq!(
            m.in_proj_width(),
            2 * c.key_width() + c.value_width() + 2 * c.value_heads
        );
        assert_eq!(d.final_norm.eps, c.norm_eps);
        // Tied: no head tensor; the names run embeddings, blocks, then the final norm.
        let names: Vec<String> = tensors(&GatedDeltaNetReader(&c)).map(|t| t.0).collect();
        assert_eq!(names.first().unwrap(), "model.embeddings.weight");
        assert_eq!(names.last().unwrap(), "model.norm.weight");
        assert_eq!(names.len(), 2 + 3 * 17, "no g_proj without the gate");
        assert_eq!(names[1], "model.layers.0.attn_norm.weight");
        assert_eq!(names[17], "model.layers.0.mlp.down_proj.weight");
    }

    #[test]
    fn a_description_made_in_code_gives_back_its_config_or_says_why_not() {
        let mut c = GdnConfig::fla_defaults(64, 2, 2, 16, 100).unwrap();
        c.allow_neg_eigval = true;
        c.gate_activation = GateActivation::Sigmoid;
        let desc = GatedDeltaNetReader(&c).desc();
        assert_eq!(config_of(&desc).unwrap(), c);
        let mut offset = desc.clone();
        offset.blocks[1].mixer_norm.form = NormForm::OnePlusWeight;
        assert!(config_of(&offset)
            .unwrap_err()
            .to_string()
            .contains("1 + w"));
        let mut beta = desc.clone();
        let TokenMixer::GatedDeltaNet(m) = &mut beta.blocks[0].token_mixer;
        m.beta_scale = 3.0;
        assert!(config_of(&beta)
            .unwrap_err()
            .to_string()
            .contains("β scaled by 3"));
        let empty = ModelDesc {
            blocks: Vec::new(),
            ..desc
        };
        assert!(config_of(&empty).is_err());
    }
}
