//! Writes a synthetic text context of about N tokens for `ltm-engine run` (see
//! `ltm_engine::synthetic`). `cargo run --release --example make_context -- OUT.txt TOKENS [SEED]`

fn main() -> ltm_engine::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: make_context OUT.txt TOKENS [SEED]");
        std::process::exit(2);
    }
    let tokens: u64 = args[2].parse().expect("TOKENS must be a whole number");
    let seed: u64 = args
        .get(3)
        .map_or(1, |s| s.parse().expect("SEED must be a whole number"));
    let written =
        ltm_engine::synthetic::write_text_context(std::path::Path::new(&args[1]), tokens, seed)?;
    println!("wrote {written} tokens to {}", args[1]);
    Ok(())
}
