#[nodetrace_agent::traced(level = "debug")]
fn work() {}

fn main() {
    work();
}
