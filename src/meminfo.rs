//! How much RAM this machine has, from `/proc/meminfo`: the bound every large
//! allocation from a file or an option is checked against (`limits`), and where the
//! attention baseline's KV cache would no longer fit without allocating it (`bench`).

use serde::Serialize;

/// Total and currently available RAM in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemInfo {
    /// `MemTotal`: the RAM the kernel manages.
    pub total_bytes: u64,
    /// `MemAvailable`: what could be allocated now without swapping.
    pub available_bytes: u64,
}

impl MemInfo {
    /// Reads `/proc/meminfo`; `None` where it does not exist (not Linux) or does not
    /// say.
    pub fn read() -> Option<MemInfo> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        Self::parse(&text)
    }

    /// Parses the `MemTotal:` and `MemAvailable:` lines (kB, as the kernel writes
    /// them); `MemFree:` stands in for `MemAvailable:` on old kernels.
    pub fn parse(text: &str) -> Option<MemInfo> {
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            let mut parts = line[name.len()..].split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            let unit = match parts.next() {
                Some("kB") => 1024,
                None => 1,
                Some(_) => return None,
            };
            value.checked_mul(unit)
        };
        let total_bytes = field("MemTotal:")?;
        let available_bytes = field("MemAvailable:").or_else(|| field("MemFree:"))?;
        Some(MemInfo {
            total_bytes,
            available_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_format() {
        let text = "MemTotal:       24684132 kB\nMemFree:        20251360 kB\nMemAvailable:   24030476 kB\nBuffers:          123 kB\n";
        let info = MemInfo::parse(text).unwrap();
        assert_eq!(info.total_bytes, 24_684_132 * 1024);
        assert_eq!(info.available_bytes, 24_030_476 * 1024);
        let old = "MemTotal: 1000 kB\nMemFree: 300 kB\n";
        assert_eq!(MemInfo::parse(old).unwrap().available_bytes, 300 * 1024);
        assert!(MemInfo::parse("MemFree: 300 kB\n").is_none());
        assert!(MemInfo::parse("MemTotal: lots kB\nMemFree: 1 kB\n").is_none());
    }

    #[test]
    fn this_machine_reports_some_ram() {
        if let Some(info) = MemInfo::read() {
            assert!(info.total_bytes > 0 && info.available_bytes <= info.total_bytes);
        }
    }
}
