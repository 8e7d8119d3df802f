#[nodetrace_agent::traced]
trait Store {
    fn get(&self) -> u32;
}

fn main() {}
