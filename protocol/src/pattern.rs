//! Trace patterns: the one-line selector an operator types to choose which
//! traced functions report.
//!
//! Operators coming from the BEAM think in `Module:function/arity` (Erlang
//! `dbg`, `redbug`), Rust programmers in `crate::module`. A [`Pattern`] accepts
//! both spellings, is matched against each traced callsite's
//! `module_path!()`, function name and arity, and travels between the tracer
//! and the traced node as its canonical string.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A parsed trace pattern selecting traced functions by module path,
/// function name and arity.
///
/// # Syntax
///
/// ```text
/// pattern  = module [ ":" function ] [ "/" arity ] [ "->" "return" ]
/// module   = segment { ( "." | "::" ) segment }      optionally in '…'
/// function = [ type "::" ] name | "_" | "*"          optionally in '…'
/// arity    = 0..=255 | "_" | "*"
/// ```
///
/// * Module segments may be written in Elixir/Erlang `CamelCase`
///   (`Todo.Server`) or Rust `snake_case` (`todo::server`); both sides are
///   compared after [`snake_case`], and `-` counts as `_` (crate names).
///   A leading `Elixir.` segment is ignored. A segment may contain `*`
///   globs (`serv*`); a whole `*` (or `_`) segment matches exactly one module
///   segment, or, in last position, zero or more further segments
///   (`todo::*` matches `todo`, `todo::server` and `todo::a::b`).
/// * Without a trailing `*`, a module pattern matches functions directly in
///   that module only, not in its submodules.
/// * A single `:` separates module and function; `::` separates modules.
///   Function names are compared literally and may contain `*` globs
///   (`handle_*`); `_` or `*` alone means any function.
/// * `/arity` counts parameters including a `self` receiver; `/_` and `/*`
///   mean any arity, as does leaving it out.
/// * A ` -> return` suffix (spaces optional) asks for return values too.
/// * `*`, `*:*` and `'*'` select every function, see
///   [`matches_everything`](Pattern::matches_everything).
///
/// Two patterns are equal when they select the same thing through the same
/// normalised spelling: `Todo.Server` equals `todo::server`. The
/// [`Display`](fmt::Display) form is canonical Rust notation (for example
/// `todo::server:entries/2 -> return`) and parses back to an equal pattern;
/// serde uses that string.
///
/// ```
/// use nodetrace_protocol::Pattern;
///
/// let p: Pattern = "Todo.Server:handle_*/3 -> return".parse().unwrap();
/// assert!(p.matches("todo::server", "handle_call", 3));
/// assert!(!p.matches("todo::server::worker", "handle_call", 3));
/// assert!(p.return_trace());
/// assert_eq!(p.to_string(), "todo::server:handle_*/3 -> return");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// Normalised (`snake_case`, `-` → `_`, `*` runs collapsed) module
    /// segments; each may contain `*` globs.
    module: Vec<String>,
    /// The pattern ended in a `*` segment: the module path may continue with
    /// zero or more further segments.
    any_submodule: bool,
    /// `None` means any function; otherwise a name that may contain `*`.
    function: Option<String>,
    /// `None` means any arity.
    arity: Option<u8>,
    return_trace: bool,
}

impl Pattern {
    /// Parses a pattern typed by an operator; surrounding whitespace is
    /// ignored. See [`Pattern`] for the syntax.
    ///
    /// # Errors
    ///
    /// A [`PatternError`] naming the 1-based column in `input` and a
    /// [`PatternErrorKind`].
    pub fn parse(input: &str) -> Result<Pattern, PatternError> {
        Parser::new(input).parse()
    }

    /// Whether a traced function — identified by its `module_path!()`, its
    /// name and its arity (parameters, a `self` receiver included) — is
    /// selected by this pattern.
    ///
    /// Module path segments are compared after [`snake_case`]; a raw
    /// identifier prefix `r#` on a segment or on `function` is ignored.
    pub fn matches(&self, module_path: &str, function: &str, arity: u8) -> bool {
        self.matches_method(module_path, None, function, arity)
    }

    /// Whether a traced function or method is selected: a method is named
    /// by its module, the type of its `impl` block (`self_type`) and its
    /// name. A module pattern selects the functions and the methods
    /// directly in the module; a path may also name a type (its methods) or
    /// the function itself, as Rust names it (`kv::store::Store::get`); and
    /// `Module:Type::function` names one method.
    ///
    /// ```
    /// use nodetrace_protocol::Pattern;
    ///
    /// let select = |p: &str| -> bool {
    ///     let p: Pattern = p.parse().unwrap();
    ///     p.matches_method("kv::store", Some("Store"), "get", 2)
    /// };
    /// assert!(select("kv::store::Store::get"));
    /// assert!(select("kv::store::Store::*"));
    /// assert!(select("Kv.Store"));
    /// assert!(select("Kv.Store:get/2"));
    /// assert!(select("kv::store:Store::get"));
    /// assert!(!select("kv::store:Cache::get"));
    /// assert!(!select("kv::store::Cache"));
    /// ```
    pub fn matches_method(
        &self,
        module_path: &str,
        self_type: Option<&str>,
        function: &str,
        arity: u8,
    ) -> bool {
        if self.arity.is_some_and(|a| a != arity) {
            return false;
        }
        let function = function.strip_prefix("r#").unwrap_or(function);
        let module = || module_path.split("::").filter(|_| !module_path.is_empty());
        let ty = self_type.map(snake_case);
        let with_type = || module().chain(ty.as_deref());
        if let Some(glob) = &self.function {
            let (type_glob, fn_glob) = match glob.rsplit_once("::") {
                Some((t, f)) => (Some(t), f),
                None => (None, glob.as_str()),
            };
            if !glob_match(fn_glob, function) {
                return false;
            }
            return match type_glob {
                Some(t) => {
                    ty.as_deref()
                        .is_some_and(|ty| glob_match(&snake_case(t), ty))
                        && self.matches_segments(module())
                }
                None => {
                    self.matches_segments(module())
                        || (ty.is_some() && self.matches_segments(with_type()))
                }
            };
        }
        self.matches_segments(module())
            || (ty.is_some() && self.matches_segments(with_type()))
            || self.matches_segments(with_type().chain([function]))
    }

    /// Whether `module_path` is the pattern's module or inside it, as a log
    /// filter selects (`tracing`'s `EnvFilter` treats a target so); the
    /// pattern's function part, if any, is not looked at.
    ///
    /// ```
    /// use nodetrace_protocol::Pattern;
    ///
    /// let kv: Pattern = "Kv".parse().unwrap();
    /// assert!(kv.matches_module_tree("kv"));
    /// assert!(kv.matches_module_tree("kv::store"));
    /// assert!(!kv.matches_module_tree("kvx"));
    /// ```
    pub fn matches_module_tree(&self, module_path: &str) -> bool {
        let mut path = module_path.split("::").filter(|s| !s.is_empty());
        self.module.iter().all(|glob| {
            path.next()
                .is_some_and(|s| glob_match(glob, &normalize_segment(s)))
        })
    }

    /// Whether return values (and unwinds) of selected functions should be
    /// traced too: the pattern ended in `-> return`.
    pub fn return_trace(&self) -> bool {
        self.return_trace
    }

    /// The same pattern with `-> return`.
    pub fn with_return_trace(mut self) -> Pattern {
        self.return_trace = true;
        self
    }

    /// Whether this pattern selects every function of every module (`*`,
    /// `*:*`, `'*'`, `*::*:_/_`…), so that callers can refuse it unless a
    /// rate or message limit is set. Patterns that are merely broad, such as
    /// `*:*/2` or `*:handle_*`, return `false`.
    pub fn matches_everything(&self) -> bool {
        self.module.is_empty()
            && self.any_submodule
            && self.function.is_none()
            && self.arity.is_none()
    }

    /// The function part, if the pattern has one (`None`: any function).
    pub fn function(&self) -> Option<&str> {
        self.function.as_deref()
    }

    /// The arity the pattern requires, or `None` for any arity.
    pub fn arity(&self) -> Option<u8> {
        self.arity
    }

    fn matches_segments<'s>(&self, mut path: impl Iterator<Item = &'s str>) -> bool {
        for glob in &self.module {
            match path.next() {
                Some(segment) if glob_match(glob, &normalize_segment(segment)) => {}
                _ => return false,
            }
        }
        self.any_submodule || path.next().is_none()
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.module.iter().enumerate() {
            if i > 0 {
                f.write_str("::")?;
            }
            f.write_str(segment)?;
        }
        if self.any_submodule {
            f.write_str(if self.module.is_empty() { "*" } else { "::*" })?;
        }
        if self.function.is_some() || self.arity.is_some() {
            f.write_str(":")?;
            f.write_str(self.function.as_deref().unwrap_or("*"))?;
        }
        if let Some(arity) = self.arity {
            write!(f, "/{arity}")?;
        }
        if self.return_trace {
            f.write_str(" -> return")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Converts one `CamelCase` identifier segment to `snake_case`, the way
/// Elixir module names map onto Rust module names.
///
/// An `_` is inserted before an uppercase letter that follows a lowercase
/// letter or a digit (`TodoServer` → `todo_server`), or that is followed by a
/// lowercase letter and preceded by an uppercase letter, which splits
/// acronyms (`HTTPServer` → `http_server`); then everything is lowercased.
/// Digits stay attached (`Server2` → `server2`) and `snake_case` input is
/// returned unchanged, so the function is idempotent.
///
/// ```
/// use nodetrace_protocol::snake_case;
///
/// assert_eq!(snake_case("HTTPServer"), "http_server");
/// assert_eq!(snake_case("already_snake"), "already_snake");
/// // A letter whose lower case is two characters stays as it is.
/// assert_eq!(snake_case("Aİb"), "aİb");
/// ```
pub fn snake_case(segment: &str) -> String {
    // An upper-case letter whose lower case is one other letter: one
    // without (`ⅅ`), or whose lower case is more than one character (`İ`
    // lowers to `i` and a combining dot, which is no name character),
    // stays as it is and starts no word, so that the result is its own
    // snake case and parses back.
    let lower = |c: char| {
        let mut l = c.to_lowercase();
        match (l.next(), l.next()) {
            (Some(one), None) if one != c && c.is_uppercase() => Some(one),
            _ => None,
        }
    };
    let upper = |c: char| lower(c).is_some();
    let chars: Vec<char> = segment.chars().collect();
    let mut out = String::with_capacity(segment.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if upper(c) && i > 0 {
            let prev = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (upper(prev) && next_is_lower) {
                out.push('_');
            }
        }
        out.push(lower(c).unwrap_or(c));
    }
    out
}

/// Why a pattern failed to parse; see [`PatternError::reason`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternErrorKind {
    /// The pattern is empty or only whitespace.
    Empty,
    /// A module segment is missing: `Todo..Server`, `todo::`, `:entries`.
    EmptyModuleSegment,
    /// Nothing follows the `:` that introduces the function name.
    EmptyFunction,
    /// The text after `/` is not a number from 0 to 255, `_` or `*`.
    BadArity,
    /// A character that cannot appear here, such as a space inside a name or
    /// a parenthesis.
    UnexpectedCharacter(char),
    /// Something other than `-> return` follows the pattern.
    BadSuffix,
    /// A `'` without its partner.
    UnbalancedQuote,
}

impl fmt::Display for PatternErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty pattern"),
            Self::EmptyModuleSegment => f.write_str("empty module segment"),
            Self::EmptyFunction => f.write_str("empty function name after `:`"),
            Self::BadArity => f.write_str("arity must be 0 to 255, `_` or `*`"),
            Self::UnexpectedCharacter(c) => write!(f, "unexpected character {c:?}"),
            Self::BadSuffix => f.write_str("expected `-> return` or the end of the pattern"),
            Self::UnbalancedQuote => f.write_str("unbalanced quote"),
        }
    }
}

/// A pattern that failed to parse: the input, the 1-based column and the
/// reason. Displays on one line, for example
/// `invalid pattern "Todo..Server": empty module segment at column 6`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {input:?}: {kind} at column {column}")]
pub struct PatternError {
    input: String,
    column: usize,
    kind: PatternErrorKind,
}

impl PatternError {
    /// The 1-based character (not byte) column in the original, untrimmed
    /// input where the problem is. It may be one past the last character
    /// when something is missing at the end (`todo::`).
    pub fn column(&self) -> usize {
        self.column
    }

    /// What went wrong.
    pub fn reason(&self) -> &PatternErrorKind {
        &self.kind
    }

    /// The input that failed to parse, as given.
    pub fn input(&self) -> &str {
        &self.input
    }
}

/// Applies [`snake_case`] and `-` → `_` to a module path segment, borrowing
/// when nothing changes (always, for a real `module_path!()` segment).
fn normalize_segment(segment: &str) -> Cow<'_, str> {
    let segment = segment.strip_prefix("r#").unwrap_or(segment);
    if segment.chars().any(|c| c.is_uppercase() || c == '-') {
        Cow::Owned(snake_case(&segment.replace('-', "_")))
    } else {
        Cow::Borrowed(segment)
    }
}

/// Replaces runs of `*` by a single `*`; they mean the same.
fn collapse_stars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c == '*' && out.ends_with('*')) {
            out.push(c);
        }
    }
    out
}

/// Matches `text` against `glob`, where `*` stands for any run of characters
/// (possibly empty) and everything else is literal.
fn glob_match(glob: &str, text: &str) -> bool {
    // Byte-wise is sound for UTF-8: `*` is ASCII and literal runs start on
    // character boundaries, so they can only match whole characters.
    let (glob, text) = (glob.as_bytes(), text.as_bytes());
    let (mut g, mut t) = (0, 0);
    // Position of the last `*` seen and the text position it resumes from.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == b'*' {
            backtrack = Some((g, t));
            g += 1;
        } else if g < glob.len() && glob[g] == text[t] {
            g += 1;
            t += 1;
        } else if let Some((star, from)) = backtrack {
            backtrack = Some((star, from + 1));
            g = star + 1;
            t = from + 1;
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&b| b == b'*')
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '*'
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    /// Index into `chars`; the column is `pos + 1`.
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn at_arrow(&self) -> bool {
        self.peek() == Some('-') && self.peek_at(1) == Some('>')
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self, index: usize, kind: PatternErrorKind) -> PatternError {
        PatternError {
            input: self.input.to_owned(),
            column: index + 1,
            kind,
        }
    }

    fn parse(mut self) -> Result<Pattern, PatternError> {
        self.skip_whitespace();
        if self.peek().is_none() {
            return Err(self.error(0, PatternErrorKind::Empty));
        }
        let (module, any_submodule) = self.module()?;
        let mut function = None;
        if self.peek() == Some(':') {
            self.pos += 1;
            function = self.function()?;
        }
        let mut arity = None;
        if self.peek() == Some('/') {
            self.pos += 1;
            arity = self.arity()?;
        }
        let return_trace = self.suffix()?;
        Ok(Pattern {
            module,
            any_submodule,
            function,
            arity,
            return_trace,
        })
    }

    /// If at `'`, checks that a closing quote exists and steps past the
    /// opening one; returns whether the item is quoted.
    fn open_quote(&mut self) -> Result<bool, PatternError> {
        if self.peek() != Some('\'') {
            return Ok(false);
        }
        if !self.chars[self.pos + 1..].contains(&'\'') {
            return Err(self.error(self.pos, PatternErrorKind::UnbalancedQuote));
        }
        self.pos += 1;
        Ok(true)
    }

    fn close_quote(&mut self) -> Result<(), PatternError> {
        match self.peek() {
            Some('\'') => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.error(self.pos, PatternErrorKind::UnexpectedCharacter(c))),
            // `open_quote` saw a closing quote, so this is not expected.
            None => Err(self.error(self.pos, PatternErrorKind::UnbalancedQuote)),
        }
    }

    fn module(&mut self) -> Result<(Vec<String>, bool), PatternError> {
        let quoted = self.open_quote()?;
        let mut segments: Vec<String> = Vec::new();
        loop {
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|c| (is_name_char(c) || c == '-') && !self.at_arrow())
            {
                self.pos += 1;
            }
            if start == self.pos {
                return Err(match self.peek() {
                    Some(c) if !matches!(c, '.' | ':' | '/' | '\'' | '-') => {
                        self.error(self.pos, PatternErrorKind::UnexpectedCharacter(c))
                    }
                    _ => self.error(start, PatternErrorKind::EmptyModuleSegment),
                });
            }
            segments.push(self.chars[start..self.pos].iter().collect());
            if self.peek() == Some('.') {
                self.pos += 1;
            } else if self.peek() == Some(':') && self.peek_at(1) == Some(':') {
                self.pos += 2;
            } else {
                break;
            }
        }
        if quoted {
            self.close_quote()?;
        }
        if segments.len() > 1 && segments[0] == "Elixir" {
            segments.remove(0);
        }
        let mut module: Vec<String> = segments
            .iter()
            .map(|s| {
                let s = collapse_stars(&s.replace('-', "_"));
                if s == "_" {
                    "*".to_owned()
                } else {
                    snake_case(&s)
                }
            })
            .collect();
        let any_submodule = module.last().is_some_and(|s| s == "*");
        if any_submodule {
            module.pop();
            // `*::*` is any non-empty path, i.e. any `module_path!()`.
            if module.len() == 1 && module[0] == "*" {
                module.clear();
            }
        }
        Ok((module, any_submodule))
    }

    fn function(&mut self) -> Result<Option<String>, PatternError> {
        let quoted = self.open_quote()?;
        let start = self.pos;
        while self.peek().is_some_and(is_name_char)
            || (self.pos > start
                && self.peek() == Some(':')
                && self.peek_at(1) == Some(':')
                && self.peek_at(2).is_some_and(is_name_char))
        {
            self.pos += if self.peek() == Some(':') { 2 } else { 1 };
        }
        if start == self.pos {
            return Err(match self.peek() {
                Some(c) if !matches!(c, '/' | '\'' | '-') => {
                    self.error(self.pos, PatternErrorKind::UnexpectedCharacter(c))
                }
                _ => self.error(start, PatternErrorKind::EmptyFunction),
            });
        }
        let name = collapse_stars(&self.chars[start..self.pos].iter().collect::<String>());
        if quoted {
            self.close_quote()?;
        }
        Ok(if name == "_" || name == "*" {
            None
        } else {
            Some(name)
        })
    }

    fn arity(&mut self) -> Result<Option<u8>, PatternError> {
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        let text = &self.chars[start..self.pos];
        if text == ['_'] || text == ['*'] {
            return Ok(None);
        }
        if let Some(bad) = text.iter().position(|c| !c.is_ascii_digit()) {
            return Err(self.error(start + bad, PatternErrorKind::BadArity));
        }
        let text: String = text.iter().collect();
        match text.parse::<u8>() {
            Ok(arity) => Ok(Some(arity)),
            // Empty, or more than 255.
            Err(_) => Err(self.error(start, PatternErrorKind::BadArity)),
        }
    }

    /// Parses what follows the pattern proper: nothing or `-> return`,
    /// with optional whitespace around the arrow.
    fn suffix(&mut self) -> Result<bool, PatternError> {
        let whitespace_at = self.pos;
        self.skip_whitespace();
        let Some(c) = self.peek() else {
            return Ok(false);
        };
        if !self.at_arrow() {
            return Err(if c == '\'' {
                self.error(self.pos, PatternErrorKind::UnbalancedQuote)
            } else if self.pos > whitespace_at && c != '-' && c != '>' {
                // A space inside the pattern, as in `Todo.Ser ver`.
                let space = self.chars[whitespace_at];
                self.error(whitespace_at, PatternErrorKind::UnexpectedCharacter(space))
            } else if self.pos > whitespace_at {
                // A mangled arrow, as in `Todo.Server - return`.
                self.error(self.pos, PatternErrorKind::BadSuffix)
            } else {
                self.error(self.pos, PatternErrorKind::UnexpectedCharacter(c))
            });
        }
        self.pos += 2;
        self.skip_whitespace();
        let word_at = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        if self.chars[word_at..self.pos] != ['r', 'e', 't', 'u', 'r', 'n'] {
            return Err(self.error(word_at, PatternErrorKind::BadSuffix));
        }
        self.skip_whitespace();
        if self.peek().is_some() {
            return Err(self.error(self.pos, PatternErrorKind::BadSuffix));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_converts_camel_case_segments() {
        let cases = [
            ("Server", "server"),
            ("TodoServer", "todo_server"),
            ("HTTPServer", "http_server"),
            ("IOError", "io_error"),
            ("Server2", "server2"),
            ("V2Server", "v2_server"),
            ("ABC", "abc"),
            ("already_snake", "already_snake"),
            ("Todo_Server", "todo_server"),
            ("serv*", "serv*"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(snake_case(input), expected, "snake_case({input:?})");
            assert_eq!(snake_case(expected), expected, "idempotent on {expected:?}");
        }
    }

    #[test]
    fn glob_match_handles_stars() {
        let cases = [
            ("handle_*", "handle_call", true),
            ("handle_*", "handle_", true),
            ("handle_*", "handle", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("*call", "handle_call", true),
            ("*call", "handle_cast", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*ab", "aab", true),
            ("é*", "été", true),
        ];
        for (glob, text, expected) in cases {
            assert_eq!(glob_match(glob, text), expected, "{glob:?} vs {text:?}");
        }
    }

    #[test]
    fn matches_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, u8, bool)] = &[
            // Module only, dotted Elixir form: that module exactly.
            ("Todo.Server", "todo::server", "entries", 2, true),
            ("Todo.Server", "todo::server", "init", 0, true),
            ("Todo.Server", "todo::server::worker", "init", 1, false),
            ("Todo.Server", "todo", "init", 1, false),
            ("Todo.Server", "todo::cache", "init", 1, false),
            ("Todo.Server", "other::todo::server", "init", 1, false),
            // Rust notation.
            ("todo::server", "todo::server", "entries", 2, true),
            ("todo::server", "todo::server::worker", "entries", 2, false),
            ("todo", "todo", "main", 0, true),
            ("todo", "todo::server", "entries", 2, false),
            // CamelCase equivalence, both ways.
            ("TodoServer.Cache", "todo_server::cache", "get", 2, true),
            ("todo_server::cache", "TodoServer::Cache", "get", 2, true),
            ("TodoServer.Cache", "todoserver::cache", "get", 2, false),
            ("HTTPServer", "http_server", "serve", 1, true),
            // `-` in a pattern segment is `_`.
            ("my-crate::a", "my_crate::a", "f", 0, true),
            // Elixir prefix and quotes.
            ("Elixir.Todo.Server", "todo::server", "entries", 2, true),
            ("'Elixir.Todo.Server':entries/2", "todo::server", "entries", 2, true),
            ("'Elixir.Todo.Server':entries/2", "todo::server", "entries", 1, false),
            ("'todo::server':'entries'", "todo::server", "entries", 1, true),
            ("Elixir", "elixir", "f", 0, true),
            // Function, any arity.
            ("Todo.Server:entries", "todo::server", "entries", 0, true),
            ("Todo.Server:entries", "todo::server", "entries", 7, true),
            ("Todo.Server:entries", "todo::server", "entry", 2, false),
            ("Todo.Server:entries", "todo::server", "entries_all", 2, false),
            ("Todo.Server:entries", "todo::server::worker", "entries", 2, false),
            ("todo::server:entries", "todo::server", "entries", 2, true),
            ("todo::server:entries", "todo::server", "add", 2, false),
            // Function names are compared literally.
            ("Todo.Server:Entries", "todo::server", "entries", 2, false),
            ("Todo.Server:entries", "todo::server", "r#entries", 2, true),
            // Arity.
            ("Todo.Server:entries/2", "todo::server", "entries", 2, true),
            ("Todo.Server:entries/2", "todo::server", "entries", 3, false),
            ("Todo.Server:entries/2", "todo::server", "entries", 0, false),
            ("Todo.Server:entries/0", "todo::server", "entries", 0, true),
            ("Todo.Server:entries/255", "todo::server", "entries", 255, true),
            ("Todo.Server:entries/_", "todo::server", "entries", 9, true),
            ("Todo.Server:entries/*", "todo::server", "entries", 9, true),
            ("Todo.Server/1", "todo::server", "init", 1, true),
            ("Todo.Server/1", "todo::server", "init", 2, false),
            // Trailing `*` segment: zero or more further segments.
            ("todo::*", "todo", "main", 0, true),
            ("todo::*", "todo::server", "entries", 2, true),
            ("todo::*", "todo::a::b", "f", 1, true),
            ("todo::*", "todos::x", "f", 1, false),
            ("todo::*", "todos", "f", 1, false),
            ("todo::*", "other::todo", "f", 1, false),
            ("Todo.*", "todo::server", "f", 1, true),
            ("Todo.*:init", "todo::server::worker", "init", 1, true),
            ("Todo.*:init", "todo::server::worker", "start", 1, false),
            ("todo::_", "todo::server", "f", 1, true),
            // Inner `*` segment: exactly one segment.
            ("todo::*::worker", "todo::server::worker", "run", 1, true),
            ("todo::*::worker", "todo::worker", "run", 1, false),
            ("todo::*::worker", "todo::a::b::worker", "run", 1, false),
            ("todo::*::worker", "todo::server::worker::x", "run", 1, false),
            // Glob inside a segment.
            ("todo::serv*", "todo::server", "f", 1, true),
            ("todo::serv*", "todo::serv", "f", 1, true),
            ("todo::serv*", "todo::cache", "f", 1, false),
            ("todo::serv*", "todo::server::x", "f", 1, false),
            ("todo::*er", "todo::server", "f", 1, true),
            // Function globs.
            ("Todo.Server:handle_*", "todo::server", "handle_call", 3, true),
            ("Todo.Server:handle_*", "todo::server", "handle_cast", 2, true),
            ("Todo.Server:handle_*", "todo::server", "init", 1, false),
            ("Todo.Server:handle_*", "todo::cache", "handle_call", 3, false),
            ("Todo.Server:handle_*/2", "todo::server", "handle_cast", 2, true),
            ("Todo.Server:handle_*/2", "todo::server", "handle_call", 3, false),
            ("Todo.Server:*_call", "todo::server", "handle_call", 3, true),
            ("Todo.Server:_", "todo::server", "init", 1, true),
            ("Todo.Server:*", "todo::server", "init", 1, true),
            ("Todo.Server:_/1", "todo::server", "init", 1, true),
            ("Todo.Server:_/1", "todo::server", "init", 2, false),
            // Everything.
            ("*", "todo::server", "entries", 2, true),
            ("*", "a::b::c::d", "x", 255, true),
            ("*", "todo", "main", 0, true),
            ("*:*", "todo::server", "entries", 2, true),
            ("'*'", "todo::server", "entries", 2, true),
            ("*::*", "todo", "main", 0, true),
            ("*:entries", "anything::at::all", "entries", 1, true),
            ("*:entries", "anything::at::all", "other", 1, false),
            ("*:*/2", "todo", "f", 2, true),
            ("*:*/2", "todo", "f", 1, false),
            // Return suffix does not change what is selected.
            ("Todo.Server:entries -> return", "todo::server", "entries", 2, true),
            ("Todo.Server:entries->return", "todo::server", "entries", 2, true),
            ("Todo.Server:entries->return", "todo::server", "add", 2, false),
            // Whitespace is trimmed.
            ("  \tTodo.Server:entries/2 \n", "todo::server", "entries", 2, true),
        ];
        for &(input, module, function, arity, expected) in cases {
            let pattern =
                Pattern::parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
            assert_eq!(
                pattern.matches(module, function, arity),
                expected,
                "{input:?} (parsed as {pattern}) vs {module}:{function}/{arity}"
            );
        }
    }

    #[test]
    fn spellings_of_the_same_pattern_are_equal() {
        let groups: &[&[&str]] = &[
            &[
                "todo::server",
                "Todo.Server",
                "Elixir.Todo.Server",
                "'Elixir.Todo.Server'",
                "'todo::server'",
                "todo.server",
                "Todo::Server",
                "Todo.Server:_",
                "Todo.Server:*/_",
                " todo::server ",
            ],
            &[
                "todo::server:entries/2 -> return",
                "Todo.Server:entries/2->return",
                "'Elixir.Todo.Server':'entries'/2 ->   return",
            ],
            &["*", "*:*", "'*'", "*:_/_", "*::*", "_", "**", "Elixir.*"],
            &["todo::*", "Todo.*", "todo::**", "todo::_"],
            &["my_crate", "my-crate", "MyCrate"],
        ];
        for group in groups {
            let first = Pattern::parse(group[0]).unwrap();
            for input in &group[1..] {
                assert_eq!(
                    Pattern::parse(input).unwrap(),
                    first,
                    "{input:?} vs {:?}",
                    group[0]
                );
            }
        }
        assert_ne!(
            Pattern::parse("todo::server").unwrap(),
            Pattern::parse("todo::server -> return").unwrap()
        );
        assert_ne!(
            Pattern::parse("todo::server").unwrap(),
            Pattern::parse("todo::*").unwrap()
        );
    }

    #[test]
    fn accessors() {
        let p = Pattern::parse("Todo.Server:entries/2 -> return").unwrap();
        assert_eq!(p.arity(), Some(2));
        assert!(p.return_trace());
        assert!(!p.matches_everything());

        let p = Pattern::parse("Todo.Server:entries/_").unwrap();
        assert_eq!(p.arity(), None);
        assert!(!p.return_trace());

        assert_eq!(Pattern::parse("x/0").unwrap().arity(), Some(0));
        assert_eq!(Pattern::parse("x:f/255").unwrap().arity(), Some(255));
    }

    #[test]
    fn matches_everything_only_for_unrestricted_patterns() {
        let cases = [
            ("*", true),
            ("*:*", true),
            ("'*'", true),
            ("*:_", true),
            ("*:*/_", true),
            ("*::*", true),
            ("* -> return", true),
            ("_", true),
            ("*:*/2", false),
            ("*:entries", false),
            ("*:handle_*", false),
            ("*::*::*", false),
            ("todo::*", false),
            ("*::server", false),
            ("s*", false),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Pattern::parse(input).unwrap().matches_everything(),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn errors_table() {
        use PatternErrorKind as K;
        #[rustfmt::skip]
        let cases: &[(&str, PatternErrorKind, usize)] = &[
            ("", K::Empty, 1),
            ("   ", K::Empty, 1),
            ("Todo..Server", K::EmptyModuleSegment, 6),
            ("todo::", K::EmptyModuleSegment, 7),
            ("todo::::server", K::EmptyModuleSegment, 7),
            ("Todo.", K::EmptyModuleSegment, 6),
            (".Todo", K::EmptyModuleSegment, 1),
            (":entries", K::EmptyModuleSegment, 1),
            ("  :entries", K::EmptyModuleSegment, 3),
            ("todo:::entries", K::EmptyModuleSegment, 7),
            ("/2", K::EmptyModuleSegment, 1),
            ("-> return", K::EmptyModuleSegment, 1),
            ("Elixir.", K::EmptyModuleSegment, 8),
            ("''", K::EmptyModuleSegment, 2),
            ("Todo.Server:", K::EmptyFunction, 13),
            ("Todo.Server:/2", K::EmptyFunction, 13),
            ("Todo.Server:->return", K::EmptyFunction, 13),
            ("Todo.Server:''", K::EmptyFunction, 14),
            ("Todo.Server:entries/x", K::BadArity, 21),
            ("Todo.Server:entries/300", K::BadArity, 21),
            ("Todo.Server:entries/256", K::BadArity, 21),
            ("Todo.Server:entries/", K::BadArity, 21),
            ("Todo.Server:entries/2x", K::BadArity, 22),
            ("Todo.Server:entries/-1", K::BadArity, 21),
            ("Todo.Server:entries/ 2", K::BadArity, 21),
            ("Todo.Ser ver", K::UnexpectedCharacter(' '), 9),
            ("todo::server(", K::UnexpectedCharacter('('), 13),
            ("todo::server:entries()", K::UnexpectedCharacter('('), 21),
            ("todo::server:handle-call", K::UnexpectedCharacter('-'), 20),
            ("todo::server:entries/2 foo", K::UnexpectedCharacter(' '), 23),
            ("Todo.Server : entries", K::UnexpectedCharacter(' '), 12),
            ("Todo.Server: entries", K::UnexpectedCharacter(' '), 13),
            ("Todo.Server:entries/2/3", K::UnexpectedCharacter('/'), 22),
            ("todo::server:a:b", K::UnexpectedCharacter(':'), 15),
            ("(todo", K::UnexpectedCharacter('('), 1),
            ("todo.$", K::UnexpectedCharacter('$'), 6),
            ("'Todo.Server:entries'", K::UnexpectedCharacter(':'), 13),
            ("Todo.Server>return", K::UnexpectedCharacter('>'), 12),
            ("Todo.Server -> ret", K::BadSuffix, 16),
            ("Todo.Server ->", K::BadSuffix, 15),
            ("Todo.Server -> return stack", K::BadSuffix, 23),
            ("Todo.Server -> return()", K::BadSuffix, 22),
            ("Todo.Server:entries/2 -> returns", K::BadSuffix, 26),
            ("Todo.Server - return", K::BadSuffix, 13),
            ("Todo.Server > return", K::BadSuffix, 13),
            ("'Todo.Server", K::UnbalancedQuote, 1),
            ("'Elixir.Todo.Server:entries/2", K::UnbalancedQuote, 1),
            ("Todo.Server'", K::UnbalancedQuote, 12),
            ("Todo.Server:'entries", K::UnbalancedQuote, 13),
            ("Todo.Server:entries'", K::UnbalancedQuote, 20),
        ];
        for (input, kind, column) in cases {
            let err = Pattern::parse(input).expect_err(input);
            assert_eq!(
                (err.reason(), err.column()),
                (kind, *column),
                "{input:?}: got {err}"
            );
            assert_eq!(err.input(), *input);
            let message = err.to_string();
            assert!(!message.contains('\n'), "one line: {message:?}");
            assert!(
                message.contains(&format!("at column {column}")),
                "{message}"
            );
        }
    }

    /// Every string up to four characters over an alphabet of the syntax's
    /// characters either parses and round-trips through `Display`, or fails
    /// with a column inside (or just past) the input; nothing panics.
    #[test]
    fn short_inputs_parse_or_fail_cleanly() {
        let alphabet = [
            'T', 'o', '.', ':', '*', '_', '/', '2', '-', '>', ' ', '\'', 'é',
        ];
        let mut inputs = vec![String::new()];
        let (mut parsed, mut failed) = (0, 0);
        for _ in 0..4 {
            inputs = inputs
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            for input in &inputs {
                match Pattern::parse(input) {
                    Ok(p) => {
                        parsed += 1;
                        let shown = p.to_string();
                        assert_eq!(Pattern::parse(&shown).as_ref(), Ok(&p), "{input:?}");
                    }
                    Err(e) => {
                        failed += 1;
                        let len = input.chars().count();
                        assert!((1..=len + 1).contains(&e.column()), "{input:?}: {e}");
                    }
                }
            }
        }
        assert!(
            parsed > 100 && failed > 100,
            "{parsed} parsed, {failed} failed"
        );
    }

    #[test]
    fn error_columns_count_characters_not_bytes() {
        let err = Pattern::parse("été..x").unwrap_err();
        assert_eq!(err.reason(), &PatternErrorKind::EmptyModuleSegment);
        assert_eq!(err.column(), 5);
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                "Todo..Server",
                r#"invalid pattern "Todo..Server": empty module segment at column 6"#,
            ),
            (
                "todo::server(",
                r#"invalid pattern "todo::server(": unexpected character '(' at column 13"#,
            ),
            (
                "a\nb",
                r#"invalid pattern "a\nb": unexpected character '\n' at column 2"#,
            ),
            (
                "x/300",
                r#"invalid pattern "x/300": arity must be 0 to 255, `_` or `*` at column 3"#,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(Pattern::parse(input).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let cases = [
            ("Todo.Server", "todo::server"),
            ("'Elixir.Todo.Server':entries/2", "todo::server:entries/2"),
            (
                "Todo.Server:entries->return",
                "todo::server:entries -> return",
            ),
            ("TodoServer.Cache:get/_", "todo_server::cache:get"),
            ("Todo.Server/1", "todo::server:*/1"),
            ("Todo.Server:_/1", "todo::server:*/1"),
            ("todo::*", "todo::*"),
            ("todo::*::worker:run", "todo::*::worker:run"),
            ("todo::serv**", "todo::serv*"),
            ("*", "*"),
            ("*:*", "*"),
            ("'*'", "*"),
            ("*::*", "*"),
            ("*::*::*", "*::*::*"),
            ("*:entries", "*:entries"),
            ("*/3 -> return", "*:*/3 -> return"),
            (
                "my-crate::HTTPServer:handle_**",
                "my_crate::http_server:handle_*",
            ),
            ("Todo.Server:Entries", "todo::server:Entries"),
        ];
        for (input, expected) in cases {
            let pattern = Pattern::parse(input).unwrap();
            let shown = pattern.to_string();
            assert_eq!(shown, expected, "display of {input:?}");
            assert_eq!(
                Pattern::parse(&shown).unwrap(),
                pattern,
                "round trip of {input:?}"
            );
            assert_eq!(
                shown.parse::<Pattern>().unwrap(),
                pattern,
                "FromStr of {input:?}"
            );
        }
    }

    #[test]
    fn serde_json_round_trip() {
        let pattern = Pattern::parse("Todo.Server:entries/2 -> return").unwrap();
        let json = serde_json::to_string(&pattern).unwrap();
        assert_eq!(json, r#""todo::server:entries/2 -> return""#);
        let back: Pattern = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pattern);

        // Deserialising accepts any spelling, including an escaped string.
        let back: Pattern =
            serde_json::from_str(r#""'Elixir.Todo.Server':entries/2\t->return""#).unwrap();
        assert_eq!(back, pattern);

        let list: Vec<Pattern> = serde_json::from_str(r#"["*", "todo::*"]"#).unwrap();
        assert!(list[0].matches_everything());
        assert!(list[1].matches("todo::a", "f", 0));

        let err = serde_json::from_str::<Pattern>(r#""Todo..Server""#).unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"invalid pattern "Todo..Server": empty module segment at column 6"#),
            "{err}"
        );
        assert!(serde_json::from_str::<Pattern>("42").is_err());
    }
}
