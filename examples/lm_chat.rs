//! A retrieval loop on a trained model: read a long document once, keep its state,
//! and answer each question from a fresh copy of that state (so questions never see
//! each other). `cargo run --release --example lm_chat -- MODEL_DIR [DOCUMENT] [TOKENS]`:
//! MODEL_DIR a Gated DeltaNet checkpoint directory, DOCUMENT a text file (default: a
//! built-in sentence about Vim), TOKENS the tokens generated per answer (default 30).
//! Questions are read from stdin, one per line, typed or piped (`echo "To start Vim," |
//! …`); each answer is the question continued by the model, greedy.
//!
//! When stdin gives no question (`</dev/null`, an empty pipe) it answers one built-in
//! question and exits, so it also runs unattended (CI runs it on the fixture model).

use std::io::{BufRead, IsTerminal, Write};

use ltm_engine::lm::{LanguageModel, Logits, Sampler, Sampling};
use ltm_engine::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: lm_chat MODEL_DIR [DOCUMENT] [TOKENS]")?;
    let document = args.next();
    let answer_tokens: usize = args.next().map_or(Ok(30), |s| s.parse())?;

    let model = LanguageModel::load(&dir, Device::Auto)?;
    let tokenizer = model.require_tokenizer()?;
    let mut session = model.session()?;
    let text = match &document {
        Some(path) => std::fs::read_to_string(path)?,
        None => "Vim is a text editor. To start Vim, enter this command: gvim file.txt\n".into(),
    };
    // The document is read once; its state is the whole of what is kept of it.
    session.feed(&tokenizer.encode(&text, true)?, Logits::None)?;
    let after_document = session.snapshot()?;
    eprintln!(
        "read {} tokens into {} KiB of state",
        session.tokens(),
        model.state_bytes() / 1024
    );

    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut out = std::io::stdout().lock();
    let mut answer = |question: &str| -> Result<(), Box<dyn std::error::Error>> {
        let mut answer = model.resume(after_document.clone())?;
        let mut sampler = Sampler::new(Sampling::default())?;
        let ids = answer.generate(
            &tokenizer.encode(question, false)?,
            answer_tokens,
            &mut sampler,
        )?;
        writeln!(out, "{question}{}", tokenizer.decode(&ids)?)?;
        out.flush()?;
        Ok(())
    };
    let mut asked = 0;
    for line in stdin.lock().lines() {
        let question = line?;
        if question.trim().is_empty() {
            continue;
        }
        answer(&question)?;
        asked += 1;
    }
    if asked == 0 && !interactive {
        answer("To start Vim,")?;
    }
    Ok(())
}
