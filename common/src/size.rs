//! Byte sizes on the command line: `4096`, `512KiB`, `2MiB`, `1GiB` (binary units, no zero).

/// Parses a size; the error names the text and what would be accepted.
pub fn parse(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a size such as 512KiB, 2MiB or 1GiB"))?;
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("{text:?}: the unit is B, KiB, MiB or GiB")),
    };
    match n.checked_mul(factor) {
        Some(0) | None => Err(format!("{text:?}: out of range")),
        Some(v) => Ok(v),
    }
}

/// [`parse`], for sizes held in memory.
pub fn parse_usize(text: &str) -> Result<usize, String> {
    parse(text).and_then(|v| usize::try_from(v).map_err(|_| format!("{text:?}: out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse("256MiB"), Ok(256 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("512KiB"), Ok(512 << 10));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("7B"), Ok(7));
        assert_eq!(parse_usize("2MiB"), Ok(2 << 20));
        for bad in ["0", "0MiB", "1MB", "lots", "", "MiB", "99999999999999GiB"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
