//! How a command ended, as a shell reports it: its exit code, or 128 plus
//! the signal that killed it; and how to show a command line.

use std::ffi::OsString;
use std::io;
use std::process::ExitStatus;

/// The exit code a shell would report for `status`: the command's own code,
/// or `128 + N` when signal N killed it (SIGKILL: 137).
pub fn exit_code(status: ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    1
}

/// The exit code a shell reports for a command it could not start: 127
/// when it is not found, 126 when it cannot be run, else 1.
pub fn spawn_error_code(error: &io::Error) -> i32 {
    match error.kind() {
        io::ErrorKind::NotFound => 127,
        io::ErrorKind::PermissionDenied => 126,
        _ => 1,
    }
}

/// `exited with code 3`, `was killed by signal 9 (SIGKILL)`.
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return match signal_name(signal) {
                Some(name) => format!("was killed by signal {signal} ({name})"),
                None => format!("was killed by signal {signal}"),
            };
        }
    }
    format!("ended ({status})")
}

/// The name of a common signal (`SIGKILL`).
pub fn signal_name(signal: i32) -> Option<&'static str> {
    #[cfg(unix)]
    {
        let names = [
            (libc::SIGHUP, "SIGHUP"),
            (libc::SIGINT, "SIGINT"),
            (libc::SIGQUIT, "SIGQUIT"),
            (libc::SIGILL, "SIGILL"),
            (libc::SIGTRAP, "SIGTRAP"),
            (libc::SIGABRT, "SIGABRT"),
            (libc::SIGBUS, "SIGBUS"),
            (libc::SIGFPE, "SIGFPE"),
            (libc::SIGKILL, "SIGKILL"),
            (libc::SIGUSR1, "SIGUSR1"),
            (libc::SIGSEGV, "SIGSEGV"),
            (libc::SIGUSR2, "SIGUSR2"),
            (libc::SIGPIPE, "SIGPIPE"),
            (libc::SIGALRM, "SIGALRM"),
            (libc::SIGTERM, "SIGTERM"),
        ];
        names
            .iter()
            .find(|(n, _)| *n == signal)
            .map(|(_, name)| *name)
    }
    #[cfg(not(unix))]
    {
        let _ = signal;
        None
    }
}

/// The command line as one would type it: arguments with blanks or shell
/// characters in single quotes.
pub fn display_command(command: &[OsString]) -> String {
    command
        .iter()
        .map(|arg| quote(&arg.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// A wait status as `waitpid` gives it: the code in the second byte,
    /// a signal in the low seven bits.
    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn killed(signal: i32) -> ExitStatus {
        ExitStatus::from_raw(signal)
    }

    #[test]
    fn codes_pass_through_and_signals_add_128() {
        assert_eq!(exit_code(exited(0)), 0);
        assert_eq!(exit_code(exited(3)), 3);
        assert_eq!(exit_code(exited(101)), 101);
        assert_eq!(exit_code(exited(255)), 255);
        assert_eq!(exit_code(killed(libc::SIGKILL)), 137);
        assert_eq!(exit_code(killed(libc::SIGINT)), 130);
        assert_eq!(exit_code(killed(libc::SIGTERM)), 143);
        assert_eq!(exit_code(killed(libc::SIGSEGV)), 139);
    }

    #[test]
    fn statuses_read_like_a_shell_says_them() {
        assert_eq!(describe_status(exited(4)), "exited with code 4");
        assert_eq!(
            describe_status(killed(libc::SIGKILL)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(describe_status(killed(64)), "was killed by signal 64");
    }

    #[test]
    fn commands_that_cannot_start_get_the_shell_codes() {
        let not_found = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(spawn_error_code(&not_found), 127);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(spawn_error_code(&denied), 126);
        assert_eq!(spawn_error_code(&io::Error::other("x")), 1);
    }

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let command: Vec<OsString> = ["sh", "-c", "exit 3", "it's", ""]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(display_command(&command), r"sh -c 'exit 3' 'it'\''s' ''");
    }
}
