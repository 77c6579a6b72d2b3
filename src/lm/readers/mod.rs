//! Readers: one module per `model_type` a `config.json` may name. Each knows or refuses
//! every field of its config by name, describes the model as a [`ModelDesc`], and maps
//! the checkpoint's tensor names onto the description's weights. Everything after a
//! reader (loading, the forward, every device) works from the description alone.

pub mod gated_deltanet;

use super::block::BlockWeights;
use super::desc::ModelDesc;

/// A tensor the checkpoint must hold: its name and shape.
pub type Tensor = (String, Vec<usize>);

/// One block's tensors, field by field: several where the loader stacks them into
/// one matrix (or one vector of conv taps), in stacking order.
pub type BlockTensors = BlockWeights<Vec<Tensor>, Vec<Tensor>>;

/// A model's description and where its weights are in the checkpoint.
pub trait Reader {
    /// The model as data.
    fn desc(&self) -> ModelDesc;
    /// The embedding matrix `[vocab, D]`.
    fn embeddings(&self) -> Tensor;
    /// The tensors of block `layer`.
    fn block(&self, layer: usize) -> BlockTensors;
    /// The final norm `[D]`.
    fn final_norm(&self) -> Tensor;
    /// The output head `[vocab, D]`; `None` when the head is the embedding matrix.
    fn head(&self) -> Option<Tensor>;
    /// Blocks in the stack.
    fn layers(&self) -> usize;
}

/// Every tensor `reader` names, in checkpoint order, one at a time: a config's layer
/// count comes from a file, and the list is checked against the headers as it is made,
/// so a config asking for a million layers fails at the first one the files lack
/// instead of first listing them.
pub fn tensors<'r>(reader: &'r dyn Reader) -> impl Iterator<Item = Tensor> + 'r {
    let tail = [Some(reader.final_norm()), reader.head()];
    std::iter::once(reader.embeddings())
        .chain((0..reader.layers()).flat_map(move |l| {
            // Checkpoint order: the fields' order, each field's parts in stacking order.
            let parts: Vec<Tensor> = reader
                .block(l)
                .in_order()
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            parts
        }))
        .chain(tail.into_iter().flatten())
}
