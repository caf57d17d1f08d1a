//! The layering check: `mistral-core` and `mistral-limiter` stay sans-IO, and the
//! emulator stays apart from the clients it judges.
//!
//! Three guards, all decided here from plain text so they can be unit-tested
//! (and shown to fail) without running cargo:
//!
//! 1. [`banned_packages`]: no I/O runtime or HTTP/Redis client anywhere in
//!    core's normal dependency tree (`cargo tree -e normal --prefix none`).
//! 2. [`missing_disallowed_methods`]: `core/clippy.toml` bans reading the
//!    clock and sleeping, so clippy (`-D warnings`) rejects them in core.
//! 3. [`depends_on`]: neither client depends on the other ([`DRIVERS`]): each does
//!    its own I/O (its limiter stores included) on top of core.
//! 4. [`emulator_banned_packages`]: `mistral-emulator`'s normal dependency tree holds
//!    no client crate (its rate limiting is its own, never the core's) and none of the
//!    bench's or the demo's heavy crates (`cargo xtask emulate` builds it alone).

/// The sans-IO packages: none may have a [`BANNED`] package in its normal tree.
pub const SANS_IO: [&str; 2] = ["mistral-core", "mistral-limiter"];

/// Packages that must never be a normal dependency of `mistral-core` or
/// `mistral-limiter`.
pub const BANNED: &[&str] = &[
    "tokio", "ureq", "reqwest", "hyper", "mio", "socket2", "redis",
];

/// The two clients: neither may have the other in its normal dependency tree.
pub const DRIVERS: [&str; 2] = ["mistral-blocking", "mistral-async"];

/// Whether a `cargo tree --prefix none` output lists the package `name`.
pub fn depends_on(tree: &str, name: &str) -> bool {
    tree.lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

/// Packages that must never be a normal dependency of `mistral-emulator`: the client
/// crates and their HTTP clients, and what only the bench and the demo need.
pub const EMULATOR_BANNED: &[&str] = &[
    "mistral-core",
    "mistral-limiter",
    "mistral-blocking",
    "mistral-async",
    "mistral-stores",
    "ureq",
    "reqwest",
    "redis",
    "plotters",
    "indicatif",
];

/// Methods `core/clippy.toml` must list under `disallowed-methods`.
pub const REQUIRED_DISALLOWED: &[&str] = &[
    "std::time::Instant::now",
    "std::time::SystemTime::now",
    "std::thread::sleep",
];

/// The lines of a `cargo tree --prefix none` output whose package is in
/// [`BANNED`], deduplicated, e.g. `["tokio v1.0.0"]`.
///
/// Each line is `name vX.Y.Z [(path)] [(proc-macro)] [(*)]`; the name is
/// compared exactly, so `tokio-macros` alone does not trip it (it would come
/// with `tokio` anyway).
pub fn banned_packages(tree: &str) -> Vec<String> {
    banned_in(tree, BANNED)
}

/// The lines of `mistral-emulator`'s `cargo tree --prefix none` output whose package is
/// in [`EMULATOR_BANNED`] (the root line, `mistral-emulator` itself, never matches).
pub fn emulator_banned_packages(tree: &str) -> Vec<String> {
    banned_in(tree, EMULATOR_BANNED)
}

/// The lines of a `cargo tree --prefix none` output whose package is in `banned`,
/// deduplicated, names compared exactly.
fn banned_in(tree: &str, banned: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in tree.lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        if !banned.contains(&name) {
            continue;
        }
        let entry = match words.next() {
            Some(version) => format!("{name} {version}"),
            None => name.to_owned(),
        };
        if !found.contains(&entry) {
            found.push(entry);
        }
    }
    found
}

/// Number of distinct packages in a `cargo tree --prefix none` output.
pub fn package_count(tree: &str) -> usize {
    let mut seen: Vec<&str> = tree
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?, w.next()?))
        })
        .map(|(name, _version)| name)
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// Which of [`REQUIRED_DISALLOWED`] the given `clippy.toml` text does not
/// ban. `Ok(vec![])` means all are banned.
///
/// Understands the two forms clippy accepts in `disallowed-methods` (also
/// spelled `disallowed_methods`): a bare path string, or an inline table with
/// a `path` key. Comments are ignored; a `reason` mentioning a path does not
/// count. An error means the file has no such array or it is malformed.
pub fn missing_disallowed_methods(clippy_toml: &str) -> Result<Vec<&'static str>, String> {
    let tokens = tokenize(clippy_toml)?;
    let key_at = tokens
        .iter()
        .position(|t| matches!(t, Token::Word(w) if w == "disallowed-methods" || w == "disallowed_methods"))
        .ok_or("no `disallowed-methods` key")?;
    if tokens.get(key_at + 1) != Some(&Token::Punct('='))
        || tokens.get(key_at + 2) != Some(&Token::Punct('['))
    {
        return Err("`disallowed-methods` is not followed by `= [`".to_owned());
    }

    let mut banned: Vec<&str> = Vec::new();
    let mut depth = 0usize;
    let mut i = key_at + 2;
    loop {
        let Some(token) = tokens.get(i) else {
            return Err("unterminated `disallowed-methods` array".to_owned());
        };
        match token {
            Token::Punct('[') | Token::Punct('{') => depth += 1,
            Token::Punct(']') | Token::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Token::Str(s) => {
                let prev = i.checked_sub(1).and_then(|p| tokens.get(p));
                let key = i.checked_sub(2).and_then(|p| tokens.get(p));
                let bare_element =
                    depth == 1 && matches!(prev, Some(Token::Punct('[')) | Some(Token::Punct(',')));
                let path_value = depth == 2
                    && prev == Some(&Token::Punct('='))
                    && matches!(key, Some(Token::Word(w)) if w == "path");
                if bare_element || path_value {
                    banned.push(s);
                }
            }
            _ => {}
        }
        i += 1;
    }

    Ok(REQUIRED_DISALLOWED
        .iter()
        .copied()
        .filter(|required| !banned.contains(required))
        .collect())
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Punct(char),
}

/// Just enough TOML lexing for [`missing_disallowed_methods`]: bare words,
/// basic and literal strings, punctuation, `#` comments.
fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string".to_owned()),
                        Some(c) if c == quote => break,
                        Some('\\') if quote == '"' => match chars.next() {
                            Some(escaped) => s.push(escaped),
                            None => return Err("unterminated string".to_owned()),
                        },
                        Some(c) => s.push(c),
                    }
                }
                tokens.push(Token::Str(s));
            }
            c if c.is_whitespace() => {}
            c if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '-' || n == '_' || n == '.' {
                        w.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(w));
            }
            c => tokens.push(Token::Punct(c)),
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN_TREE: &str = "\
mistral-core v0.1.0 (/work/main/core)
bytes v1.12.2
fastrand v2.5.0
http v1.5.0
bytes v1.12.2
serde_derive v1.0.229 (proc-macro)
proc-macro2 v1.0.107 (*)
";

    #[test]
    fn a_driver_listed_in_the_other_drivers_tree_is_found() {
        let async_tree = "mistral-async v0.1.0 (/w/async)\nmistral-core v0.1.0 (/w/core)\n";
        assert!(!depends_on(async_tree, DRIVERS[0]));
        let tangled = format!("{async_tree}mistral-blocking v0.1.0 (/w/blocking)\n");
        assert!(depends_on(&tangled, DRIVERS[0]));
        assert!(!depends_on("mistral-blocking-extra v1.0.0\n", DRIVERS[0]));
    }

    #[test]
    fn clean_tree_passes() {
        assert!(banned_packages(CLEAN_TREE).is_empty());
        assert_eq!(package_count(CLEAN_TREE), 6);
    }

    #[test]
    fn tree_with_tokio_fails() {
        let tree = format!("{CLEAN_TREE}tokio v1.0.0\nmio v1.0.1\ntokio v1.0.0 (*)\n");
        assert_eq!(banned_packages(&tree), ["tokio v1.0.0", "mio v1.0.1"]);
    }

    #[test]
    fn every_banned_package_is_caught() {
        for name in BANNED {
            let tree = format!("{CLEAN_TREE}{name} v9.9.9\n");
            assert_eq!(banned_packages(&tree), [format!("{name} v9.9.9")]);
        }
    }

    #[test]
    fn names_are_matched_exactly() {
        let tree = "tokio-macros v2.0.0 (proc-macro)\nhyper-util v0.1.0\nmy-redis-ish v1.0.0\n";
        assert!(banned_packages(tree).is_empty());
    }

    const EMULATOR_TREE: &str = "\
mistral-emulator v0.1.0 (/work/main/tests/emulator)
hyper v1.8.1
tokio v1.48.0
serde_json v1.0.145
clap v4.5.53
";

    #[test]
    fn an_emulator_with_servers_only_passes() {
        assert!(emulator_banned_packages(EMULATOR_TREE).is_empty());
    }

    #[test]
    fn an_emulator_on_a_client_crate_fails() {
        for name in EMULATOR_BANNED {
            let tree = format!("{EMULATOR_TREE}{name} v0.1.0 (/work/main/x)\n");
            assert_eq!(
                emulator_banned_packages(&tree),
                [format!("{name} v0.1.0")],
                "{name}"
            );
        }
        // The core's own ban list is not the emulator's: hyper and tokio are its server.
        assert_eq!(
            banned_packages(EMULATOR_TREE),
            ["hyper v1.8.1", "tokio v1.48.0"]
        );
    }

    #[test]
    fn the_real_core_clippy_toml_bans_the_required_methods() {
        let text = std::fs::read_to_string(crate::workspace_root().join("core/clippy.toml"))
            .expect("core/clippy.toml exists");
        assert_eq!(missing_disallowed_methods(&text), Ok(vec![]));
    }

    #[test]
    fn table_and_bare_forms_both_count() {
        let text = r#"
disallowed-methods = [
  { path = "std::time::Instant::now", reason = "sans-IO" },
  "std::time::SystemTime::now",
  { reason = "no sleeping", path = 'std::thread::sleep' },
]
"#;
        assert_eq!(missing_disallowed_methods(text), Ok(vec![]));
    }

    #[test]
    fn a_missing_or_commented_out_ban_is_reported() {
        let text = r#"
disallowed_methods = [
  { path = "std::time::Instant::now", reason = "not std::thread::sleep either" },
  # { path = "std::time::SystemTime::now" },
]
"#;
        assert_eq!(
            missing_disallowed_methods(text),
            Ok(vec!["std::time::SystemTime::now", "std::thread::sleep"])
        );
    }

    #[test]
    fn other_keys_do_not_count() {
        let text = r#"
disallowed-types = ["std::time::Instant::now", "std::time::SystemTime::now", "std::thread::sleep"]
disallowed-methods = []
"#;
        assert_eq!(
            missing_disallowed_methods(text).map(|m| m.len()),
            Ok(REQUIRED_DISALLOWED.len())
        );
    }

    #[test]
    fn no_key_or_broken_array_is_an_error() {
        assert!(missing_disallowed_methods("msrv = \"1.89\"\n").is_err());
        assert!(missing_disallowed_methods("disallowed-methods = [ \"a\", ").is_err());
        assert!(missing_disallowed_methods("disallowed-methods = [ \"a").is_err());
    }
}
