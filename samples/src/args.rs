//! The samples' command lines (`ROLE --flag VALUE ...`), and how a sample's result
//! becomes its exit status.

use std::fmt::Display;
use std::process::ExitCode;

/// Every value given for `flag`, in order (`--say hi --say bye`).
pub fn values(args: &[String], flag: &str) -> Vec<String> {
    args.iter()
        .zip(args.iter().skip(1))
        .filter(|(a, _)| *a == flag)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The last value given for `flag`, or an error saying `flag WHAT is required`.
pub fn required(args: &[String], flag: &str, what: &str) -> Result<String, String> {
    values(args, flag)
        .pop()
        .ok_or_else(|| format!("{flag} {what} is required"))
}

/// Success, or the error printed as `SAMPLE: error` and a failure status.
pub fn exit_code<E: Display>(sample: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{sample}: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_take_the_following_value() {
        let a = args("client --registry 127.0.0.1:9 --say hi --say bye");
        assert_eq!(values(&a, "--say"), ["hi", "bye"]);
        assert_eq!(required(&a, "--registry", "ADDR").unwrap(), "127.0.0.1:9");
        assert_eq!(
            required(&a, "--name", "NAME").unwrap_err(),
            "--name NAME is required"
        );
        // A flag at the very end has no value.
        assert!(required(&args("client --registry"), "--registry", "ADDR").is_err());
    }
}
