//! A SentencePiece `precompiled_charsmap` (the `Precompiled` normalizer's table),
//! checked before the tokenizers crate reads it: that crate reserves the trie's
//! declared size before reading it (a four-byte table asks for 8 GB) and indexes the
//! trie and its strings unchecked on every text (a bad table panics mid-run). The
//! check walks the trie as the crate's lookups do, so every lookup it can make stays
//! in bounds, and measures how much longer a replacement is than what it replaces.

/// The most bytes a lookup key may have: the crate looks up a grapheme of fewer than
/// 6 bytes whole, else each character (at most 4 bytes).
const MAX_KEY: usize = 5;

/// Units of a trie: 1 MiB of table, six times SentencePiece's NFKC table (T5's: 44,288
/// units), and a bound on the walk's work (255 lookups a unit).
const MAX_UNITS: usize = 1 << 18;

/// Checks the base64 text of a `precompiled_charsmap`; returns the most bytes of
/// output one byte of input can become through it.
pub(crate) fn check(base64: &str) -> Result<u64, String> {
    let table = decode_base64(base64).ok_or("not valid base64")?;
    let (size, rest) = table
        .split_first_chunk::<4>()
        .ok_or("shorter than its 4-byte header")?;
    // As the crate reads it: `size / 4` units, then the strings.
    let units = u32::from_le_bytes(*size) as usize / 4;
    if units > MAX_UNITS {
        return Err(format!(
            "declares a trie of {units} units, more than {MAX_UNITS}"
        ));
    }
    if units == 0 || units > rest.len() / 4 {
        return Err(format!(
            "declares a trie of {units} units, but holds {} bytes",
            rest.len()
        ));
    }
    let (trie, strings) = rest.split_at(4 * units);
    let trie: Vec<usize> = trie
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect();
    let strings = std::str::from_utf8(strings).map_err(|_| "its strings are not UTF-8")?;
    walk(&trie, strings.as_bytes())
}

fn has_leaf(u: usize) -> bool {
    (u >> 8) & 1 == 1
}
fn value(u: usize) -> usize {
    u & ((1 << 31) - 1)
}
fn label(u: usize) -> usize {
    u & ((1 << 31) | 0xFF)
}
fn offset(u: usize) -> usize {
    (u >> 10) << ((u & (1 << 9)) >> 6)
}

/// Every node a key of at most [`MAX_KEY`] bytes reaches, breadth first (so a node is
/// seen first at its shortest key, the one that makes the largest ratio).
fn walk(trie: &[usize], strings: &[u8]) -> Result<u64, String> {
    let outside = || "its trie points outside the table".to_string();
    let mut seen = std::collections::HashSet::new();
    let mut level = vec![offset(trie[0])];
    let mut growth = 1u64;
    for depth in 1..=MAX_KEY {
        let mut next = Vec::new();
        for &node in &level {
            // The crate reads the unit at `node ^ c` before comparing its label.
            for c in 1..=255usize {
                let at = node ^ c;
                let unit = *trie.get(at).ok_or_else(outside)?;
                if label(unit) != c {
                    continue;
                }
                let child = at ^ offset(unit);
                if has_leaf(unit) {
                    let start = value(*trie.get(child).ok_or_else(outside)?);
                    let tail = strings.get(start..).ok_or_else(outside)?;
                    if tail.first().is_some_and(|&b| (b as i8) < -0x40) {
                        return Err("a replacement starts inside a character".into());
                    }
                    let len = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
                    growth = growth.max(len.div_ceil(depth) as u64);
                }
                if depth < MAX_KEY && seen.insert(child) {
                    next.push(child);
                }
            }
        }
        level = next;
    }
    Ok(growth)
}

/// Standard base64 with `=` padding, as the tables are written.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let pad = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return None;
    }
    let sextet = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let body = &bytes[..bytes.len() - pad];
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for &b in chunk {
            n = n << 6 | sextet(b)?;
        }
        // A padded quad's sextets carry whole bytes only: 3 of them 2, 2 of them 1.
        let bits = 6 * chunk.len();
        n <<= 24 - bits;
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..bits / 8]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in bytes.chunks(3) {
            let n = c.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - c.len()));
            for i in 0..4 {
                s.push(if i <= c.len() {
                    A[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        s
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..8 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 77 + 5) as u8).collect();
            assert_eq!(decode_base64(&b64(&bytes)).unwrap(), bytes, "{n}");
        }
        assert!(decode_base64("abc").is_none());
        assert!(decode_base64("a===").is_none());
        assert!(decode_base64("ab!=").is_none());
    }

    #[test]
    fn a_huge_declared_trie_is_refused_before_anything_is_allocated() {
        let e = check(&b64(&[0xFC, 0xFF, 0xFF, 0xFF])).unwrap_err();
        assert!(e.contains("declares a trie"), "{e}");
    }

    /// A table that replaces `a` by `xyz` (at `at` in its strings, 0 for a good
    /// table): the root's children at 256 ^ byte, the leaf of `a` pointing at the unit
    /// that holds the string's offset.
    fn a_to_xyz(at: u32) -> Vec<u8> {
        let mut trie = vec![0u32; 512];
        trie[0] = 256 << 10;
        trie[256 ^ 97] = 97 | 1 << 8 | 1 << 10;
        trie[(256 ^ 97) ^ 1] = at;
        let mut table = 2048u32.to_le_bytes().to_vec();
        table.extend(trie.iter().flat_map(|u| u.to_le_bytes()));
        table.extend_from_slice(b"xyz\0");
        table
    }

    #[test]
    fn growth_is_the_longest_replacement_per_key_byte() {
        assert_eq!(check(&b64(&a_to_xyz(0))), Ok(3));
        assert_eq!(check(&b64(&a_to_xyz(1))), Ok(2));
        assert!(check(&b64(&a_to_xyz(10))).unwrap_err().contains("outside"));
    }

    #[test]
    fn a_trie_pointing_outside_is_refused() {
        let e = check(&b64(&[4, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])).unwrap_err();
        assert!(e.contains("outside"), "{e}");
    }
}
