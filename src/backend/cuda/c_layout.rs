//! Reads the layout of a parameter struct off a kernel source, so the tests of the
//! memory's and the language models' parameter structs check their Rust twins against
//! the same reading of the C++.

/// (name, offset, size) of each field of `struct NAME { ... };` in a kernel source,
/// as a 64-bit C++ compiler lays it out (pointers and `u64` 8 bytes, `int`, `float`
/// and `u32` 4; each aligned to its size). Trailing `_` of a name is dropped.
pub(crate) fn c_layout(source: &str, name: &str) -> (Vec<(String, usize, usize)>, usize) {
    let start = source
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not found in the kernel source"));
    let body = &source[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
    let (mut fields, mut offset, mut align) = (Vec::new(), 0usize, 1usize);
    for line in body.lines() {
        let decl = line.split("//").next().unwrap().trim();
        let Some(decl) = decl.strip_suffix(';') else {
            assert!(decl.is_empty(), "{name}: cannot read `{line}`");
            continue;
        };
        let (size, names) = if let Some(star) = decl.rfind('*') {
            (8, &decl[star + 1..])
        } else if let Some(rest) = decl.strip_prefix("u64 ") {
            (8, rest)
        } else if let Some(rest) = ["int ", "float ", "u32 "]
            .iter()
            .find_map(|p| decl.strip_prefix(p))
        {
            (4, rest)
        } else {
            panic!("{name}: unexpected field type in `{decl}`")
        };
        for field in names.split(',') {
            offset = offset.next_multiple_of(size);
            fields.push((field.trim().trim_end_matches('_').to_string(), offset, size));
            offset += size;
            align = align.max(size);
        }
    }
    (fields, offset.next_multiple_of(align))
}
