//! From what an operator types to a [`TraceSpec`](crate::protocol::TraceSpec): patterns, processes,
//! limits.

use nodetrace_protocol::{Limits, Pattern, PatternError, Rate, display_ms, parse_duration_ms};

/// The bound on each event's text unless told otherwise, in bytes.
pub const DEFAULT_TEXT_BOUND: u32 = 256;

/// Parses `N/DURATION` (`100/1s`, `10/500ms`, `5/s`) into a [`Rate`].
///
/// ```
/// use nodetrace_tracer::spec::parse_rate;
/// let rate = parse_rate("100/1s").unwrap();
/// assert_eq!((rate.events, rate.per_ms), (100, 1000));
/// ```
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let bad = || format!("bad rate {text:?}: expected EVENTS/DURATION, e.g. 100/1s or 10/500ms");
    let (events, per) = text.trim().split_once('/').ok_or_else(bad)?;
    let events: u64 = events.trim().parse().map_err(|_| bad())?;
    if events == 0 {
        return Err(format!("bad rate {text:?}: it must allow at least 1 event"));
    }
    let per = per.trim();
    if per.is_empty() {
        return Err(bad());
    }
    let per_ms = if per.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        parse_duration_ms(per)
    } else {
        parse_duration_ms(&format!("1{per}"))
    }
    .map_err(|e| format!("bad rate {text:?}: {e}"))?;
    Ok(Rate { events, per_ms })
}

/// Parses a duration for `--duration` into milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    parse_duration_ms(text)
}

/// A pattern as typed on a command line, and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternArg {
    /// As typed (`Todo.Servr`), for messages and suggestions.
    pub text: String,
    /// Parsed.
    pub pattern: Pattern,
}

/// Parses a pattern as `trace calls` takes it: like [`parse_pattern`],
/// and a pattern the shell mangled says to quote it or to use `--return`.
pub fn parse_trace_pattern(text: &str) -> Result<PatternArg, String> {
    check_not_mangled(
        text,
        "quote the whole pattern ('MyApp.Server:get -> return') or use --return",
    )?;
    arg(text)
}

fn arg(text: &str) -> Result<PatternArg, String> {
    Ok(PatternArg {
        text: text.trim().to_owned(),
        pattern: Pattern::parse(text).map_err(|e| e.to_string())?,
    })
}

/// Parses the module a `nodetrace log` streams: a module path in either
/// spelling (`kv::store`, `Kv.Store`, `kv::*`), with no function part.
///
/// ```
/// use nodetrace_tracer::spec::parse_log_pattern;
/// assert!(parse_log_pattern("Kv.Store").is_ok());
/// assert!(parse_log_pattern("kv:get").unwrap_err().contains("module"));
/// ```
pub fn parse_log_pattern(text: &str) -> Result<PatternArg, String> {
    let parsed = parse_pattern(text)?;
    if parsed.pattern.function().is_some() || parsed.pattern.arity().is_some() {
        return Err(format!(
            "`{text}` names a function: a log pattern is a module (kv::store, Kv.Store), which selects the events of that module and of the modules inside it"
        ));
    }
    Ok(parsed)
}

/// Parses a pattern given on a command line (`ls`, `profile`): a lone `-`
/// or a trailing `-`, what a shell leaves of an unquoted `-> return`, is
/// refused with how to quote it instead of being read as `_` (any module).
///
/// ```
/// use nodetrace_tracer::spec::parse_pattern;
/// assert!(parse_pattern("Todo.Server:entries/2").is_ok());
/// assert!(parse_pattern("-").unwrap_err().contains("quote"));
/// ```
pub fn parse_pattern(text: &str) -> Result<PatternArg, String> {
    check_not_mangled(text, "quote the whole pattern ('MyApp.Server:get')")?;
    arg(text)
}

fn check_not_mangled(text: &str, fix: &str) -> Result<(), String> {
    let trimmed = text.trim();
    if trimmed == "-" {
        return Err(format!(
            "a pattern `-` is what a shell leaves of an unquoted `PATTERN -> return`: it read `>` as a redirection into a file named `return`; {fix}"
        ));
    }
    if trimmed.ends_with('-') {
        return Err(format!(
            "pattern {trimmed:?} ends in `-`, what a shell leaves of an unquoted `PATTERN->return`: it read `>` as a redirection into a file named `return`; {fix}"
        ));
    }
    Ok(())
}

/// Parses every pattern; the first error names its column.
pub fn parse_patterns<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Pattern>, PatternError> {
    texts.iter().map(|t| Pattern::parse(t.as_ref())).collect()
}

/// The limits an operator gave, and whether they are the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChosenLimits {
    /// What the node is told.
    pub limits: Limits,
    /// No limit was given: [`Limits::DEFAULT`] applies.
    pub defaulted: bool,
}

/// Chooses a trace's limits: the ones given, or [`Limits::DEFAULT`] when
/// none is. A pattern that selects every function is refused unless a
/// limit is given explicitly.
pub fn choose_limits(
    max_events: Option<u64>,
    rate: Option<Rate>,
    duration_ms: Option<u64>,
    patterns: &[Pattern],
) -> Result<ChosenLimits, String> {
    let given = Limits {
        max_events,
        rate,
        duration_ms,
    };
    if let Some(all) = patterns.iter().find(|p| p.matches_everything())
        && given.is_unlimited()
    {
        return Err(format!(
            "refusing to trace every function ({all}) without a limit: it would flood the node and this terminal; add --max N, --rate N/DURATION or --duration DURATION"
        ));
    }
    if given.is_unlimited() {
        Ok(ChosenLimits {
            limits: Limits::DEFAULT,
            defaulted: true,
        })
    } else {
        Ok(ChosenLimits {
            limits: given,
            defaulted: false,
        })
    }
}

/// Limits as a phrase: `10 events, 100/1s, 1m`.
pub fn describe_limits(limits: &Limits) -> String {
    let mut parts = Vec::new();
    match limits.max_events {
        Some(1) => parts.push("1 event".to_owned()),
        Some(n) => parts.push(format!("{n} events")),
        None => {}
    }
    if let Some(rate) = limits.rate {
        parts.push(format!(
            "at most {}/{}",
            rate.events,
            display_ms(rate.per_ms)
        ));
    }
    if let Some(ms) = limits.duration_ms {
        parts.push(display_ms(ms));
    }
    if parts.is_empty() {
        "no limit".to_owned()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        for (text, events, per_ms) in [
            ("100/1s", 100, 1000),
            ("10/500ms", 10, 500),
            ("5/s", 5, 1000),
            (" 7 / 2m ", 7, 120_000),
            ("1/0.5s", 1, 500),
        ] {
            assert_eq!(parse_rate(text), Ok(Rate { events, per_ms }), "{text}");
        }
        for bad in [
            "", "100", "x/1s", "100/", "100/soon", "0/1s", "-1/1s", "100/0s",
        ] {
            let err = parse_rate(bad).unwrap_err();
            assert!(err.starts_with("bad rate"), "{bad}: {err}");
        }
    }

    #[test]
    fn no_limit_means_the_default_and_given_limits_are_kept() {
        let p = parse_patterns(&["Todo.Server"]).unwrap();
        let chosen = choose_limits(None, None, None, &p).unwrap();
        assert!(chosen.defaulted);
        assert_eq!(chosen.limits, Limits::DEFAULT);
        let chosen = choose_limits(Some(10), None, None, &p).unwrap();
        assert!(!chosen.defaulted);
        assert_eq!(
            chosen.limits,
            Limits {
                max_events: Some(10),
                rate: None,
                duration_ms: None
            }
        );
        assert_eq!(describe_limits(&Limits::DEFAULT), "1000 events, 1m");
        assert_eq!(
            describe_limits(&Limits {
                max_events: None,
                rate: Some(Rate {
                    events: 100,
                    per_ms: 1000
                }),
                duration_ms: Some(1500)
            }),
            "at most 100/1s, 1500ms"
        );
    }

    #[test]
    fn everything_without_a_limit_is_refused_with_the_reason() {
        let all = parse_patterns(&["'*'"]).unwrap();
        let err = choose_limits(None, None, None, &all).unwrap_err();
        assert!(err.contains("refusing to trace every function"), "{err}");
        assert!(err.contains("--max N"), "{err}");
        assert!(choose_limits(None, None, Some(1000), &all).is_ok());
        let rate = parse_rate("10/1s").unwrap();
        assert!(choose_limits(None, Some(rate), None, &all).is_ok());
        let broad = parse_patterns(&["*:handle_*"]).unwrap();
        assert!(choose_limits(None, None, None, &broad).is_ok());
    }

    #[test]
    fn what_a_shell_leaves_of_an_unquoted_arrow_is_refused() {
        for mangled in [
            "-",
            " - ",
            "Todo.Server:entries-",
            "todo::server:entries/2-",
        ] {
            let err = parse_trace_pattern(mangled).unwrap_err();
            assert!(err.contains("file named `return`"), "{mangled}: {err}");
            assert!(err.contains("--return"), "{mangled}: {err}");
            let err = parse_pattern(mangled).unwrap_err();
            assert!(err.contains("quote the whole pattern"), "{mangled}: {err}");
            assert!(!err.contains("--return"), "{mangled}: {err}");
        }
        let p = parse_trace_pattern(" Todo.Server:entries -> return").unwrap();
        assert!(p.pattern.return_trace());
        assert_eq!(p.text, "Todo.Server:entries -> return");
        assert!(parse_pattern("my-crate::server").is_ok());
    }

    #[test]
    fn pattern_errors_name_their_column() {
        let err = parse_patterns(&["Todo.Server", "Todo..Server"]).unwrap_err();
        assert_eq!(err.column(), 6);
        assert!(err.to_string().contains("column 6"), "{err}");
    }
}
