//! `nodetrace`: the tracer node's command line.

fn main() {}
