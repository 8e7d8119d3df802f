//! "Did you mean": the nearest of the names a node has to a name that
//! matches nothing, by edit distance ([`strsim`]).

use nodetrace_protocol::{CallsiteInfo, Pattern};

/// The candidate nearest to `typed` by Damerau-Levenshtein distance (a swap of two
/// neighbours is one edit; compared
/// case-insensitively), if it is near enough to be a typo: at most a third
/// of the length of `typed` apart, and at least one edit (an exact match
/// needs no suggestion). Ties go to the first candidate.
///
/// ```
/// use nodetrace_tracer::suggest::nearest;
/// let known = ["todo@localhost", "billing@localhost"];
/// assert_eq!(nearest("todoo@localhost", known), Some("todo@localhost"));
/// assert_eq!(nearest("payments@localhost", known), None);
/// ```
pub fn nearest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let typed_lower = typed.to_lowercase();
    let limit = (typed.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = strsim::damerau_levenshtein(&typed_lower, &candidate.to_lowercase());
        if distance == 0 || distance > limit {
            continue;
        }
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// A pattern near `typed` that matches some of `callsites`, spelled the
/// way `typed` is (`Todo.Servr` suggests `Todo.Server`, `todo::servr`
/// suggests `todo::server`), keeping what follows the part that was
/// wrong; `None` if nothing is near.
///
/// The module is corrected first; when it matches, the function (by name
/// among that module's functions), then the arity (when the function has
/// exactly one).
///
/// ```
/// use nodetrace_protocol::CallsiteInfo;
/// use nodetrace_tracer::suggest::pattern;
/// let site = CallsiteInfo {
///     module: "todo::server".into(),
///     function: "entries".into(),
///     arity: 2,
///     ..CallsiteInfo::default()
/// };
/// let sites = [site];
/// assert_eq!(pattern("Todo.Servr", &sites).as_deref(), Some("Todo.Server"));
/// assert_eq!(pattern("todo::server:entris -> return", &sites).as_deref(), Some("todo::server:entries -> return"));
/// assert_eq!(pattern("Todo.Server:entries/3", &sites).as_deref(), Some("Todo.Server:entries/2"));
/// ```
pub fn pattern(typed: &str, callsites: &[CallsiteInfo]) -> Option<String> {
    let typed = typed.trim();
    let (module_text, rest) = split_at_function(typed);
    if let Some(untyped) = without_type(module_text, rest, callsites) {
        return Some(untyped);
    }
    let module_pattern = Pattern::parse(module_text).ok()?;
    let in_module: Vec<&CallsiteInfo> = callsites
        .iter()
        .filter(|c| module_pattern.matches(&c.module, &c.function, c.arity))
        .collect();
    let erlang = module_text.contains('.') && !module_text.contains("::");
    if in_module.is_empty() {
        let bare = module_text.trim_matches('\'');
        let (stem, glob) = match bare.strip_suffix("::*").or_else(|| bare.strip_suffix(".*")) {
            Some(stem) => (stem, &bare[stem.len()..]),
            None => (bare, ""),
        };
        let typed_module = Pattern::parse(stem).ok()?.to_string();
        let mut modules: Vec<String> = Vec::new();
        for c in callsites {
            let segments: Vec<&str> = c.module.split("::").collect();
            for n in 1..=segments.len() {
                let prefix = segments[..n].join("::");
                if !modules.contains(&prefix) {
                    modules.push(prefix);
                }
            }
        }
        let found = nearest(&typed_module, modules.iter().map(String::as_str))?;
        let spelled = if erlang {
            erlang_spelling(found)
        } else {
            found.to_owned()
        };
        return Some(format!("{spelled}{glob}{rest}"));
    }
    let after_colon = rest.strip_prefix(':')?;
    let end = after_colon
        .find(|c: char| c == '/' || c.is_whitespace() || c == '-')
        .unwrap_or(after_colon.len());
    let (function, tail) = after_colon.split_at(end);
    let function = function.trim_matches('\'');
    let mut names: Vec<&str> = in_module.iter().map(|c| c.function.as_str()).collect();
    names.dedup();
    if names.contains(&function) {
        let arities: Vec<u8> = in_module
            .iter()
            .filter(|c| c.function == function)
            .map(|c| c.arity)
            .collect();
        let [arity] = arities[..] else {
            return None;
        };
        let after_arity = tail
            .strip_prefix('/')?
            .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '*');
        return Some(format!("{module_text}:{function}/{arity}{after_arity}"));
    }
    let found = nearest(function, names)?;
    Some(format!("{module_text}:{found}{tail}"))
}

/// `; did you mean `Todo.Server`? (`nodetrace ls` lists the traceable
/// functions)`: the suggestions for the `typed` patterns that match none of
/// `callsites`, as the end of an error message.
pub fn did_you_mean(typed: &[String], callsites: &[CallsiteInfo]) -> String {
    let suggestions: Vec<String> = typed
        .iter()
        .filter_map(|t| pattern(t, callsites))
        .map(|s| format!("`{s}`"))
        .collect();
    if suggestions.is_empty() {
        "; `nodetrace ls` lists the traceable functions".to_owned()
    } else {
        format!(
            "; did you mean {}? (`nodetrace ls` lists the traceable functions)",
            suggestions.join(" or ")
        )
    }
}

/// `kv::store::Store::get` names a method by its type; a `tracing` span of
/// a method has no type (`kv::store:get`): that name, if the node has it.
fn without_type(module_text: &str, rest: &str, callsites: &[CallsiteInfo]) -> Option<String> {
    let segments: Vec<&str> = module_text.split("::").collect();
    let [module @ .., _ty, function] = &segments[..] else {
        return None;
    };
    if module.is_empty() || !rest.is_empty() && !rest.trim_start().starts_with("->") {
        return None;
    }
    let module = module.join("::");
    let candidate = format!("{module}:{function}");
    let parsed = Pattern::parse(&candidate).ok()?;
    callsites
        .iter()
        .any(|c| c.self_type.is_none() && parsed.matches(&c.module, &c.function, c.arity))
        .then(|| format!("{candidate}{rest}"))
}

/// Splits `Module:rest` at the `:` (or `/`, blank or `->`) that ends the
/// module, leaving `::` inside it.
fn split_at_function(text: &str) -> (&str, &str) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => quoted = !quoted,
            _ if quoted => {}
            b':' if bytes.get(i + 1) == Some(&b':') => i += 1,
            b':' | b'/' => break,
            b'-' if bytes.get(i + 1) == Some(&b'>') => break,
            c if c.is_ascii_whitespace() => break,
            _ => {}
        }
        i += 1;
    }
    text.split_at(i)
}

/// `todo::gen_server` as `Todo.GenServer`.
fn erlang_spelling(module: &str) -> String {
    module
        .split("::")
        .map(|segment| {
            segment
                .split('_')
                .map(|word| {
                    let mut chars = word.chars();
                    match chars.next() {
                        Some(first) => first.to_uppercase().chain(chars).collect(),
                        None => String::new(),
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(module: &str, function: &str, arity: u8) -> CallsiteInfo {
        CallsiteInfo {
            id: 0,
            module: module.into(),
            function: function.into(),
            self_type: None,
            trait_name: None,
            arity,
            file: "f.rs".into(),
            line: 1,
            is_async: false,
            ..CallsiteInfo::default()
        }
    }

    #[test]
    fn a_method_path_suggests_the_span_without_its_type() {
        let span = site("kv::store", "get", 1);
        assert_eq!(
            pattern("kv::store::Store::get -> return", &[span]).as_deref(),
            Some("kv::store:get -> return")
        );
    }

    fn sites() -> Vec<CallsiteInfo> {
        vec![
            site("todo::server", "entries", 2),
            site("todo::server", "add_entry", 2),
            site("todo::server", "handle_call", 3),
            site("todo::cache", "server_process", 2),
            site("todo::database", "store", 3),
            site("todo::database", "store", 4),
        ]
    }

    #[test]
    fn modules_are_corrected_in_the_spelling_typed() {
        let s = sites();
        assert_eq!(pattern("Todo.Servr", &s).as_deref(), Some("Todo.Server"));
        assert_eq!(pattern("todo::servr", &s).as_deref(), Some("todo::server"));
        assert_eq!(
            pattern("Todo.Servr:entries/2 -> return", &s).as_deref(),
            Some("Todo.Server:entries/2 -> return")
        );
        assert_eq!(pattern("tod::*", &s).as_deref(), Some("todo::*"));
        assert_eq!(
            pattern("Todo.Databse", &s).as_deref(),
            Some("Todo.Database")
        );
        assert_eq!(pattern("Payments.Ledger", &s), None);
    }

    #[test]
    fn functions_then_arities_are_corrected() {
        let s = sites();
        assert_eq!(
            pattern("Todo.Server:entris", &s).as_deref(),
            Some("Todo.Server:entries")
        );
        assert_eq!(
            pattern("todo::server:handle_cal/3", &s).as_deref(),
            Some("todo::server:handle_call/3")
        );
        assert_eq!(
            pattern("Todo.Server:entries/3 -> return", &s).as_deref(),
            Some("Todo.Server:entries/2 -> return")
        );
        // Two arities: no single one to suggest.
        assert_eq!(pattern("Todo.Database:store/5", &s), None);
        assert_eq!(pattern("Todo.Server:zzz", &s), None);
    }

    #[test]
    fn nearest_needs_a_typo_not_a_different_word() {
        let known = ["todo_server:bob", "todo_server:alice", "todo_cache"];
        assert_eq!(nearest("todo_server:bop", known), Some("todo_server:bob"));
        assert_eq!(nearest("TODO_CACHE", known), None);
        assert_eq!(nearest("todo_cach", known), Some("todo_cache"));
        assert_eq!(nearest("x", known), None);
    }
}
