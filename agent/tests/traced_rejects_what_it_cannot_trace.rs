//! What `#[traced]` cannot trace is a compile error that points at the
//! user's code: each case in `compile_fail/` with its expected message.
//! `TRYBUILD=overwrite cargo test -p nodetrace-agent --test
//! traced_rejects_what_it_cannot_trace` writes the messages anew.

#[test]
fn what_cannot_be_traced_is_a_clear_error() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
