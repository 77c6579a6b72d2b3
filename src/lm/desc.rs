//! A language model as data: an embedding, a stack of blocks, a final norm and a head.
//! A reader ([`super::readers`]) turns a checkpoint's `config.json` into this; the one
//! forward ([`super::forward`]) walks it over whichever device's operations. Whatever
//! differs between architectures is a field here, so that a new architecture is a
//! reader (and, where it brings one, a new operation), never another forward.

pub use super::config::GateActivation;

/// How a norm applies its learned weight: `x̂ · w` (fla, Llama) or `x̂ · (1 + w)`
/// (Qwen3-Next, Gemma), where `x̂` is the row over its root mean square.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormForm {
    /// `x̂ · w`.
    Weight,
    /// `x̂ · (1 + w)`: the checkpoint stores the offset from one.
    OnePlusWeight,
}

/// An RMSNorm: its weight's form and the epsilon inside the square root.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Norm {
    /// How the stored weight scales the normalised row.
    pub form: NormForm,
    /// Added to the mean square before the root.
    pub eps: f32,
}

impl Norm {
    /// The multiplier the forward applies, from the checkpoint's stored value: the
    /// loader folds the form in once so that every device runs one kind of norm.
    pub fn effective(&self, stored: f32) -> f32 {
        match self.form {
            NormForm::Weight => stored,
            NormForm::OnePlusWeight => 1.0 + stored,
        }
    }
}

/// A gated-delta-rule token mixer: q, k, v from one stacked projection through a
/// causal depthwise convolution (SiLU), q and k l2-normalised, β and the decay from
/// their own projections, the memory, a per-head RMSNorm of its output, optionally
/// gated, and the output projection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GatedDeltaNet {
    /// Query/key heads `H`.
    pub heads: usize,
    /// Value heads `HV`, a multiple of `H` (grouped value heads: value head `i` reads
    /// query/key head `i / (HV / H)`).
    pub value_heads: usize,
    /// `K`, the width of a query/key head.
    pub head_dim: usize,
    /// `V`, the width of a value head.
    pub value_dim: usize,
    /// Taps of the short convolution, `W`.
    pub conv_width: usize,
    /// β is `beta_scale · sigmoid(b)`: 1, or 2 where negative eigenvalues are allowed.
    pub beta_scale: f32,
    /// The gate on the normalised output (`g_proj`), if any, and its activation.
    pub output_gate: Option<GateActivation>,
    /// The per-value-head norm of the memory's output.
    pub out_norm: Norm,
}

impl GatedDeltaNet {
    /// `H · K`.
    pub fn key_width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// `HV · V`: the memory's output and the output projection's input.
    pub fn value_width(&self) -> usize {
        self.value_heads * self.value_dim
    }

    /// Channels of the short convolution: q, k and v.
    pub fn conv_channels(&self) -> usize {
        2 * self.key_width() + self.value_width()
    }

    /// Rows of the stacked input projection: q, k, v, the gate if any, then a (decay)
    /// and b (β) per value head.
    pub fn in_proj_width(&self) -> usize {
        let gate = if self.output_gate.is_some() {
            self.value_width()
        } else {
            0
        };
        self.conv_channels() + gate + 2 * self.value_heads
    }

    /// Value heads per query/key head.
    pub fn group(&self) -> usize {
        self.value_heads / self.heads
    }
}

/// What mixes information across positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TokenMixer {
    /// The gated delta rule with its short convolution.
    GatedDeltaNet(GatedDeltaNet),
}

/// What mixes channels at each position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChannelMixer {
    /// `down(silu(gate(x)) · up(x))`, gate and up stacked in one projection.
    SwiGlu {
        /// The width `I` between the projections.
        intermediate: usize,
    },
}

/// One block of the stack, pre-norm: `x += token_mixer(mixer_norm(x))`, then
/// `x += channel_mixer(channel_norm(x))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Block {
    /// Before the token mixer.
    pub mixer_norm: Norm,
    /// Across positions.
    pub token_mixer: TokenMixer,
    /// Before the channel mixer.
    pub channel_norm: Norm,
    /// At each position.
    pub channel_mixer: ChannelMixer,
}

/// A causal language model: embedding → blocks → final norm → head.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDesc {
    /// Token ids the embedding and the head cover.
    pub vocab_size: usize,
    /// The residual stream's width `D`.
    pub hidden_size: usize,
    /// In order; each holds its own state in a sequence.
    pub blocks: Vec<Block>,
    /// Before the head.
    pub final_norm: Norm,
    /// The head is the embedding matrix (no `lm_head` of its own).
    pub tied_head: bool,
}

impl ModelDesc {
    /// The widest activation a block writes per token beside the residual stream
    /// (each device sizes its window buffers from the description, not from a config).
    pub fn max_in_proj_width(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| match &b.token_mixer {
                TokenMixer::GatedDeltaNet(m) => m.in_proj_width(),
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_plus_weight_norm_offsets_its_weight_and_a_plain_one_keeps_it() {
        let plain = Norm {
            form: NormForm::Weight,
            eps: 1e-6,
        };
        let offset = Norm {
            form: NormForm::OnePlusWeight,
            ..plain
        };
        assert_eq!(plain.effective(0.25), 0.25);
        assert_eq!(offset.effective(0.25), 1.25);
        assert_eq!(offset.effective(0.0), 1.0);
    }

    #[test]
    fn the_projection_width_counts_the_gate_only_when_there_is_one() {
        let m = GatedDeltaNet {
            heads: 2,
            value_heads: 4,
            head_dim: 8,
            value_dim: 16,
            conv_width: 4,
            beta_scale: 1.0,
            output_gate: Some(GateActivation::Swish),
            out_norm: Norm {
                form: NormForm::Weight,
                eps: 1e-6,
            },
        };
        assert_eq!(m.conv_channels(), 2 * 16 + 64);
        assert_eq!(m.in_proj_width(), 96 + 64 + 8);
        let ungated = GatedDeltaNet {
            output_gate: None,
            ..m
        };
        assert_eq!(ungated.in_proj_width(), 96 + 8);
        assert_eq!(m.group(), 2);
    }
}
