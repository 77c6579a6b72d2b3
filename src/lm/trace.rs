//! The stages of the forward a trace hook sees, the same on every device (for checking
//! one implementation of the forward against another, stage by stage).

/// A point in the forward where a trace hook ([`ModelSession::set_trace`]) sees the
/// values; each is `[rows, width]` row-major for the window's rows unless it says so.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceStage {
    /// The residual stream entering a layer (after the embedding for layer 0).
    Residual,
    /// `attn_norm` output (in_proj's input).
    AttnNorm,
    /// in_proj output `[rows, in_proj_width]`.
    Proj,
    /// The layer's conv cache before the window, `[channels, W]`.
    ConvCacheBefore,
    /// The conv cache after the window.
    ConvCacheAfter,
    /// The memory's q input `[rows, HV·K]` (l2-normalised, repeated per value head).
    MemQ,
    /// The memory's k input.
    MemK,
    /// The memory's v input `[rows, HV·V]`.
    MemV,
    /// β `[rows, HV]`.
    Beta,
    /// g `[rows, HV]`.
    Gate,
    /// The memory's output `[rows, HV·V]`.
    MemOut,
    /// The gated RMSNorm's output (o_proj's input).
    GatedNorm,
    /// The residual stream after o_proj's add.
    ResidualMid,
    /// `mlp_norm` output.
    MlpNorm,
    /// gate_up output `[rows, 2·I]`.
    Mlp,
    /// SwiGLU output `[rows, I]`.
    Act,
    /// The residual stream after the last layer (layer index = number of layers).
    ResidualOut,
    /// The final norm's output (rows of the logits asked for; layer = layers).
    FinalNorm,
}

/// A hook that sees each traced stage: (stage, layer, values).
#[doc(hidden)]
pub type TraceHook<'m> = Box<dyn FnMut(TraceStage, usize, &[f32]) + 'm>;
