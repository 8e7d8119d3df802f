#[nodetrace_agent::traced]
mod elsewhere;

fn main() {}
