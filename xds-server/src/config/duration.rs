//! Durations as written in gateway files: `250ms`, `30s`, `5m`, `1h`, `1d`, combined `1m30s`.

use std::time::Duration;

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

const FORMAT: &str = "write an integer and a unit (ms, s, m, h, d), e.g. 250ms, 30s, 5m or 1m30s";

/// Parses a positive duration: one or more `<integer><unit>` pairs, largest unit first, each
/// unit at most once.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit: write {text}s (units: ms, s, m, h, d)"
        ));
    }
    let invalid = || format!("invalid duration `{text}`: {FORMAT}");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut rest = text;
    let mut total: u64 = 0;
    let mut last_rank = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let amount: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let Some(rank) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(invalid());
        };
        if last_rank.is_some_and(|last| rank <= last) {
            return Err(format!(
                "invalid duration `{text}`: give each unit once, largest first (e.g. 1h30m)"
            ));
        }
        last_rank = Some(rank);
        total = amount
            .checked_mul(UNITS[rank].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("duration `{text}` is too long"))?;
    }
    if total == 0 {
        return Err(format!("duration `{text}` must be greater than 0"));
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h0m5s250ms"), Ok(Duration::from_millis(3_605_250)));
    }

    #[test]
    fn rejected_forms() {
        assert_eq!(
            parse("30"),
            Err("`30` has no unit: write 30s (units: ms, s, m, h, d)".into())
        );
        let bad = |t: &str| format!("invalid duration `{t}`: {FORMAT}");
        assert_eq!(parse("1.5s"), Err(bad("1.5s")));
        assert_eq!(parse("5 minutes"), Err(bad("5 minutes")));
        assert_eq!(parse("-5s"), Err(bad("-5s")));
        assert_eq!(parse("5sec"), Err(bad("5sec")));
        assert_eq!(parse(""), Err(bad("")));
        assert_eq!(
            parse("30s1m"),
            Err("invalid duration `30s1m`: give each unit once, largest first (e.g. 1h30m)".into())
        );
        assert_eq!(
            parse("0s"),
            Err("duration `0s` must be greater than 0".into())
        );
        assert_eq!(
            parse("99999999999999999d"),
            Err("duration `99999999999999999d` is too long".into())
        );
    }
}
