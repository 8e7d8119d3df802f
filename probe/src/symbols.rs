//! The functions a binary can be probed at: its ELF symbol table, demangled
//! into Rust paths and split the way a [`Pattern`] reads them.
//!
//! A Rust binary's `.symtab` names every function that was not inlined, by
//! its mangled path (legacy `_ZN...E` or v0 `_R...`). Demangled without the
//! hash, that path is what an operator types: `plain::work::step`. Nothing
//! here needs Linux: it reads bytes, so it is tested everywhere.
//!
//! A shared library is read the same way ([`library_functions`]), from its
//! `.symtab` if it kept one and its `.dynsym` (the exported functions, all
//! a stripped library still names). Its Rust functions keep their paths;
//! a symbol that is not Rust's (C's: `getpid`) is put in a module named
//! after the library, its file name before `.so` (`libc.so.6` → `libc`),
//! so that `libc:getpid` selects it.

use std::io::{self, Write};

use nodetrace_protocol::{CallsiteInfo, Pattern};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolFlags, SymbolKind};
use serde::Serialize;

use crate::ProbeError;
use crate::dwarf::Param;

/// A function of the binary, where a probe can go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Function {
    /// The demangled path without its hash, generics kept:
    /// `plain::work::step`, `<plain::Counter as core::fmt::Debug>::fmt`,
    /// `plain::work::twice::<u32>` (v0 mangling names type arguments;
    /// legacy mangling does not).
    pub path: String,
    /// The module: every segment but the function's (and its type's).
    pub module: String,
    /// For a method, its type, as the path names it (a segment that
    /// starts with a capital letter, or the `T` of `<T as Trait>`).
    pub self_type: Option<String>,
    /// For a trait method, the trait.
    pub trait_name: Option<String>,
    /// The function's own name, type arguments stripped: `step`.
    pub function: String,
    /// Its address in the binary (before the loader moves a PIE).
    pub address: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Where its first instruction is in the file: what a uprobe takes.
    pub file_offset: u64,
    /// A copy of a generic function: its type arguments (`u32`), from a
    /// v0 symbol or, for a legacy one, from the debug info.
    pub generics: Option<String>,
    /// Its source file, if the binary has debug info.
    pub file: Option<String>,
    /// Its first line there.
    pub line: Option<u32>,
    /// Its parameters, if the binary has debug info.
    pub params: Option<Vec<Param>>,
    /// Its return type, if it has one and the debug info says.
    pub returns: Option<Param>,
    /// The shared library it is in, by the path the process maps it at;
    /// `None` for a function of the binary itself.
    pub library: Option<String>,
}

impl Function {
    /// Whether `pattern` selects this function. The symbol table does not
    /// say how many parameters a function has, so a pattern's `/arity` does
    /// not filter here (it says how many argument registers to show).
    pub fn matches(&self, pattern: &Pattern) -> bool {
        pattern.matches_method(
            &self.module,
            self.self_type.as_deref(),
            &self.function,
            pattern.arity().unwrap_or(0),
        )
    }

    /// This function as a callsite the tracer's renderers name, with id
    /// `id` and arity `arity`; its file is its source file, else its
    /// library, else `binary`. A generic function's copy is named with its type
    /// arguments: `twice::<u32>`.
    pub fn callsite(&self, id: u32, arity: u8, binary: &str) -> CallsiteInfo {
        CallsiteInfo {
            id,
            module: self.module.clone(),
            function: match &self.generics {
                Some(g) => format!("{}::<{g}>", self.function),
                None => self.function.clone(),
            },
            self_type: self.self_type.clone(),
            trait_name: self.trait_name.clone(),
            arity,
            file: self
                .file
                .clone()
                .or_else(|| self.library.clone())
                .unwrap_or_else(|| binary.to_owned()),
            line: self.line.unwrap_or(0),
            ..CallsiteInfo::default()
        }
    }

    /// How many parameters the debug info gives it.
    pub fn arity(&self) -> Option<u8> {
        self.params
            .as_ref()
            .map(|p| u8::try_from(p.len()).unwrap_or(u8::MAX))
    }
}

/// Every probeable function of an ELF file: defined text symbols of nonzero
/// size that demangle as Rust (C and assembly symbols are kept by their
/// name, as a function of the empty module), one per address, sorted by
/// path.
///
/// # Errors
///
/// [`ProbeError::NotElf`] if `data` is not an ELF file, or
/// [`ProbeError::NoSymbols`] if it has no symbol table (a stripped binary).
pub fn functions(data: &[u8]) -> Result<Vec<Function>, ProbeError> {
    read(data, None)
}

/// Every probeable function of the shared library `path` (as the process
/// maps it) whose bytes are `data`, as [`functions`] reads a binary's,
/// from its `.symtab` and `.dynsym`: a symbol that is not Rust's goes in
/// the module [`library_module`] names, and each function says its
/// library.
///
/// # Errors
///
/// Those of [`functions`].
pub fn library_functions(data: &[u8], path: &str) -> Result<Vec<Function>, ProbeError> {
    read(data, Some(path))
}

/// The module a library's C symbols are put in: its file name before
/// `.so` (`/usr/lib/libc.so.6` → `libc`, `ld-linux-x86-64.so.2` →
/// `ld-linux-x86-64`, which a pattern may write with `_`).
///
/// ```
/// use nodetrace_probe::symbols::library_module;
///
/// assert_eq!(library_module("/usr/lib/x86_64-linux-gnu/libc.so.6"), "libc");
/// assert_eq!(library_module("libprobelib.so"), "libprobelib");
/// ```
pub fn library_module(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.find(".so").map_or(name, |end| &name[..end]);
    stem.to_owned()
}

fn read(data: &[u8], library: Option<&str>) -> Result<Vec<Function>, ProbeError> {
    let file = object::File::parse(data).map_err(|e| ProbeError::NotElf(e.to_string()))?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(ProbeError::NotElf(format!("{:?}", file.format())));
    }
    let segments: Vec<(u64, u64, u64)> = file
        .segments()
        .map(|s| (s.address(), s.size(), s.file_range().0))
        .collect();
    let symbols: Vec<_> = file.symbols().chain(file.dynamic_symbols()).collect();
    if symbols.is_empty() {
        return Err(ProbeError::NoSymbols);
    }
    let c_module = library.map(library_module).unwrap_or_default();
    // One function an address: of its names (aliases: glibc's `__getpid`
    // and `getpid`), the first one not starting with `_`, else the first.
    let mut at: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut out: Vec<Function> = Vec::new();
    for symbol in symbols {
        if symbol.kind() != SymbolKind::Text || symbol.is_undefined() || symbol.size() == 0 {
            continue;
        }
        // An IFUNC's address is a resolver that picks the implementation
        // at load time (glibc's `memcpy`, `strlen`): probing it would count
        // the resolver's one call, not the function's.
        if let SymbolFlags::Elf { st_info, .. } = symbol.flags()
            && st_info.st_type() == object::elf::STT_GNU_IFUNC
        {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let address = symbol.address();
        let Some(file_offset) = segments
            .iter()
            .find(|(start, size, _)| (*start..start + size).contains(&address))
            .map(|(start, _, offset)| address - start + offset)
        else {
            continue;
        };
        let rust = rustc_demangle::try_demangle(name).is_ok();
        let path = match rust {
            false if !c_module.is_empty() => format!("{c_module}::{name}"),
            _ => demangle(name),
        };
        let (module, self_type, trait_name, function) = if rust {
            split(&path)
        } else {
            (c_module.clone(), None, None, name.to_owned())
        };
        let f = Function {
            generics: type_arguments(&path),
            path,
            module,
            self_type,
            trait_name,
            function,
            address,
            size: symbol.size(),
            file_offset,
            file: None,
            line: None,
            params: None,
            returns: None,
            library: library.map(str::to_owned),
        };
        match at.get(&address) {
            Some(&i) => {
                if out[i].function.starts_with('_') && !f.function.starts_with('_') {
                    out[i] = f;
                }
            }
            None => {
                at.insert(address, out.len());
                out.push(f);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.address.cmp(&b.address)));
    Ok(out)
}

/// The type arguments of a function's own segment: `u32` of
/// `plain::work::twice::<u32>` (a v0 symbol names them).
fn type_arguments(path: &str) -> Option<String> {
    let last = top_level_segments(path).pop()?;
    let (_, arguments) = last.split_once("::<")?;
    arguments.strip_suffix('>').map(str::to_owned)
}

/// The Rust path of a symbol without its hash; a symbol that is not Rust's
/// is returned as it is.
///
/// ```
/// use nodetrace_probe::symbols::demangle;
///
/// assert_eq!(demangle("_ZN5plain4work4step17h0123456789abcdefE"), "plain::work::step");
/// assert_eq!(demangle("memcpy"), "memcpy");
/// ```
pub fn demangle(symbol: &str) -> String {
    match rustc_demangle::try_demangle(symbol) {
        Ok(d) => format!("{d:#}"),
        Err(_) => symbol.to_owned(),
    }
}

/// Splits a demangled path into module, type, trait and function name.
fn split(path: &str) -> (String, Option<String>, Option<String>, String) {
    let mut segments = top_level_segments(path);
    // `step::<u32>`: type arguments belong to the function's segment.
    let function = segments.pop().unwrap_or_default();
    let function = strip_generics(&function).to_owned();
    if let [only] = &segments[..]
        && let Some(inner) = only.strip_prefix('<').and_then(|s| s.strip_suffix('>'))
    {
        // `<plain::Counter as core::fmt::Debug>::fmt`, `<u8>::max`.
        let (ty, tr) = match split_as(inner) {
            Some((ty, tr)) => (ty, Some(tr.to_owned())),
            None => (inner, None),
        };
        let mut ty_segments = top_level_segments(ty);
        let ty_name = ty_segments.pop().map(|t| strip_generics(&t).to_owned());
        return (ty_segments.join("::"), ty_name, tr, function);
    }
    let self_type = match segments.last() {
        Some(last) if last.starts_with(|c: char| c.is_ascii_uppercase()) => {
            segments.pop().map(|t| strip_generics(&t).to_owned())
        }
        _ => None,
    };
    (segments.join("::"), self_type, None, function)
}

/// `a::b<c::d>::e::<f>` → `a`, `b<c::d>`, `e::<f>`: splits at the `::`
/// outside angle brackets, keeping a `::<..>` turbofish on its segment.
fn top_level_segments(path: &str) -> Vec<String> {
    let mut segments: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ':' if depth == 0 && chars.peek() == Some(&':') => {
                chars.next();
                if chars.peek() == Some(&'<') && !current.is_empty() {
                    current.push_str("::");
                    continue;
                }
                segments.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    segments.push(current);
    segments
}

/// `T as Trait` at the top level of an `<..>`.
fn split_as(inner: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ' ' if depth == 0 && inner[i..].starts_with(" as ") => {
                return Some((&inner[..i], &inner[i + 4..]));
            }
            _ => {}
        }
    }
    None
}

fn strip_generics(segment: &str) -> &str {
    let end = segment.find('<').unwrap_or(segment.len());
    segment[..end].trim_end_matches("::")
}

/// The functions any of `patterns` selects.
pub fn select<'a>(functions: &'a [Function], patterns: &[Pattern]) -> Vec<&'a Function> {
    functions
        .iter()
        .filter(|f| patterns.iter().any(|p| f.matches(p)))
        .collect()
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    binary: &'a str,
    #[serde(flatten)]
    function: &'a Function,
}

/// Writes `functions` of `binary` for `nodetrace ls --pid`: a line each,
/// `address size path`, `file:line` where the debug info says and, for a
/// function of a shared library, the library's file name in brackets
/// (`[libc.so.6]`), or (`json`) one object a line.
///
/// # Errors
///
/// Errors of `w`.
pub fn write_list(
    w: &mut dyn Write,
    binary: &str,
    functions: &[&Function],
    json: bool,
) -> io::Result<()> {
    for f in functions {
        if json {
            let object = FunctionJson {
                kind: "probe_function",
                binary,
                function: f,
            };
            serde_json::to_writer(&mut *w, &object)?;
            writeln!(w)?;
        } else {
            write!(w, "{:#014x} {:>7} {}", f.address, f.size, f.path)?;
            match (&f.file, f.line) {
                (Some(file), Some(line)) => write!(w, " {file}:{line}")?,
                (Some(file), None) => write!(w, " {file}")?,
                _ => {}
            }
            if let Some(library) = &f.library {
                write!(w, " [{}]", library.rsplit('/').next().unwrap_or(library))?;
            }
            writeln!(w)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> (String, Option<String>, Option<String>, String) {
        split(path)
    }

    #[test]
    fn paths_split_into_module_type_and_function() {
        assert_eq!(
            parts("plain::work::step"),
            ("plain::work".into(), None, None, "step".into())
        );
        assert_eq!(
            parts("regex::regex::string::Regex::is_match"),
            (
                "regex::regex::string".into(),
                Some("Regex".into()),
                None,
                "is_match".into()
            )
        );
        assert_eq!(
            parts("<plain::work::Counter as core::fmt::Debug>::fmt"),
            (
                "plain::work".into(),
                Some("Counter".into()),
                Some("core::fmt::Debug".into()),
                "fmt".into()
            )
        );
        assert_eq!(
            parts("plain::work::twice::<u32>"),
            ("plain::work".into(), None, None, "twice".into())
        );
        assert_eq!(
            parts("core::ptr::drop_in_place<alloc::vec::Vec<u8>>"),
            ("core::ptr".into(), None, None, "drop_in_place".into())
        );
        assert_eq!(
            parts("memcpy"),
            (String::new(), None, None, "memcpy".into())
        );
    }

    #[test]
    fn legacy_and_v0_symbols_demangle_without_hash() {
        assert_eq!(
            demangle("_ZN5plain4work4step17h0123456789abcdefE"),
            "plain::work::step"
        );
        // v0: `plain::work::step` in crate `plain` with a disambiguator.
        assert_eq!(
            demangle("_RNvNtCs1234_5plain4work4step"),
            "plain::work::step"
        );
        assert_eq!(demangle("main"), "main");
    }

    fn function(path: &str) -> Function {
        let (module, self_type, trait_name, function) = split(path);
        Function {
            path: path.into(),
            module,
            self_type,
            trait_name,
            function,
            address: 0x1000,
            size: 16,
            file_offset: 0x1000,
            generics: type_arguments(path),
            file: None,
            line: None,
            params: None,
            returns: None,
            library: None,
        }
    }

    #[test]
    fn patterns_select_by_rust_path_and_beam_form() {
        let step = function("plain::work::step");
        let get = function("kv::store::Store::get");
        let select = |p: &str, f: &Function| f.matches(&p.parse().unwrap());
        assert!(select("plain::work:step", &step));
        assert!(select("Plain.Work:step", &step));
        assert!(select("plain::work", &step));
        assert!(select("plain::*", &step));
        assert!(select("plain::work:step/3", &step), "arity does not filter");
        assert!(!select("plain::work:stop", &step));
        assert!(!select("plain", &step));
        assert!(select("kv::store::Store::get", &get));
        assert!(select("Kv.Store:Store::get", &get));
        assert!(!select("kv::store:Cache::get", &get));
    }

    #[test]
    fn this_test_binary_lists_its_own_functions() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let all = functions(&exe).unwrap();
        let me = all
            .iter()
            .find(|f| {
                f.path
                    .ends_with("symbols::tests::this_test_binary_lists_its_own_functions")
            })
            .expect("the test function is in the symbol table");
        assert_eq!(me.function, "this_test_binary_lists_its_own_functions");
        assert!(me.size > 0);
        let mut addresses: Vec<u64> = all.iter().map(|f| f.address).collect();
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), all.len(), "one function per address");
    }

    #[test]
    fn text_that_is_not_elf_is_refused() {
        assert!(matches!(
            functions(b"#!/bin/sh\necho hi\n"),
            Err(ProbeError::NotElf(_))
        ));
    }

    #[test]
    fn generic_copies_carry_their_type_arguments() {
        assert_eq!(
            type_arguments("plain::work::twice::<u32>").as_deref(),
            Some("u32")
        );
        assert_eq!(
            type_arguments("a::b::<(u8, alloc::vec::Vec<u8>)>").as_deref(),
            Some("(u8, alloc::vec::Vec<u8>)")
        );
        assert_eq!(type_arguments("core::ptr::drop_in_place<u8>"), None);
        assert_eq!(type_arguments("plain::work::step"), None);
        let twice = function("plain::work::twice::<u64>");
        assert_eq!(twice.function, "twice");
        assert_eq!(
            twice.callsite(0, 1, "plain").mfa(),
            "plain::work:twice::<u64>/1"
        );
        // A legacy symbol, named by the debug info.
        let mut legacy = function("plain::work::twice");
        crate::dwarf::tests::name(&mut legacy, "twice<u32>");
        assert_eq!(legacy.path, "plain::work::twice::<u32>");
        assert_eq!(legacy.generics.as_deref(), Some("u32"));
    }

    #[test]
    fn lists_print_address_size_and_path() {
        let mut step = function("plain::work::step");
        let mut out = Vec::new();
        write_list(&mut out, "plain", &[&step], false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0x000000001000      16 plain::work::step\n"
        );
        step.file = Some("src/work.rs".into());
        step.line = Some(12);
        let mut out = Vec::new();
        write_list(&mut out, "plain", &[&step], false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0x000000001000      16 plain::work::step src/work.rs:12\n"
        );
        let mut out = Vec::new();
        write_list(&mut out, "plain", &[&step], true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "probe_function");
        assert_eq!(v["path"], "plain::work::step");
        assert_eq!(v["address"], 0x1000);
        assert_eq!(v["library"], serde_json::Value::Null);
        let mut getpid = function("libc::getpid");
        getpid.library = Some("/usr/lib/libc.so.6".into());
        let mut out = Vec::new();
        write_list(&mut out, "plain", &[&getpid], false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0x000000001000      16 libc::getpid [libc.so.6]\n"
        );
    }

    #[test]
    fn a_library_names_its_c_symbols_by_its_file_name() {
        assert_eq!(library_module("/lib/libc.so.6"), "libc");
        assert_eq!(
            library_module("/lib/ld-linux-x86-64.so.2"),
            "ld-linux-x86-64"
        );
        assert_eq!(library_module("/opt/libfoo.so"), "libfoo");
        assert_eq!(library_module("/opt/plugin"), "plugin");
        let mut getpid = function("libc::getpid");
        getpid.library = Some("/lib/libc.so.6".into());
        let select = |p: &str| getpid.matches(&p.parse().unwrap());
        assert!(select("libc:getpid"));
        assert!(select("libc::getpid"));
        assert!(select("libc:get*"));
        assert!(!select("getpid"));
        assert_eq!(getpid.callsite(0, 0, "plain").file, "/lib/libc.so.6");
    }
}
