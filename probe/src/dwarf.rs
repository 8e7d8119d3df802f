//! What a binary's DWARF says of its functions, when it has debug info:
//! where each one is in the source (`addr2line`), its name with its type
//! arguments, its parameters' names and types and its return type
//! (`gimli`, from the `DW_TAG_subprogram` at the function's address).
//!
//! A type is kept as the [`Kind`] that says how to read a value of it from
//! registers: the System V convention passes an integer, `bool`, `char` or
//! pointer in one integer register and a `&str` or slice in two (pointer,
//! length); a float goes in an SSE register, which a sample does not
//! carry; a zero-sized value takes none. Any other type (a struct or an
//! enum) is passed in a way that depends on its layout, so the registers
//! after it are not named.

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, constants};
use object::{Object, ObjectSection};
use serde::Serialize;

use crate::Function;

/// How a value of a type sits in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An unsigned integer of this many bytes.
    Unsigned(u8),
    /// A signed integer of this many bytes.
    Signed(u8),
    /// `bool`.
    Bool,
    /// `char`.
    Char,
    /// A float (in an SSE register: not read).
    Float,
    /// A reference or raw pointer.
    Pointer,
    /// `&str`: pointer and length.
    Str,
    /// `&[u8]`: pointer and length.
    Bytes,
    /// Another slice: pointer and length.
    Slice,
    /// A zero-sized value: no register.
    Zero,
    /// A value of more than two registers (16 bytes): as an argument, a
    /// pointer to it in one register; as a return value, returned through
    /// a hidden pointer the caller passes first (in rdi), so the
    /// arguments start one register later. (rustc's x86-64 ABI.)
    Indirect,
    /// Anything else.
    Other,
}

impl Kind {
    /// The integer registers a value of this kind takes; `None`: unknown.
    pub fn registers(self) -> Option<usize> {
        match self {
            Kind::Unsigned(n) | Kind::Signed(n) if n > 8 => Some(2),
            Kind::Unsigned(_) | Kind::Signed(_) | Kind::Bool | Kind::Char | Kind::Pointer => {
                Some(1)
            }
            Kind::Str | Kind::Bytes | Kind::Slice => Some(2),
            Kind::Indirect => Some(1),
            Kind::Float | Kind::Zero => Some(0),
            Kind::Other => None,
        }
    }
}

/// A parameter, or a return type (no name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Param {
    /// Its name (`_` if the debug info has none).
    pub name: String,
    /// Its type as the debug info names it: `u64`, `&str`.
    #[serde(rename = "type")]
    pub ty: String,
    /// How its value sits in registers.
    pub kind: Kind,
}

/// What the debug info says of one function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Info {
    /// `twice<u32>`: the name with its type arguments.
    name: Option<String>,
    params: Vec<Param>,
    returns: Option<Param>,
}

type R<'a> = EndianSlice<'a, RunTimeEndian>;

/// Adds to the functions of `functions` that `wanted` selects what the
/// DWARF of the ELF file `data` says: source file and line, parameters,
/// return type, and the type arguments of a generic function whose
/// (legacy) symbol does not name them. Only the compilation units that
/// hold a wanted function are read. A binary without debug info is left
/// as it is.
pub fn annotate(data: &[u8], functions: &mut [Function], wanted: impl Fn(&Function) -> bool) {
    let Ok(file) = object::File::parse(data) else {
        return;
    };
    if file.section_by_name(".debug_info").is_none() {
        return;
    }
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let Ok(sections) = gimli::DwarfSections::load(load) else {
        return;
    };
    let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
    let mut addresses: Vec<u64> = functions
        .iter()
        .filter(|f| wanted(f))
        .map(|f| f.address)
        .collect();
    if addresses.is_empty() {
        return;
    }
    addresses.sort_unstable();
    let infos = subprograms(&dwarf, &addresses);
    let lines = addr2line::Context::from_dwarf(sections.borrow(|s| EndianSlice::new(s, endian)));
    for f in functions.iter_mut() {
        if addresses.binary_search(&f.address).is_err() {
            continue;
        }
        if let Ok(context) = &lines
            && let Ok(Some(location)) = context.find_location(f.address)
        {
            f.file = location.file.map(str::to_owned);
            f.line = location.line;
        }
        if let Some(info) = infos.get(&f.address) {
            f.params = Some(info.params.clone());
            f.returns = info.returns.clone();
            if let Some(name) = &info.name {
                name_type_arguments(f, name);
            }
        }
    }
}

/// `twice<u32>` names a copy of the generic `twice`: its type arguments go
/// into the path (`plain::work::twice::<u32>`, as v0 mangling writes it)
/// when the symbol did not carry them.
fn name_type_arguments(f: &mut Function, name: &str) {
    let Some(open) = name.find('<') else { return };
    if f.generics.is_some() || name[..open] != f.function || !name.ends_with('>') {
        return;
    }
    let arguments = &name[open + 1..name.len() - 1];
    f.generics = Some(arguments.to_owned());
    f.path = format!("{}::<{arguments}>", f.path);
}

/// The subprograms at `addresses` (sorted), by address.
fn subprograms<'a>(dwarf: &gimli::Dwarf<R<'a>>, addresses: &[u64]) -> HashMap<u64, Info> {
    let wanted = |a: &u64| addresses.binary_search(a).is_ok();
    let mut out = HashMap::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        if !holds_any(dwarf, &unit, addresses) {
            continue;
        }
        let mut cursor = unit.entries();
        // The subprogram being read: its depth and address.
        let mut current: Option<(isize, u64)> = None;
        while let Ok(Some(entry)) = cursor.next_dfs() {
            let depth = entry.depth();
            if current.is_some_and(|(d, _)| depth <= d) {
                current = None;
            }
            match entry.tag() {
                constants::DW_TAG_subprogram => {
                    let low = entry
                        .attr_value(constants::DW_AT_low_pc)
                        .and_then(|v| dwarf.attr_address(&unit, v).ok().flatten());
                    if let Some(low) = low.filter(wanted) {
                        let info = Info {
                            name: name(dwarf, &unit, entry),
                            params: Vec::new(),
                            returns: type_of(dwarf, &unit, entry).map(|(ty, kind)| Param {
                                name: String::new(),
                                ty,
                                kind,
                            }),
                        };
                        out.insert(low, info);
                        current = Some((depth, low));
                    }
                }
                constants::DW_TAG_formal_parameter => {
                    if let Some((d, low)) = current
                        && depth == d + 1
                        && let Some(info) = out.get_mut(&low)
                    {
                        let (ty, kind) = type_of(dwarf, &unit, entry)
                            .unwrap_or_else(|| ("?".to_owned(), Kind::Other));
                        info.params.push(Param {
                            name: name(dwarf, &unit, entry).unwrap_or_else(|| "_".to_owned()),
                            ty,
                            kind,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Whether the unit's code covers one of `addresses` (sorted); a unit
/// whose ranges cannot be read is read whole.
fn holds_any(dwarf: &gimli::Dwarf<R<'_>>, unit: &gimli::Unit<R<'_>>, addresses: &[u64]) -> bool {
    let Ok(mut ranges) = dwarf.unit_ranges(unit) else {
        return true;
    };
    while let Ok(Some(range)) = ranges.next() {
        let first = addresses.partition_point(|&a| a < range.begin);
        if addresses.get(first).is_some_and(|&a| a < range.end) {
            return true;
        }
    }
    false
}

/// An entry's `DW_AT_name`, or that of the entry it stands for (an
/// out-of-line copy of an inlined function names its origin).
fn name<'a>(
    dwarf: &gimli::Dwarf<R<'a>>,
    unit: &gimli::Unit<R<'a>>,
    entry: &gimli::DebuggingInformationEntry<R<'a>>,
) -> Option<String> {
    if let Some(value) = entry.attr_value(constants::DW_AT_name) {
        return dwarf
            .attr_string(unit, value)
            .ok()
            .map(|s| s.to_string_lossy().into_owned());
    }
    let origin = origin(unit, entry)?;
    let value = origin.attr_value(constants::DW_AT_name)?;
    dwarf
        .attr_string(unit, value)
        .ok()
        .map(|s| s.to_string_lossy().into_owned())
}

fn origin<'a>(
    unit: &gimli::Unit<R<'a>>,
    entry: &gimli::DebuggingInformationEntry<R<'a>>,
) -> Option<gimli::DebuggingInformationEntry<R<'a>>> {
    [
        constants::DW_AT_abstract_origin,
        constants::DW_AT_specification,
    ]
    .into_iter()
    .find_map(|at| match entry.attr_value(at) {
        Some(AttributeValue::UnitRef(offset)) => unit.entry(offset).ok(),
        _ => None,
    })
}

/// The name and kind of an entry's `DW_AT_type` (or its origin's).
fn type_of<'a>(
    dwarf: &gimli::Dwarf<R<'a>>,
    unit: &gimli::Unit<R<'a>>,
    entry: &gimli::DebuggingInformationEntry<R<'a>>,
) -> Option<(String, Kind)> {
    let value = entry
        .attr_value(constants::DW_AT_type)
        .or_else(|| origin(unit, entry)?.attr_value(constants::DW_AT_type))?;
    let AttributeValue::UnitRef(offset) = value else {
        return None;
    };
    let ty = unit.entry(offset).ok()?;
    let name = name(dwarf, unit, &ty).unwrap_or_else(|| "?".to_owned());
    let size = ty
        .attr_value(constants::DW_AT_byte_size)
        .and_then(|v| v.udata_value());
    let kind = match ty.tag() {
        constants::DW_TAG_base_type => {
            let bytes = size.and_then(|s| u8::try_from(s).ok()).unwrap_or(8);
            match ty.attr_value(constants::DW_AT_encoding) {
                Some(AttributeValue::Encoding(e)) => match e {
                    constants::DW_ATE_boolean => Kind::Bool,
                    constants::DW_ATE_UTF => Kind::Char,
                    constants::DW_ATE_float => Kind::Float,
                    constants::DW_ATE_signed | constants::DW_ATE_signed_char => Kind::Signed(bytes),
                    constants::DW_ATE_unsigned | constants::DW_ATE_unsigned_char => {
                        Kind::Unsigned(bytes)
                    }
                    _ => Kind::Other,
                },
                _ => Kind::Other,
            }
        }
        constants::DW_TAG_pointer_type | constants::DW_TAG_reference_type => Kind::Pointer,
        _ if size == Some(0) => Kind::Zero,
        constants::DW_TAG_structure_type => slice_kind(&name),
        _ => Kind::Other,
    };
    let kind = match kind {
        Kind::Other if size.is_some_and(|s| s > 16) => Kind::Indirect,
        kind => kind,
    };
    Some((name, kind))
}

/// rustc describes `&str` and `&[T]` as structures of a pointer and a
/// length, named as the type is written.
fn slice_kind(name: &str) -> Kind {
    match name {
        "&str" | "&mut str" => Kind::Str,
        "&[u8]" | "&mut [u8]" => Kind::Bytes,
        _ if name.starts_with("&[") || name.starts_with("&mut [") => Kind::Slice,
        _ => Kind::Other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// [`name_type_arguments`], for the symbols' tests.
    pub(crate) fn name(f: &mut Function, dwarf_name: &str) {
        name_type_arguments(f, dwarf_name);
    }

    #[test]
    fn slices_and_strings_are_two_registers_structs_unknown() {
        assert_eq!(slice_kind("&str"), Kind::Str);
        assert_eq!(slice_kind("&[u8]"), Kind::Bytes);
        assert_eq!(slice_kind("&[u64]"), Kind::Slice);
        assert_eq!(slice_kind("alloc::string::String"), Kind::Other);
        assert_eq!(Kind::Str.registers(), Some(2));
        assert_eq!(Kind::Unsigned(16).registers(), Some(2));
        assert_eq!(Kind::Bool.registers(), Some(1));
        assert_eq!(Kind::Zero.registers(), Some(0));
        assert_eq!(Kind::Other.registers(), None);
    }

    #[test]
    fn this_test_binary_s_debug_info_names_its_functions_parameters() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let mut all = crate::symbols::functions(&exe).unwrap();
        let wanted = |f: &Function| f.path.ends_with("dwarf::slice_kind");
        annotate(&exe, &mut all, wanted);
        let f = all
            .iter()
            .find(|f| wanted(f))
            .expect("slice_kind is in the symbol table");
        let other = all
            .iter()
            .find(|f| f.path.ends_with("dwarf::holds_any"))
            .unwrap();
        assert_eq!(other.file, None, "only what is wanted is read");
        assert!(
            f.file.as_deref().unwrap().ends_with("dwarf.rs"),
            "{:?}",
            f.file
        );
        assert!(f.line.is_some());
        let params = f
            .params
            .as_ref()
            .expect("the tests are built with debug info");
        assert_eq!(
            params,
            &vec![Param {
                name: "name".to_owned(),
                ty: "&str".to_owned(),
                kind: Kind::Str,
            }]
        );
        assert_eq!(f.returns.as_ref().map(|r| r.ty.as_str()), Some("Kind"));
    }
}
