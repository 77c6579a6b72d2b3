//! A Gated DeltaNet checkpoint's `config.json`, as flash-linear-attention writes it,
//! checked field by field: what the engine cannot run is refused by name, never
//! guessed at.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::limits::cut;

/// The activation of the output gate of each layer (`output_gate_activation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateActivation {
    /// `x · sigmoid(x)` (`swish` or `silu`).
    Swish,
    /// `sigmoid(x)`.
    Sigmoid,
}

/// The shape and options of a Gated DeltaNet causal language model.
#[derive(Clone, Debug, PartialEq)]
pub struct GdnConfig {
    /// Width of the residual stream, `D`.
    pub hidden_size: usize,
    /// Number of layers.
    pub layers: usize,
    /// Query/key heads, `H`.
    pub heads: usize,
    /// Value heads, `HV` (a multiple of `H`; value head `i` reads query/key head
    /// `i / (HV / H)`).
    pub value_heads: usize,
    /// Query/key width per head, `K`.
    pub head_dim: usize,
    /// Value width per head, `V = head_dim · expand_v`.
    pub value_dim: usize,
    /// Width of the causal depthwise convolution, `W`.
    pub conv_size: usize,
    /// Epsilon of every RMSNorm (inside the square root).
    pub norm_eps: f32,
    /// Width of the SwiGLU MLP, `I`.
    pub intermediate_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// The output head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// The output of each layer is gated by `g_proj(h)` after its RMSNorm.
    pub use_gate: bool,
    /// Activation of that gate.
    pub gate_activation: GateActivation,
    /// β is `2 · sigmoid(·)`, allowing negative eigenvalues of the transition.
    pub allow_neg_eigval: bool,
    /// Token id of `<s>`, if the config names one.
    pub bos_token_id: Option<u32>,
    /// Token id of `</s>`, if the config names one.
    pub eos_token_id: Option<u32>,
}

/// Fields that do not change what inference computes (training switches, fused-kernel
/// choices, bookkeeping written by `transformers`), with the type each must still have.
const INERT_FIELDS: &[(&str, Inert)] = &[
    ("architectures", Inert::List),
    ("attn_mode", Inert::Text),
    ("dtype", Inert::Text),
    ("torch_dtype", Inert::Text),
    ("fuse_cross_entropy", Inert::Switch),
    ("fuse_linear_cross_entropy", Inert::Switch),
    ("fuse_norm", Inert::Switch),
    ("fuse_swiglu", Inert::Switch),
    ("initializer_range", Inert::NonNegative),
    ("max_position_embeddings", Inert::Whole),
    ("pad_token_id", Inert::Whole),
    ("transformers_version", Inert::Text),
    ("use_cache", Inert::Switch),
    ("use_l2warp", Inert::Switch),
    ("output_attentions", Inert::Switch),
    ("output_hidden_states", Inert::Switch),
    ("return_dict", Inert::Switch),
];

/// The type of an inert field: a number where a switch belongs is a damaged file,
/// whatever this engine does with the field.
#[derive(Clone, Copy)]
enum Inert {
    List,
    Text,
    Switch,
    NonNegative,
    Whole,
}

impl Inert {
    fn fits(self, v: &Value) -> bool {
        v.is_null()
            || match self {
                Inert::List => v.is_array(),
                Inert::Text => v.is_string(),
                Inert::Switch => v.is_boolean(),
                Inert::NonNegative => v.as_f64().is_some_and(|x| x >= 0.0),
                Inert::Whole => v.is_u64(),
            }
    }

    fn expected(self) -> &'static str {
        match self {
            Inert::List => "a list",
            Inert::Text => "a string",
            Inert::Switch => "true or false",
            Inert::NonNegative => "a number from 0",
            Inert::Whole => "a whole number from 0",
        }
    }
}

/// Largest dimension accepted from a config: far above any published model, low
/// enough that products of a few of them cannot overflow or ask for absurd memory
/// before the weights are checked against them.
const MAX_DIM: u64 = 1 << 20;

/// Largest width of the query/key or of the value projection (`H·K`, `HV·V`): 16 times
/// that of the largest published Gated DeltaNet, and one window of a session's
/// activations at this width still fits in a few hundred MB.
const MAX_WIDTH: u64 = 1 << 16;

impl GdnConfig {
    /// Reads and checks `path` (a model directory's `config.json`).
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::input_file::read_bounded_string(
            path,
            "config.json",
            crate::input_file::CONFIG_JSON_MAX,
        )?;
        Self::parse(&text).map_err(|problem| Error::File {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// The config flash-linear-attention's `GatedDeltaNetConfig` gives for these widths
    /// and its defaults for everything else (V = 2K, conv 4, SwiGLU width
    /// `⌈D·4·2/3⌉₂₅₆`, swish gate, untied head): the same rules [`GdnConfig::parse`]
    /// applies to a `config.json` that names only these fields, because it is one.
    pub fn fla_defaults(
        hidden_size: usize,
        layers: usize,
        heads: usize,
        head_dim: usize,
        vocab_size: usize,
    ) -> std::result::Result<Self, String> {
        let fields = serde_json::json!({
            "model_type": "gated_deltanet",
            "hidden_size": hidden_size,
            "num_hidden_layers": layers,
            "num_heads": heads,
            "head_dim": head_dim,
            "vocab_size": vocab_size,
        });
        Self::parse(&fields.to_string())
    }

    /// Parses the text of a `config.json`; the error says which field is wrong and why.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let value = crate::strict_json::parse(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(fields) = value else {
            return Err("expected a JSON object at the top level".into());
        };
        Fields(&fields).config()
    }

    /// `H · K`: the width of the query and key projections.
    pub fn key_width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// `HV · V`: the width of the value projection and of the layer's output.
    pub fn value_width(&self) -> usize {
        self.value_heads * self.value_dim
    }

    /// Bytes of one sequence's state: per layer the memory `[HV, K, V]` and the conv
    /// cache `[2·Dk + Dv, W]`, then the last hidden vector, all f32.
    pub fn state_bytes(&self) -> u64 {
        let memory = (self.value_width() * self.head_dim) as u64;
        let conv = ((2 * self.key_width() + self.value_width()) * self.conv_size) as u64;
        4 * (self.layers as u64 * (memory + conv) + self.hidden_size as u64)
    }

    /// Value heads per query/key head.
    pub fn group(&self) -> usize {
        self.value_heads / self.heads
    }

    /// Multiply–adds per token of the projections, the MLP and the output head (the
    /// matrix work that dominates), times two: FLOPs per token of prefill with logits
    /// at every position.
    pub fn matmul_flops_per_token(&self) -> u64 {
        let d = self.hidden_size as u64;
        let per_layer = d
            * (2 * self.key_width() as u64
                + self.value_width() as u64 * if self.use_gate { 2 } else { 1 }
                + 2 * self.value_heads as u64)
            + self.value_width() as u64 * d
            + 3 * d * self.intermediate_size as u64;
        2 * (self.layers as u64 * per_layer + d * self.vocab_size as u64)
    }

    /// FLOPs per token of the recurrence (chunked gated delta rule at chunk 64), as the
    /// CPU kernels compute it: about `4KV + 2·64·(K+V)` per value head.
    pub fn memory_flops_per_token(&self) -> u64 {
        let (k, v) = (self.head_dim as u64, self.value_dim as u64);
        self.layers as u64 * self.value_heads as u64 * (6 * k * v + 128 * (k + v))
    }
}

/// The JSON object being read, with typed accessors that name the field on failure.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn config(&self) -> std::result::Result<GdnConfig, String> {
        self.check_known()?;
        match self.0.get("model_type") {
            Some(Value::String(t)) if t == "gated_deltanet" => {}
            None | Some(Value::Null) => {
                return Err("model_type is missing (expected \"gated_deltanet\")".into())
            }
            Some(other) => {
                return Err(format!(
                    "model_type is {}; only \"gated_deltanet\" is supported",
                    cut(&other.to_string())
                ))
            }
        }
        self.require_null("attn", "hybrid attention layers are not supported")?;
        self.require_null(
            "attnres_block_size",
            "attention residuals are not supported",
        )?;
        if !self.bool_or("use_short_conv", true)? {
            return Err(
                "use_short_conv is false; only models with the short convolution are supported"
                    .into(),
            );
        }
        if self.0.get("conv_bias").is_some() && self.bool_or("conv_bias", false)? {
            return Err("conv_bias is true; convolutions with a bias are not supported".into());
        }
        let act = self.str_or("hidden_act", "swish")?;
        if act != "swish" && act != "silu" {
            return Err(format!(
                "hidden_act is \"{act}\"; only \"swish\" (SiLU) is supported"
            ));
        }
        let gate_activation = match self.str_or("output_gate_activation", "swish")?.as_str() {
            "swish" | "silu" => GateActivation::Swish,
            "sigmoid" => GateActivation::Sigmoid,
            other => {
                return Err(format!(
                    "output_gate_activation is \"{other}\"; expected \"swish\", \"silu\" or \"sigmoid\""
                ))
            }
        };
        let hidden_size = self.dim("hidden_size", None)?;
        let layers = self.dim("num_hidden_layers", None)?;
        let heads = self.dim("num_heads", None)?;
        let head_dim = self.dim("head_dim", None)?;
        let value_heads = self.dim("num_v_heads", Some(heads))?;
        if value_heads % heads != 0 {
            return Err(format!(
                "num_v_heads is {value_heads}, not a multiple of num_heads ({heads})"
            ));
        }
        let expand_v = self.number_or("expand_v", 2.0)?;
        let value_dim_f = head_dim as f64 * expand_v;
        if expand_v <= 0.0 || value_dim_f < 1.0 || value_dim_f > MAX_DIM as f64 {
            return Err(format!(
                "expand_v is {expand_v:?}: head_dim · expand_v must be between 1 and {MAX_DIM}"
            ));
        }
        // fla takes int(head_dim * expand_v) and insists it is whole.
        if value_dim_f.fract() != 0.0 {
            return Err(format!(
                "expand_v is {expand_v:?}: head_dim · expand_v = {value_dim_f:?} is not a whole number"
            ));
        }
        let value_dim = value_dim_f as usize;
        // The widths of the stacked projections and of one window's activations follow
        // from these products; bounding them keeps every size derived from the config
        // far from overflow and every buffer of a session modest.
        for (name, width) in [
            ("num_heads · head_dim", heads as u64 * head_dim as u64),
            (
                "num_v_heads · head_dim · expand_v",
                value_heads as u64 * value_dim as u64,
            ),
        ] {
            if width > MAX_WIDTH {
                return Err(format!(
                    "{name} is {width}; at most {MAX_WIDTH} is supported"
                ));
            }
        }
        let conv_size = self.dim("conv_size", Some(4))?;
        if conv_size > 64 {
            return Err(format!("conv_size is {conv_size}; expected 1 to 64"));
        }
        let norm_eps = self.number_or("norm_eps", 1e-6)?;
        // The norms run in f32: an epsilon that rounds to zero (or to a subnormal)
        // there lets an all-zero row divide by zero.
        if !(norm_eps > 0.0 && norm_eps <= 1.0 && norm_eps as f32 >= f32::MIN_POSITIVE) {
            return Err(format!(
                "norm_eps is {norm_eps:?}; expected a number from {:e} to 1 (positive in f32)",
                f32::MIN_POSITIVE
            ));
        }
        let intermediate_size = match self.0.get("intermediate_size") {
            None | Some(Value::Null) => {
                let ratio = self.number_or("hidden_ratio", 4.0)?;
                // modules/mlp.py: int(D · ratio · 2/3), rounded up to a multiple of 256.
                let raw = (hidden_size as f64 * ratio * 2.0 / 3.0).floor();
                let size = (raw / 256.0).ceil() * 256.0;
                if !(ratio > 0.0 && (1.0..=MAX_DIM as f64).contains(&size)) {
                    return Err(format!(
                        "hidden_ratio is {ratio:?}; with hidden_size {hidden_size} it gives an MLP \
                         of {size:?} (expected 1 to {MAX_DIM})"
                    ));
                }
                size as usize
            }
            Some(_) => self.dim("intermediate_size", None)?,
        };
        let vocab_size = self.dim("vocab_size", None)?;
        let token = |name: &str| -> std::result::Result<Option<u32>, String> {
            match self.0.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(id) if id < vocab_size as u64 => Ok(Some(id as u32)),
                    _ => Err(format!(
                        "{name} is {v}; expected a token id below vocab_size ({vocab_size})"
                    )),
                },
            }
        };
        Ok(GdnConfig {
            hidden_size,
            layers,
            heads,
            value_heads,
            head_dim,
            value_dim,
            conv_size,
            norm_eps: norm_eps as f32,
            intermediate_size,
            vocab_size,
            tie_word_embeddings: self.bool_or("tie_word_embeddings", false)?,
            use_gate: self.bool_or("use_gate", true)?,
            gate_activation,
            allow_neg_eigval: self.bool_or("allow_neg_eigval", false)?,
            bos_token_id: token("bos_token_id")?,
            eos_token_id: token("eos_token_id")?,
        })
    }

    /// Every field is either understood or known not to matter for inference.
    fn check_known(&self) -> std::result::Result<(), String> {
        const USED: &[&str] = &[
            "model_type",
            "attn",
            "attnres_block_size",
            "use_short_conv",
            "conv_bias",
            "hidden_act",
            "output_gate_activation",
            "hidden_size",
            "num_hidden_layers",
            "num_heads",
            "num_v_heads",
            "head_dim",
            "expand_v",
            "conv_size",
            "norm_eps",
            "intermediate_size",
            "hidden_ratio",
            "vocab_size",
            "tie_word_embeddings",
            "use_gate",
            "allow_neg_eigval",
            "bos_token_id",
            "eos_token_id",
        ];
        let unknown: Vec<&str> = self
            .0
            .keys()
            .map(String::as_str)
            .filter(|k| {
                !k.starts_with('_') && !USED.contains(k) && !INERT_FIELDS.iter().any(|f| f.0 == *k)
            })
            .collect();
        if unknown.is_empty() {
            self.check_inert()
        } else {
            Err(format!(
                "unknown field(s) {}: this engine does not know what they change, so it \
                 refuses the model rather than run it wrongly",
                unknown.join(", ")
            ))
        }
    }

    fn check_inert(&self) -> std::result::Result<(), String> {
        for &(name, kind) in INERT_FIELDS {
            match self.0.get(name) {
                Some(v) if !kind.fits(v) => {
                    return Err(format!(
                        "{name} is {}; expected {} or null",
                        cut(&v.to_string()),
                        kind.expected()
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn require_null(&self, name: &str, why: &str) -> std::result::Result<(), String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(()),
            Some(v) => Err(format!("{name} is {}; {why}", cut(&v.to_string()))),
        }
    }

    fn bool_or(&self, name: &str, default: bool) -> std::result::Result<bool, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!(
                "{name} is {}; expected true or false",
                cut(&v.to_string())
            )),
        }
    }

    fn str_or(&self, name: &str, default: &str) -> std::result::Result<String, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(format!(
                "{name} is {}; expected a string",
                cut(&v.to_string())
            )),
        }
    }

    fn number_or(&self, name: &str, default: f64) -> std::result::Result<f64, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                format!(
                    "{name} is {}; expected a finite number",
                    cut(&v.to_string())
                )
            }),
        }
    }

    /// A positive whole dimension no larger than [`MAX_DIM`]; `default` when absent.
    fn dim(&self, name: &str, default: Option<usize>) -> std::result::Result<usize, String> {
        match (self.0.get(name), default) {
            (None | Some(Value::Null), Some(d)) => Ok(d),
            (None | Some(Value::Null), None) => Err(format!("{name} is missing")),
            (Some(v), _) => match v.as_u64() {
                Some(n) if (1..=MAX_DIM).contains(&n) => Ok(n as usize),
                _ => Err(format!(
                    "{name} is {}; expected a whole number from 1 to {MAX_DIM}",
                    cut(&v.to_string())
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fla_defaults_give_fla_hubs_1_3b_widths() {
        // fla-hub's gated_deltanet-1.3B: hidden 2048, 24 layers, 6 heads of 256, vocab
        // 32000, the rest fla's defaults: V = 512, MLP 5632 (int(2048·4·2/3) = 5461
        // rounded up to 256).
        let c = GdnConfig::fla_defaults(2048, 24, 6, 256, 32_000).unwrap();
        assert_eq!((c.value_heads, c.value_dim), (6, 512));
        assert_eq!((c.key_width(), c.value_width()), (1536, 3072));
        assert_eq!((c.intermediate_size, c.conv_size), (5632, 4));
        assert!(c.use_gate && !c.tie_word_embeddings && !c.allow_neg_eigval);
        assert_eq!(c.gate_activation, GateActivation::Swish);
        assert!(GdnConfig::fla_defaults(0, 24, 6, 256, 32_000)
            .unwrap_err()
            .contains("hidden_size"));
    }

    /// The fixture's config with `field` set to the JSON text `value`.
    fn with(field: &str, value: &str) -> std::result::Result<GdnConfig, String> {
        let text = include_str!("../../tests/fixtures/gdn-tiny/config.json");
        let mut fields: Map<String, Value> = serde_json::from_str(text).unwrap();
        fields.insert(field.into(), serde_json::from_str(value).unwrap());
        GdnConfig::parse(&Value::Object(fields).to_string())
    }

    #[test]
    fn an_epsilon_that_vanishes_in_f32_is_refused() {
        assert_eq!(with("norm_eps", "1e-5").unwrap().norm_eps, 1e-5);
        for bad in ["1e-300", "1e-40", "0", "-0.0", "-1e-6", "2", "1e308"] {
            let e = with("norm_eps", bad).unwrap_err();
            assert!(
                e.starts_with("norm_eps is") && e.contains("to 1"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn numbers_at_their_types_limits_are_refused_by_field_and_range() {
        let dims = [
            "hidden_size",
            "num_hidden_layers",
            "num_heads",
            "head_dim",
            "vocab_size",
            "conv_size",
            "intermediate_size",
            "num_v_heads",
        ];
        let limits = [
            "0",
            "-1",
            "2147483648",
            "9007199254740992",
            "18446744073709551616",
            "1e308",
            "-0.0",
            "1e-300",
            "4.5",
            "\"8\"",
            "true",
            "[4]",
            "{}",
        ];
        for field in dims {
            for v in limits {
                let e = with(field, v).unwrap_err();
                assert!(
                    e.starts_with(field) && e.contains(" to "),
                    "{field} = {v}: {e}"
                );
            }
        }
        for field in ["expand_v", "hidden_ratio"] {
            for v in ["0", "-1", "1e308", "-0.0", "1e-300", "\"2\"", "null"] {
                if v == "null" {
                    // null means fla's default (the fixture's MLP width comes from
                    // hidden_ratio, its intermediate_size being null).
                    assert!(with(field, v).is_ok(), "{field} = null");
                    continue;
                }
                let e = with(field, v).unwrap_err();
                assert!(e.starts_with(field), "{field} = {v}: {e}");
            }
        }
        // The product of two fields in range can still be too wide.
        let mut fields: Map<String, Value> =
            serde_json::from_str(include_str!("../../tests/fixtures/gdn-tiny/config.json"))
                .unwrap();
        fields.insert("num_heads".into(), 1024.into());
        fields.insert("head_dim".into(), 1024.into());
        let e = GdnConfig::parse(&Value::Object(fields).to_string()).unwrap_err();
        assert!(e.contains("num_heads · head_dim is 1048576"), "{e}");
    }

    #[test]
    fn a_tiny_hidden_ratio_cannot_give_an_empty_mlp() {
        let text = include_str!("../../tests/fixtures/gdn-tiny/config.json");
        let mut fields: Map<String, Value> = serde_json::from_str(text).unwrap();
        fields.insert("hidden_ratio".into(), serde_json::json!(1e-300));
        let e = GdnConfig::parse(&Value::Object(fields).to_string()).unwrap_err();
        assert!(
            e.contains("hidden_ratio is 1e-300") && e.contains("MLP of 0"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_duplicates_and_deep_nesting_are_errors() {
        let e = with("model_type", "7").unwrap_err();
        assert!(e.contains("model_type is 7"), "{e}");
        let e = with("use_cache", "3").unwrap_err();
        assert!(e.contains("use_cache is 3; expected true or false"), "{e}");
        let e = with("pad_token_id", "-1").unwrap_err();
        assert!(e.contains("pad_token_id is -1"), "{e}");
        let e = with("initializer_range", "\"x\"").unwrap_err();
        assert!(e.contains("initializer_range"), "{e}");
        assert!(with("_comment", "{\"anything\": [1]}").is_ok());
        let text = include_str!("../../tests/fixtures/gdn-tiny/config.json");
        // serde_json alone would keep the second value and run a 2-layer model.
        let twice = text.replacen('{', "{\"num_hidden_layers\": 2,", 1);
        assert!(serde_json::from_str::<Value>(&twice).is_ok());
        let e = GdnConfig::parse(&twice).unwrap_err();
        assert!(e.contains("\"num_hidden_layers\" appears twice"), "{e}");
        let deep = format!("{{\"_x\": {}", "[".repeat(200_000));
        let e = GdnConfig::parse(&deep).unwrap_err();
        assert!(e.contains("recursion limit"), "{e}");
    }
}
