//! A retrieval loop on a trained model: read a long document once, keep its state,
//! and answer each question from a fresh copy of that state (so questions never see
//! each other). `cargo run --release --example lm_chat -- MODEL_DIR [DOCUMENT] [TOKENS]`,
//! then type questions, one per line.
//!
//! With no terminal input it answers one built-in question and exits, so it also runs
//! unattended (CI runs it on the fixture model).

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
    let questions: Box<dyn Iterator<Item = String>> = if interactive {
        Box::new(stdin.lock().lines().map_while(Result::ok))
    } else {
        Box::new(std::iter::once("To start Vim,".to_string()))
    };
    let mut out = std::io::stdout().lock();
    for question in questions {
        let mut answer = model.resume(after_document.clone())?;
        let mut sampler = Sampler::new(Sampling::default())?;
        let ids = answer.generate(
            &tokenizer.encode(&question, false)?,
            answer_tokens,
            &mut sampler,
        )?;
        writeln!(out, "{question}{}", tokenizer.decode(&ids)?)?;
    }
    Ok(())
}
