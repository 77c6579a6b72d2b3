//! What a `tokenizer.json` may hold, checked on its JSON before the tokenizers crate
//! builds anything of it. The crate trusts its file: a 1 MB added token, a template of
//! a million ids, a normalizer that replaces each letter by a kilobyte or a charsmap
//! that declares an 8 GB trie all load, then hang, abort or exhaust memory on the
//! first text. Here every size is bounded before the crate sees it, and so is what
//! the normalizer can make of one byte of text, so a window's memory stays a bounded
//! multiple of its bytes whatever the file says.

use serde_json::{Map, Value};

use super::charsmap;

/// Bytes of any string but the vocabulary's and a charsmap's (both bounded by the file
/// and the model's vocab_size): an added token, a pattern, a replacement, a template
/// piece. Real files have a few dozen at most.
pub const MAX_STRING: usize = 1024;
/// Elements of an array or keys of an object outside the vocabulary, merges and added
/// tokens (bounded by the model's vocab_size): normalizers in a sequence, pieces or ids
/// of a template.
pub const MAX_ITEMS: usize = 256;
/// Bytes of normalized text one byte of input may become. Real normalizers stay well
/// under it: NFKC's longest expansion (U+FDFA) is 11 bytes a byte, a SentencePiece
/// charsmap about as much, Llama's `Prepend` and `Replace(" ", "▁")` 12 together.
pub const MAX_GROWTH: u64 = 64;
/// Nesting of the JSON (a sequence of sequences of normalizers, …).
pub const MAX_DEPTH: usize = 24;

/// Checks the parsed `tokenizer.json` for a model of `vocab_size` embedding rows.
pub(crate) fn check(json: &Value, vocab_size: usize) -> Result<(), String> {
    let top = json.as_object().ok_or("not a JSON object")?;
    // The engine reads every token of a window and feeds every id it gets: a cut
    // would drop text silently, pads would be fed and scored as text.
    for (field, does) in [
        ("truncation", "cut every text to its max_length"),
        (
            "padding",
            "add pad tokens to every text, fed and scored as if they were text",
        ),
    ] {
        if top.get(field).is_some_and(|v| !v.is_null()) {
            return Err(format!(
                "`{field}` is set: it would {does}; set it to null (the engine reads every \
                 token of the text itself)"
            ));
        }
    }
    for (key, value) in top {
        match key.as_str() {
            "model" => check_model(value, vocab_size)?,
            "added_tokens" => {
                let tokens = value.as_array().ok_or("`added_tokens` is not an array")?;
                if tokens.len() > vocab_size {
                    return Err(format!(
                        "`added_tokens` has {} tokens, more than the model's vocab_size of \
                         {vocab_size}",
                        tokens.len()
                    ));
                }
                for (i, t) in tokens.iter().enumerate() {
                    let path = format!("added_tokens[{i}]");
                    walk(t, &path, 1)?;
                    if t.get("content").and_then(Value::as_str) == Some("") {
                        return Err(format!("`{path}.content` is empty"));
                    }
                }
            }
            _ => walk(value, key, 1)?,
        }
    }
    let growth = match top.get("normalizer") {
        None | Some(Value::Null) => 1,
        Some(n) => normalizer_growth(n, "normalizer")?,
    };
    if growth > MAX_GROWTH {
        return Err(format!(
            "`normalizer` can turn one byte of text into {growth} bytes, more than {MAX_GROWTH}: \
             a window's memory would be that many times its size"
        ));
    }
    Ok(())
}

/// Sizes and nesting of everything outside the vocabulary, merges and added tokens.
fn walk(v: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("`{path}` is nested more than {MAX_DEPTH} deep"));
    }
    match v {
        Value::String(s) if s.len() > MAX_STRING && !path.ends_with("precompiled_charsmap") => {
            Err(format!(
                "`{path}` is a string of {} bytes, more than {MAX_STRING}",
                s.len()
            ))
        }
        Value::Array(items) => {
            if items.len() > MAX_ITEMS {
                return Err(format!(
                    "`{path}` has {} elements, more than {MAX_ITEMS}",
                    items.len()
                ));
            }
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), depth + 1)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            if map.len() > MAX_ITEMS {
                return Err(format!(
                    "`{path}` has {} keys, more than {MAX_ITEMS}",
                    map.len()
                ));
            }
            for (key, item) in map {
                if key.len() > MAX_STRING {
                    return Err(format!(
                        "`{path}` has a key of {} bytes, more than {MAX_STRING}",
                        key.len()
                    ));
                }
                walk(item, &format!("{path}.{key}"), depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Merges per token of the vocabulary: each makes a token, and files converted from
/// tiktoken reach some tokens by several (Llama 3: 280,147 merges for 128,000 tokens).
pub const MERGES_PER_TOKEN: usize = 16;

/// The model: its vocabulary at most the model's embedding rows, at most
/// [`MERGES_PER_TOKEN`] merges a token, the rest as [`walk`] bounds it.
fn check_model(model: &Value, vocab_size: usize) -> Result<(), String> {
    let map = model.as_object().ok_or("`model` is not an object")?;
    let mut entries = 0;
    for (key, value) in map {
        let path = format!("model.{key}");
        match key.as_str() {
            "vocab" => {
                // Tokens are keys (BPE, WordPiece, WordLevel) or `[token, score]` (Unigram).
                let tokens: Vec<&str> = match value {
                    Value::Object(m) => m.keys().map(String::as_str).collect(),
                    Value::Array(a) => a.iter().filter_map(|e| e.get(0)?.as_str()).collect(),
                    _ => Vec::new(),
                };
                entries = match value {
                    Value::Object(m) => m.len(),
                    Value::Array(a) => a.len(),
                    _ => 0,
                };
                if let Some(long) = tokens.iter().find(|t| t.len() > MAX_STRING) {
                    return Err(format!(
                        "`model.vocab` has a token of {} bytes, more than {MAX_STRING}",
                        long.len()
                    ));
                }
                if entries > vocab_size {
                    return Err(format!(
                        "`model.vocab` has {entries} tokens, more than the model's vocab_size \
                         of {vocab_size}"
                    ));
                }
            }
            "merges" => {}
            _ => walk(value, &path, 2)?,
        }
    }
    let merges = map
        .get("merges")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if merges > MERGES_PER_TOKEN * entries {
        return Err(format!(
            "`model.merges` has {merges} merges, more than {MERGES_PER_TOKEN} for each of the \
             {entries} tokens of `model.vocab`"
        ));
    }
    Ok(())
}

/// Bytes of output a byte of input can become through normalizer `n`: a bound from
/// each kind's definition, multiplied along a sequence.
fn normalizer_growth(n: &Value, path: &str) -> Result<u64, String> {
    let map: &Map<String, Value> = n
        .as_object()
        .ok_or_else(|| format!("`{path}` is not an object"))?;
    // The crate also reads untagged normalizers of files older than tokenizers 0.10;
    // without a type the kind, and so its growth, would be a guess.
    let kind = map
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{path}` has no `type`"))?;
    let text = |field: &str| -> Result<&str, String> {
        map.get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`{path}.{field}` is not a string"))
    };
    Ok(match kind {
        "Sequence" => {
            let parts = map
                .get("normalizers")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("`{path}.normalizers` is not an array"))?;
            let mut growth = 1u64;
            for (i, part) in parts.iter().enumerate() {
                let g = normalizer_growth(part, &format!("{path}.normalizers[{i}]"))?;
                growth = growth.saturating_mul(g);
            }
            growth
        }
        "Replace" => {
            let content = text("content")?.len() as u64;
            let pattern = map.get("pattern").and_then(Value::as_object);
            match pattern
                .and_then(|p| p.get("String"))
                .and_then(Value::as_str)
            {
                // Each match of a literal gives way to `content`.
                Some(p) if !p.is_empty() => content.div_ceil(p.len() as u64).max(1),
                // A regex may match the empty text before every character.
                _ => 1 + content,
            }
        }
        // Once before each piece of text between added tokens, which may be one byte.
        "Prepend" => 1 + text("prepend")?.len() as u64,
        "Precompiled" => charsmap::check(text("precompiled_charsmap")?)
            .map_err(|e| format!("`{path}.precompiled_charsmap`: {e}"))?,
        "NFKC" | "NFKD" => 11,
        "NFC" | "NFD" => 3,
        // Unicode lower case is at most 3 bytes for 2 (`İ`); BERT's also spaces out CJK.
        "Lowercase" => 2,
        "BertNormalizer" => 4,
        "ByteLevel" => 2,
        "Strip" | "StripAccents" | "Nmt" => 1,
        other => return Err(format!("`{path}` is of an unknown type {other:?}")),
    })
}
