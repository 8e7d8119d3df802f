//! Durations as operators type them: `500ms`, `10s`, `2m`, `1h`.

/// Parses `500ms`, `10s`, `1.5s`, `2m`, `1h` (or a bare number of seconds)
/// into milliseconds.
///
/// ```
/// use nodetrace_protocol::parse_duration_ms;
/// assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
/// assert_eq!(parse_duration_ms("2m"), Ok(120_000));
/// assert!(parse_duration_ms("soon").is_err());
/// ```
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "ms" => 1.0,
        "" | "s" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        _ => {
            return Err(format!(
                "bad duration {text:?}: expected a number with ms, s, m or h, e.g. 500ms or 10s"
            ));
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("bad duration {text:?}: expected a number with ms, s, m or h, e.g. 500ms or 10s")
    })?;
    let ms = value * scale;
    if !(ms.is_finite() && ms >= 1.0) {
        return Err(format!("bad duration {text:?}: it must be at least 1ms"));
    }
    Ok(ms.round() as u64)
}

/// Milliseconds the way [`parse_duration_ms`] reads them.
pub fn display_ms(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (text, ms) in [
            ("500ms", 500),
            ("10s", 10_000),
            ("10", 10_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("0.25s", 250),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        for bad in ["", "s", "-1s", "1d", "0s", "1.2.3s"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
        assert_eq!(display_ms(60_000), "1m");
        assert_eq!(display_ms(1500), "1500ms");
        assert_eq!(display_ms(3000), "3s");
    }
}
