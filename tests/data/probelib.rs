//! A shared library (a `cdylib`) for the probe tests: `probelib_add` is
//! what a program linked with it calls, probed with `--libs`.

/// `a + b`, a C function of the library.
#[unsafe(no_mangle)]
pub extern "C" fn probelib_add(a: u64, b: u64) -> u64 {
    std::hint::black_box(a) + b
}
