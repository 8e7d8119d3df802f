//! `nodetrace help [COMMAND...|TOPIC]`: clap's help of a command, or a
//! topic page (`patterns`).

use std::process::ExitCode;

use anyhow::bail;

/// The pattern grammar, as `nodetrace help patterns` prints it.
pub const PATTERNS: &str = "\
Patterns select traced functions by module, function and arity, in Erlang
spelling (MyApp.Server:handle_call/3) or Rust spelling
(my_app::server:handle_call/3); both name the same functions.

Grammar:
  pattern  = module [ \":\" function ] [ \"/\" arity ] [ \" -> return\" ]
  module   = segment { ( \".\" | \"::\" ) segment }     optionally in '...'
  function = name | \"_\" | \"*\"                        optionally in '...'
  arity    = 0..255 | \"_\" | \"*\"

Rules:
  - Module segments are compared after CamelCase -> snake_case, so
    MyApp.Server and my_app::server are the same module; `-` counts as `_`
    (crate names) and a leading `Elixir.` is ignored.
  - A module alone selects the functions directly in it, not those of its
    submodules. A last segment `*` adds every submodule: my_app::* selects
    my_app, my_app::server and my_app::a::b.
  - A segment or a function name may hold `*` globs: my_app::serv*,
    MyApp.Server:handle_*. A function `_` or `*` alone means any function.
  - One `:` separates module and function; `::` separates modules.
  - /arity counts every parameter, a `self` receiver included; /_ and /*
    (or no /arity) mean any arity.
  - ` -> return` (spaces optional) also traces what each call returns and
    how long it took, like --return.
  - `*`, `*:*` and '*' select every function: `trace calls` refuses them
    without an explicit --max, --rate or --duration.

Every form:
  MyApp.Server                    the module, Erlang spelling
  my_app::server                  the same module, Rust spelling
  MyApp.Server:handle_call        one function, any arity
  MyApp.Server:handle_call/3      one function of arity 3
  MyApp.Server:handle_*           a glob over function names
  my_app::*                       a module and all its submodules
  my_app::serv*:*/2               a glob over module names, any function of arity 2
  'MyApp.Server':'handle_call'/_  quoted, as Erlang writes atoms
  'MyApp.Server:handle_call -> return'   with return values

Quote a pattern for the shell: unquoted, `MyApp.Server:get -> return` is
split by the shell, which reads `>` as a redirection into a file named
`return` and leaves a lone `-`; nodetrace refuses a pattern that is `-` or
ends in `-`. Quote the whole pattern, or use --return.

Patterns that match nothing are refused (exit code 3) with the nearest
module or function names the node has.
";

/// Prints the help of the command `path` names under `root`, or the topic
/// `patterns`; no path is the help of nodetrace itself.
pub fn print(mut root: clap::Command, path: &[String]) -> anyhow::Result<ExitCode> {
    if let [topic] = path
        && topic == "patterns"
    {
        print!("{PATTERNS}");
        return Ok(ExitCode::SUCCESS);
    }
    root.build();
    let mut command = &root;
    for (depth, name) in path.iter().enumerate() {
        command = match command.find_subcommand(name) {
            Some(sub) => sub,
            None => {
                let known: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
                let within = match depth {
                    0 => "nodetrace".to_owned(),
                    _ => format!("nodetrace {}", path[..depth].join(" ")),
                };
                bail!(
                    "no command or topic `{}` in {within}: its commands are {}{}",
                    path[..=depth].join(" "),
                    known.join(", "),
                    if depth == 0 {
                        "; its topic is patterns"
                    } else {
                        ""
                    }
                );
            }
        };
    }
    command.clone().print_long_help()?;
    Ok(ExitCode::SUCCESS)
}
