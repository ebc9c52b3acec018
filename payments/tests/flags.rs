//! The example server's command line: `--help` describes it and touches
//! nothing; an unknown flag is refused before any file or port is opened.

use std::process::Command;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn server(dir: &std::path::Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new(env!("CARGO_BIN_EXE_payments_server"))
        .args(args)
        .current_dir(dir)
        .output()
}

#[test]
fn help_describes_the_flags_and_creates_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = server(dir.path(), &["--help"])?;
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout)?;
    for flag in ["--listen", "--db", "--postgres", "--admin"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "--help created a file"
    );
    Ok(())
}

#[test]
fn an_unknown_flag_is_refused_before_anything_opens() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = server(dir.path(), &["--listen", "127.0.0.1:0", "--bogus"])?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("--bogus"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "a refused run created a file"
    );
    Ok(())
}

/// Built without the `postgres` feature, `--postgres` says how to get it.
#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_without_the_feature_says_how_to_build_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = server(dir.path(), &["--postgres", "host=127.0.0.1"])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("--features postgres"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}
