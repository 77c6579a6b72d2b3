//! A sequence's state and workspace on one device, behind one interface: a
//! [`super::session::ModelSession`] holds one runner and never asks which device it is.

use crate::error::{Error, Result};

use super::model::LanguageModel;
use super::sample::Sampler;
use super::session::Logits;
use super::state::ModelState;
use super::trace::TraceHook;

/// What a session asks of the device its sequence runs on.
pub(crate) trait Runner<'m> {
    /// Tokens fed so far.
    fn tokens(&self) -> u64;
    /// Every block over `ids` (one window, in the vocabulary); returns the logits asked
    /// for. `decode` runs the memories token by token (generation).
    fn forward(&mut self, ids: &[u32], want: Logits, decode: bool) -> Result<&[f32]>;
    /// Feeds `ids` and appends the negative log-likelihood of each that has a
    /// prediction: `ids[0]` from the state before (when a token came before), then
    /// each from the row before it.
    fn forward_scored(&mut self, ids: &[u32], nll: &mut Vec<f64>) -> Result<()>;
    /// The logits after the last token fed; `None` before any.
    fn next_logits(&mut self) -> Result<Option<&[f32]>>;
    /// The whole state on the host; the sequence goes on.
    fn snapshot(&self) -> Result<ModelState>;
    /// Ends the sequence and hands its state back.
    fn into_state(self: Box<Self>) -> Result<ModelState>;
    /// Sets (or clears) the hook that sees every traced stage.
    fn set_trace(&mut self, hook: Option<TraceHook<'m>>);
    /// Whether this device chooses tokens itself (only the id comes back).
    fn picks(&self) -> bool {
        false
    }
    /// The next token after the last one fed, chosen on the device.
    fn next_pick(&mut self, _sampler: &mut Sampler) -> Result<Option<u32>> {
        Err(no_sampler())
    }
    /// Feeds `token` and chooses the next one on the device.
    fn step_pick(&mut self, _token: u32, _sampler: &mut Sampler) -> Result<u32> {
        Err(no_sampler())
    }
}

fn no_sampler() -> Error {
    Error::Device("this device has no sampler: tokens are chosen on the host".into())
}

/// A model's weights placed on a device, where its sequences run whole: the model
/// holds one where its backend is a device, and asks it for runners.
pub(crate) trait Placement: Send + Sync {
    /// The sequence in `state` (checked against `model`) on this device.
    fn open<'m>(
        &'m self,
        model: &'m LanguageModel,
        state: ModelState,
    ) -> Result<Box<dyn Runner<'m> + 'm>>;
    /// Itself, for the device's own accessors ([`LanguageModel::device_model`]).
    #[cfg(feature = "cuda")]
    fn as_any(&self) -> &dyn std::any::Any;
}
