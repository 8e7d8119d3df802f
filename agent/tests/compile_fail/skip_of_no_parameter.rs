#[nodetrace_agent::traced(skip(pasword))]
fn login(user: &str, password: &str) -> bool {
    !user.is_empty() && !password.is_empty()
}

fn main() {
    let _ = login("bob", "secret");
}
