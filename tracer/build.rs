//! Generates the Perfetto message types (prost) from the excerpt of
//! Perfetto's published protos in `proto/`, compiled by protox, a protobuf
//! compiler in Rust: no `protoc` is needed to build nodetrace.

fn main() {
    let proto = "proto/perfetto_trace_excerpt.proto";
    println!("cargo:rerun-if-changed={proto}");
    let files = match protox::compile([proto], ["proto"]) {
        Ok(files) => files,
        Err(e) => panic!("{proto} does not compile: {e}"),
    };
    if let Err(e) = prost_build::Config::new().compile_fds(files) {
        panic!("cannot generate the Perfetto types from {proto}: {e}");
    }
}
