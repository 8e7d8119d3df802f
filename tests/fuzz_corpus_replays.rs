//! The fuzz targets' invariants (`fuzz/invariants.rs`), checked without the
//! fuzzer over the committed corpus and every crash ever found
//! (`fuzz/regressions/`), so that a fixed crash stays fixed on any machine.

#[path = "../fuzz/invariants.rs"]
mod invariants;

use std::path::Path;

/// A fuzz target: its name and its check.
type Target = (&'static str, fn(&[u8]));

#[test]
fn every_corpus_input_and_every_crash_found_still_holds() {
    let targets: [Target; 5] = [
        ("frame_from_tracer", invariants::frame_from_tracer),
        ("frame_from_node", invariants::frame_from_node),
        ("handshake", invariants::handshake),
        ("pattern", invariants::pattern),
        ("duration_and_rate", invariants::duration_and_rate),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, check) in targets {
        let mut inputs = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(files) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for file in files {
                let path = file.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                let caught = std::panic::catch_unwind(|| check(&bytes));
                assert!(caught.is_ok(), "{target} fails on {}", path.display());
                inputs += 1;
            }
        }
        assert!(inputs > 0, "no corpus for {target}");
    }
}
