//! What only the blocking driver can get wrong: `from_env` (read in child processes, the
//! only way to change the environment without `unsafe`) and the thread-safety of its
//! handles. Every behaviour both clients share (calls, retries, waits, streams, errors,
//! the limits exposed, the key kept out of every output) is a row of the conformance
//! table, run on both clients against the emulator: `tests/suites/tests/conformance.rs`.

use mistral_blocking::{Client, Error, KeyError};

const KEY: &str = "sk-driver-SECRET";

/// Runs `from_env_in_child` in a child process with `env` (the only way to change the
/// environment without `unsafe`).
fn from_env_child(case: &str, env: &[(&str, &str)]) {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "from_env_in_child", "--test-threads", "1"])
        .env_remove("MISTRAL_API_KEY")
        .env_remove("MISTRAL_BASE_URL")
        .env("MISTRAL_BLOCKING_FROM_ENV_CASE", case);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{case}: {stdout}"
    );
}

#[test]
fn from_env_in_child() {
    let Ok(case) = std::env::var("MISTRAL_BLOCKING_FROM_ENV_CASE") else {
        return; // Only meaningful in the child processes of `from_env_reads_...`.
    };
    let result = Client::from_env();
    match case.as_str() {
        "missing" => assert!(
            matches!(result, Err(Error::Key(KeyError::Missing))),
            "{result:?}"
        ),
        "malformed" => assert!(
            matches!(result, Err(Error::Key(KeyError::Whitespace { .. }))),
            "{result:?}"
        ),
        "remote-http" => assert!(matches!(result, Err(Error::Config(_))), "{result:?}"),
        "ok" => assert!(format!("{:?}", result.unwrap()).contains("127.0.0.1:9")),
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn from_env_reads_the_key_and_the_base_url() {
    from_env_child("missing", &[]);
    from_env_child("malformed", &[("MISTRAL_API_KEY", "sk-key\n")]);
    from_env_child(
        "remote-http",
        &[
            ("MISTRAL_API_KEY", KEY),
            ("MISTRAL_BASE_URL", "http://api.example.com"),
        ],
    );
    from_env_child(
        "ok",
        &[
            ("MISTRAL_API_KEY", KEY),
            ("MISTRAL_BASE_URL", "http://127.0.0.1:9"),
        ],
    );
}

/// The client is shared across threads by reference or by clone, and a stream moves to
/// another thread (checked at compile time).
#[test]
fn clients_and_streams_cross_threads() {
    fn shareable<T: Clone + Send + Sync>() {}
    fn sendable<T: Send>() {}
    shareable::<Client>();
    sendable::<mistral_blocking::ChatStream>();
    let client = Client::new(KEY).unwrap();
    let clone = client.clone();
    let shown = std::thread::spawn(move || format!("{clone:?}"))
        .join()
        .unwrap();
    assert!(
        shown.contains("api.mistral.ai") && !shown.contains(KEY),
        "{shown}"
    );
}
