//! Running the `densum` binary from integration tests.

use std::process::{Command, Output};

/// Runs `densum` with `args`.
pub fn densum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_densum"))
        .args(args)
        .output()
        .expect("run densum")
}

/// Runs `densum` and returns its stdout; fails the test if the command fails.
pub fn ok(args: &[&str]) -> String {
    let out = densum(args);
    assert!(
        out.status.success(),
        "densum {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `densum`, expecting failure without a panic; returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = densum(args);
    assert!(!out.status.success(), "densum {args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "densum {args:?} panicked: {err}");
    err
}
