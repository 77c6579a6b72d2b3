//! The forward, written once: embed → blocks (a range of them) → final norm → head,
//! over [`Ops`], the operations each device implements on its own buffers. The order
//! of a block's operations, where its norms and residual adds sit, and which stages a
//! trace hook sees are decided here and nowhere else; what differs between models is
//! read off the [`ModelDesc`].

use std::ops::Range;

use crate::error::Result;

use super::desc::{Block, ChannelMixer, GatedDeltaNet, ModelDesc, Norm, TokenMixer};
use super::trace::TraceStage;

/// A window's activations, named so that each device maps them onto its own buffers
/// (one device may give several the same buffer where no operation reads one while
/// writing another).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `[rows, D]` f32: the residual stream.
    Residual,
    /// `[rows, D]`: a norm's output, the next product's input.
    Normed,
    /// `[rows, in_proj_width]` f32: the token mixer's stacked projection.
    Proj,
    /// `[rows, HV·V]`: the token mixer's output before its output projection.
    Mixed,
    /// `[rows, 2·I]` f32: the MLP's stacked gate and up projections.
    Mlp,
    /// `[rows, I]`: the MLP's activation, the down projection's input.
    Act,
}

/// A block's large matrices, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matrix {
    /// The token mixer's stacked input projection.
    InProj,
    /// The token mixer's output projection.
    OProj,
    /// The MLP's stacked gate and up projections.
    GateUp,
    /// The MLP's down projection.
    Down,
}

/// Which norm weight a norm applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormAt {
    /// Block `layer`'s norm before its token mixer.
    Mixer(usize),
    /// Block `layer`'s norm before its channel mixer.
    Channel(usize),
    /// The final norm before the head.
    Final,
}

/// Which rows a norm and the head run over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Every row of the window.
    All,
    /// The window's last row.
    Last,
    /// The window's first `n` rows (scoring: the last row predicts past the window).
    Leading(usize),
    /// The sequence's last hidden vector, kept between windows (the next token's
    /// logits before any window of this call).
    LastHidden,
}

/// A product `to (+)= from · wᵀ` of `rows × in_dim` by `[out_dim, in_dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Product {
    /// Block index.
    pub layer: usize,
    /// Which of its matrices.
    pub matrix: Matrix,
    /// Input activation.
    pub from: Act,
    /// Output activation.
    pub to: Act,
    /// Columns of the input.
    pub in_dim: usize,
    /// Columns of the output.
    pub out_dim: usize,
    /// Add into `to` (a residual add) rather than overwrite it.
    pub accumulate: bool,
}

/// The operations of the forward on one device, over a window of rows set by
/// [`Ops::embed`]. Each reads and writes the device's own buffers; nothing comes back
/// to the caller but errors.
pub trait Ops {
    /// `Residual ← embeddings[ids]`: the window is these rows.
    fn embed(&mut self, ids: &[u32]) -> Result<()>;
    /// `Normed ← rms_norm(Residual)` with the weight at `at` (whose form the loader has
    /// folded in), over `rows` (every row inside the blocks). The final norm also
    /// sizes what the head writes.
    fn norm(&mut self, at: NormAt, norm: &Norm, rows: Rows) -> Result<()>;
    /// One matrix product.
    fn linear(&mut self, p: Product) -> Result<()>;
    /// `Proj → Mixed`: the short convolution with its l2-norms and gates (β, decay),
    /// block `layer`'s memory, and the gated per-head norm. One operation, because a
    /// device may fuse them around its memory (CUDA writes the memory's inputs straight
    /// into its window); it traces the stages between them itself. `decode` runs the
    /// memory token by token instead of chunked.
    fn gated_delta_rule(&mut self, layer: usize, mixer: &GatedDeltaNet, decode: bool)
        -> Result<()>;
    /// `Act ← silu(gate) · up` of `Mlp`.
    fn swiglu(&mut self, intermediate: usize) -> Result<()>;
    /// The blocks are done: the last row of `Residual` is the sequence's last hidden
    /// vector, and the window's rows count as fed.
    fn end_window(&mut self) -> Result<()>;
    /// `logits ← Normed · headᵀ` over `rows` (those the final norm ran over).
    fn head(&mut self, rows: Rows) -> Result<()>;
    /// Shows `act` to the trace hook, if one is set, as `stage` of block `layer`.
    fn trace(&mut self, stage: TraceStage, layer: usize, act: Act);
}

/// The window's rows through `blocks` of `desc` (a range, so that a stage of a pipeline
/// may hold some of them): `Residual` in, `Residual` out.
pub fn layers<O: Ops + ?Sized>(
    ops: &mut O,
    desc: &ModelDesc,
    blocks: Range<usize>,
    decode: bool,
) -> Result<()> {
    for l in blocks {
        block(ops, desc.hidden_size, l, &desc.blocks[l], decode)?;
    }
    Ok(())
}

/// One pre-norm block.
fn block<O: Ops + ?Sized>(ops: &mut O, d: usize, l: usize, b: &Block, decode: bool) -> Result<()> {
    let project = |matrix, from, to, in_dim, out_dim, accumulate| Product {
        layer: l,
        matrix,
        from,
        to,
        in_dim,
        out_dim,
        accumulate,
    };
    ops.trace(TraceStage::Residual, l, Act::Residual);
    ops.norm(NormAt::Mixer(l), &b.mixer_norm, Rows::All)?;
    ops.trace(TraceStage::AttnNorm, l, Act::Normed);
    match &b.token_mixer {
        TokenMixer::GatedDeltaNet(m) => {
            ops.linear(project(
                Matrix::InProj,
                Act::Normed,
                Act::Proj,
                d,
                m.in_proj_width(),
                false,
            ))?;
            ops.trace(TraceStage::Proj, l, Act::Proj);
            ops.gated_delta_rule(l, m, decode)?;
            ops.trace(TraceStage::GatedNorm, l, Act::Mixed);
            ops.linear(project(
                Matrix::OProj,
                Act::Mixed,
                Act::Residual,
                m.value_width(),
                d,
                true,
            ))?;
        }
    }
    ops.trace(TraceStage::ResidualMid, l, Act::Residual);
    ops.norm(NormAt::Channel(l), &b.channel_norm, Rows::All)?;
    ops.trace(TraceStage::MlpNorm, l, Act::Normed);
    match b.channel_mixer {
        ChannelMixer::SwiGlu { intermediate } => {
            ops.linear(project(
                Matrix::GateUp,
                Act::Normed,
                Act::Mlp,
                d,
                2 * intermediate,
                false,
            ))?;
            ops.trace(TraceStage::Mlp, l, Act::Mlp);
            ops.swiglu(intermediate)?;
            ops.trace(TraceStage::Act, l, Act::Act);
            ops.linear(project(
                Matrix::Down,
                Act::Act,
                Act::Residual,
                intermediate,
                d,
                true,
            ))?;
        }
    }
    Ok(())
}

/// A whole window: embed, every block, then the head over `rows` if asked for.
pub fn window<O: Ops + ?Sized>(
    ops: &mut O,
    desc: &ModelDesc,
    ids: &[u32],
    rows: Option<Rows>,
    decode: bool,
) -> Result<()> {
    ops.embed(ids)?;
    let n = desc.blocks.len();
    layers(ops, desc, 0..n, decode)?;
    ops.trace(TraceStage::ResidualOut, n, Act::Residual);
    ops.end_window()?;
    if let Some(rows) = rows {
        head(ops, desc, rows)?;
    }
    Ok(())
}

/// The final norm and the head over `rows`.
pub fn head<O: Ops + ?Sized>(ops: &mut O, desc: &ModelDesc, rows: Rows) -> Result<()> {
    ops.norm(NormAt::Final, &desc.final_norm, rows)?;
    ops.trace(TraceStage::FinalNorm, desc.blocks.len(), Act::Normed);
    ops.head(rows)
}
