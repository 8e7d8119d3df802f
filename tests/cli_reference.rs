//! The CLI reference in `docs/cli/` is the real `--help` of every command:
//! each page's `console` block runs `nodetrace ... --help` and must print
//! exactly what the page shows. `TRYCMD=overwrite cargo test --test
//! cli_reference` rewrites the pages after a deliberate change.

#[test]
fn every_help_page_in_docs_cli_is_what_the_command_prints() {
    trycmd::TestCases::new()
        .default_bin_name("nodetrace")
        .register_bin("nodetrace", trycmd::cargo::cargo_bin!("nodetrace"))
        .case("docs/cli/*.md");
}
