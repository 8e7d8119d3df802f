//! Where a function's frame ends: its return instructions, and the jumps
//! that leave it for another function (tail calls), found by decoding its
//! machine code with `iced-x86`. Return probes go there rather than being
//! uretprobes, which replace the return address on the stack: an unwinder
//! reading that stack (a panic) would find the kernel's trampoline instead
//! of the caller.
//!
//! Nothing here needs Linux: it decodes bytes, so it is tested everywhere.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// How the frame ends at an [`Exit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// A `ret`: rax holds the value (for values that fit a register).
    Return,
    /// A `jmp` to another function (direct, or through a pointer slot at
    /// a fixed address such as the GOT): the frame is gone, and the
    /// function called in its place returns to the caller. Its value is
    /// not computed yet, so none is shown.
    TailCall,
}

/// One place where the frame of a function ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The instruction's address (as in the binary, like the function's).
    pub address: u64,
    /// What it is.
    pub kind: ExitKind,
}

/// The exits of the function whose machine code is `code`, loaded at
/// `address`: every `ret`, every direct `jmp` whose target is outside the
/// function, and every `jmp [rip+disp]` (a pointer slot at a fixed address:
/// a tail call through the GOT or a function pointer).
///
/// A `jmp reg` or `jmp [reg+...]` is not taken as an exit: that is how a
/// `match` jumps through its table inside the function, and the code alone
/// cannot tell it from a tail call through a register. A conditional jump
/// out of the function (a conditional tail call) is not one either, since
/// the probe would fire whether it is taken or not. A call that leaves by
/// one of those, like one a panic unwinds, has no return probe hit; the
/// tracer's pairing by stack pointer drops it (see [`crate::Trace`]).
pub fn exits(code: &[u8], address: u64) -> Vec<Exit> {
    let end = address.saturating_add(code.len() as u64);
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut out = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            continue;
        }
        let kind = match instruction.mnemonic() {
            Mnemonic::Ret => Some(ExitKind::Return),
            Mnemonic::Jmp => match instruction.op0_kind() {
                OpKind::NearBranch64 => {
                    let target = instruction.near_branch_target();
                    (!(address..end).contains(&target)).then_some(ExitKind::TailCall)
                }
                OpKind::Memory
                    if instruction.memory_base() == Register::RIP
                        && instruction.memory_index() == Register::None =>
                {
                    Some(ExitKind::TailCall)
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(kind) = kind {
            out.push(Exit {
                address: instruction.ip(),
                kind,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_and_jumps_out_are_exits_jumps_inside_and_through_registers_are_not() {
        let code = [
            0x48, 0x85, 0xff, // 0x1000 test rdi, rdi
            0x74, 0x05, // 0x1003 je 0x100a (inside)
            0x48, 0x89, 0xf8, // 0x1005 mov rax, rdi
            0xc3, // 0x1008 ret
            0x90, // 0x1009 nop
            0xff, 0xe0, // 0x100a jmp rax (a jump table, maybe)
            0xe9, 0xf1, 0x0f, 0x00, 0x00, // 0x100c jmp 0x2002 (outside)
            0xeb, 0xed, // 0x1011 jmp short 0x1000 (inside)
            0xff, 0x25, 0x00, 0x10, 0x00, 0x00, // 0x1013 jmp [rip+0x1000]
            0xff, 0x24, 0xc5, 0x00, 0x20, 0x00, 0x00, // 0x1019 jmp [rax*8+0x2000]
            0xc2, 0x08, 0x00, // 0x1020 ret 8
        ];
        assert_eq!(
            exits(&code, 0x1000),
            vec![
                Exit {
                    address: 0x1008,
                    kind: ExitKind::Return
                },
                Exit {
                    address: 0x100c,
                    kind: ExitKind::TailCall
                },
                Exit {
                    address: 0x1013,
                    kind: ExitKind::TailCall
                },
                Exit {
                    address: 0x1020,
                    kind: ExitKind::Return
                },
            ]
        );
    }

    #[test]
    fn a_compiled_function_of_this_binary_has_a_return() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let functions = crate::symbols::functions(&exe).unwrap();
        let f = functions
            .iter()
            .find(|f| f.path.ends_with("code::exits"))
            .expect("exits is in the symbol table");
        let start = f.file_offset as usize;
        let found = exits(&exe[start..start + f.size as usize], f.address);
        assert!(
            found.iter().any(|e| e.kind == ExitKind::Return),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .all(|e| (f.address..f.address + f.size).contains(&e.address))
        );
    }
}
