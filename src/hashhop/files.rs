//! Reading HashHop files: `targets.json` (whole, it is the list of questions) and
//! `prompt.txt` (checked line by line as it streams past, in fixed memory).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::limits::cut;
use crate::memory_model::codec::{is_word_byte, MAX_CHARS};

/// One query of `targets.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The query hash: the first key of its chain.
    pub query: String,
    /// The expected answer: `[H_last]`, or with chain of thought `[H2, …, H_last]`.
    pub chain: Vec<String>,
}

/// Reads `targets.json`: a JSON object of query hash → answer string (`"H"` or
/// `"H2 = H3 = …"`), as Magic's `MultiHopSample.targets` dumped with `json.dump`.
/// Queries come back sorted by hash.
pub fn read_targets(path: impl AsRef<Path>) -> Result<Vec<Target>> {
    let path = path.as_ref();
    let bad = |problem: String| Error::File {
        path: path.to_path_buf(),
        problem,
    };
    let bytes =
        crate::input_file::read_bounded(path, "targets file", crate::input_file::TARGETS_JSON_MAX)?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "expected a JSON object mapping query hashes to answers: {e}"
            ))
        })?;
    if map.is_empty() {
        return Err(bad("no queries: the JSON object is empty".into()));
    }
    map.into_iter()
        .map(|(query, answer)| {
            let shown = cut(&query);
            check_hash(&query).map_err(|p| bad(format!("query `{shown}`: {p}")))?;
            let answer = answer.as_str().ok_or_else(|| {
                bad(format!(
                    "the answer for `{shown}` must be a string, found {}",
                    cut(&answer.to_string())
                ))
            })?;
            let unquoted = answer
                .strip_prefix('\'')
                .and_then(|a| a.strip_suffix('\''))
                .unwrap_or(answer);
            let chain: Vec<String> = unquoted.split('=').map(|h| h.trim().to_string()).collect();
            for h in &chain {
                check_hash(h).map_err(|p| {
                    bad(format!(
                        "the answer for `{shown}`, `{}`: expected `H` or `H2 = H3 = …`; {p}",
                        cut(answer)
                    ))
                })?;
            }
            Ok(Target { query, chain })
        })
        .collect()
}

/// A hash the memory model can store: 1..=16 bytes of `0-9 A-Z a-z _`.
fn check_hash(h: &str) -> std::result::Result<(), String> {
    if h.is_empty() || !h.bytes().all(is_word_byte) {
        return Err(format!(
            "`{}` is not a hash (letters, digits or _ expected)",
            cut(h)
        ));
    }
    if h.len() > MAX_CHARS {
        return Err(format!(
            "`{}` has {} characters; the built-in memory model stores hashes of at most {MAX_CHARS}",
            cut(h),
            h.len()
        ));
    }
    Ok(())
}

/// Longest prompt line accepted (two 16-character hashes need 38 bytes).
const MAX_LINE: usize = 256;

/// Checks `prompt.txt` as it streams by: every non-empty line must be `KEY = VALUE` or
/// `KEY = 'VALUE'`. Counts lines and quoted lines (the file's hop count is their
/// ratio) and notes which hashes named by the targets appear, keeping memory bounded by
/// the targets, never by the prompt.
pub struct PromptChecker {
    path: PathBuf,
    line: u64,
    buf: Vec<u8>,
    /// Pair lines and quoted pair lines.
    pub pairs: u64,
    /// Of `pairs`, the lines whose value is quoted: one per chain, its last hop.
    pub quoted: u64,
    /// Hash → (seen as a key, seen as a value), for hashes the targets name.
    wanted: HashMap<String, (bool, bool)>,
}

impl PromptChecker {
    /// A checker of the prompt at `path` (for messages) that looks out for the hashes
    /// `targets` name.
    pub fn new(path: &Path, targets: &[Target]) -> Self {
        let mut wanted = HashMap::new();
        for t in targets {
            wanted.insert(t.query.clone(), (false, false));
            for h in &t.chain {
                wanted.insert(h.clone(), (false, false));
            }
        }
        PromptChecker {
            path: path.to_path_buf(),
            line: 1,
            buf: Vec::with_capacity(MAX_LINE),
            pairs: 0,
            quoted: 0,
            wanted,
        }
    }

    /// The next part of the prompt.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        for &b in bytes {
            if b == b'\n' {
                self.check_line()?;
                self.line += 1;
                self.buf.clear();
            } else if self.buf.len() == MAX_LINE {
                return Err(self.error(format!(
                    "line longer than {MAX_LINE} bytes; expected `KEY = VALUE` or `KEY = 'VALUE'`"
                )));
            } else {
                self.buf.push(b);
            }
        }
        Ok(())
    }

    /// The end of the prompt.
    pub fn finish(&mut self) -> Result<()> {
        self.check_line()?;
        self.buf.clear();
        Ok(())
    }

    /// Fails if a query is not a key of the prompt, or an answer not a value of it.
    pub fn check_targets(&self, targets: &[Target], targets_path: &Path) -> Result<()> {
        let absent = |problem: String| Error::File {
            path: targets_path.to_path_buf(),
            problem,
        };
        let prompt = self.path.display();
        for t in targets {
            if !self.wanted.get(&t.query).is_some_and(|s| s.0) {
                return Err(absent(format!(
                    "query `{}` is not a key (left of `=`) of any line in {prompt}",
                    t.query
                )));
            }
            for h in &t.chain {
                if !self.wanted.get(h).is_some_and(|s| s.1) {
                    return Err(absent(format!(
                        "the answer to query `{}` names `{h}`, which is not a value (right of `=`) \
                         of any line in {prompt}",
                        t.query
                    )));
                }
            }
        }
        Ok(())
    }

    /// The hop count of a Magic file: every chain has `hops` lines, one of them quoted.
    pub fn hops(&self) -> Option<usize> {
        (self.quoted > 0 && self.pairs.is_multiple_of(self.quoted))
            .then(|| (self.pairs / self.quoted) as usize)
    }

    fn check_line(&mut self) -> Result<()> {
        let mut line = self.buf.as_slice();
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(());
        }
        let Some((key, value, quoted)) = parse_pair(line) else {
            let shown: String = String::from_utf8_lossy(line).chars().take(60).collect();
            return Err(self.error(format!(
                "expected `KEY = VALUE` or `KEY = 'VALUE'` (hashes of letters, digits or _), found `{shown}`"
            )));
        };
        for h in [key, value] {
            if h.len() > MAX_CHARS {
                return Err(self.error(format!(
                    "hash `{}` has {} characters; the built-in memory model stores hashes of at most {MAX_CHARS}",
                    String::from_utf8_lossy(h),
                    h.len()
                )));
            }
        }
        self.pairs += 1;
        self.quoted += quoted as u64;
        // Hashes are ASCII here (parse_pair accepts word bytes only).
        if let Some(s) = self.wanted.get_mut(std::str::from_utf8(key).unwrap_or("")) {
            s.0 = true;
        }
        if let Some(s) = self
            .wanted
            .get_mut(std::str::from_utf8(value).unwrap_or(""))
        {
            s.1 = true;
        }
        Ok(())
    }

    fn error(&self, problem: String) -> Error {
        Error::File {
            path: self.path.clone(),
            problem: format!("line {}: {problem}", self.line),
        }
    }
}

/// `KEY = VALUE` or `KEY = 'VALUE'`, spaces around `=` optional.
fn parse_pair(line: &[u8]) -> Option<(&[u8], &[u8], bool)> {
    let word_end = |s: &[u8]| s.iter().position(|&b| !is_word_byte(b)).unwrap_or(s.len());
    let trim = |s: &[u8]| -> usize { s.iter().take_while(|&&b| b == b' ' || b == b'\t').count() };
    let mut rest = &line[trim(line)..];
    let k = word_end(rest);
    let key = &rest[..k];
    rest = &rest[k..];
    rest = &rest[trim(rest)..];
    rest = rest.strip_prefix(b"=")?;
    rest = &rest[trim(rest)..];
    let quoted = rest.first() == Some(&b'\'');
    if quoted {
        rest = &rest[1..];
    }
    let v = word_end(rest);
    let value = &rest[..v];
    rest = &rest[v..];
    if quoted {
        rest = rest.strip_prefix(b"'")?;
    }
    rest = &rest[trim(rest)..];
    (!key.is_empty() && !value.is_empty() && rest.is_empty()).then_some((key, value, quoted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse() {
        assert_eq!(
            parse_pair(b"ab = cd"),
            Some((&b"ab"[..], &b"cd"[..], false))
        );
        assert_eq!(
            parse_pair(b"ab = 'cd'"),
            Some((&b"ab"[..], &b"cd"[..], true))
        );
        assert_eq!(
            parse_pair(b"ab='cd' "),
            Some((&b"ab"[..], &b"cd"[..], true))
        );
        for bad in [
            &b"ab = "[..],
            b"= cd",
            b"ab cd",
            b"ab = 'cd",
            b"ab = cd'",
            b"ab = cd ef",
            b"a-b = cd",
        ] {
            assert_eq!(parse_pair(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
