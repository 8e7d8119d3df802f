//! The registry knows every `#[traced]` function at link time.

use nodetrace_agent::{callsites, traced};

#[traced]
fn never_called(a: u32, b: &str) -> usize {
    a as usize + b.len()
}

#[traced]
async fn never_awaited(x: u8) -> u8 {
    x
}

struct Server;

#[traced]
impl Server {
    fn method(&self, n: u64) -> u64 {
        n
    }

    fn associated() {}
}

#[traced]
mod inner {
    pub fn in_mod(_x: i32) {}

    pub struct Thing;

    impl Thing {
        pub fn thing_method(self) {}
    }
}

fn find(name: &str) -> &'static nodetrace_agent::Callsite {
    callsites()
        .iter()
        .find(|c| c.metadata().name == name)
        .unwrap_or_else(|| panic!("{name} is not in the registry"))
}

#[test]
fn every_traced_function_is_listed_with_its_metadata_before_it_runs() {
    let f = find("never_called").metadata();
    assert_eq!(f.module_path, "callsites_are_listed_before_first_call");
    assert_eq!(f.arity, 2);
    assert!(!f.is_async);
    assert!(
        f.file
            .ends_with("callsites_are_listed_before_first_call.rs")
    );
    assert_eq!(f.line, 5);

    let a = find("never_awaited").metadata();
    assert!(a.is_async);
    assert_eq!(a.arity, 1);

    assert_eq!(
        find("method").metadata().arity,
        2,
        "self counts in the arity"
    );
    assert_eq!(find("associated").metadata().arity, 0);
    assert_eq!(
        find("in_mod").metadata().module_path,
        "callsites_are_listed_before_first_call::inner"
    );
    assert_eq!(find("thing_method").metadata().arity, 1);
    assert_eq!(find("thing_method").metadata().self_type, Some("Thing"));
    assert_eq!(
        find("method").info().rust_path(),
        "callsites_are_listed_before_first_call::Server::method"
    );
    assert_eq!(callsites().len(), 6);
}

#[test]
fn callsite_ids_index_the_registry() {
    for (i, cs) in callsites().iter().enumerate() {
        assert_eq!(cs.id() as usize, i);
        assert_eq!(
            nodetrace_agent::callsite(cs.id()).map(|c| c.metadata().name),
            Some(cs.metadata().name)
        );
        let m = cs.metadata();
        let function = match m.self_type {
            Some(ty) => format!("{ty}::{}", m.name),
            None => m.name.to_owned(),
        };
        assert_eq!(
            cs.info().mfa(),
            format!("{}:{function}/{}", m.module_path, m.arity)
        );
        assert!(!cs.is_enabled());
    }
    // Keep the functions referenced so they are not dead code.
    let _ = (
        never_called,
        never_awaited,
        Server::method,
        Server::associated,
        inner::in_mod,
        inner::Thing::thing_method,
    );
}
