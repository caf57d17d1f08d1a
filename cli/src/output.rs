//! The output file: one result per line in the format of Mistral's Batch API results,
//! `{"custom_id": …, "response": {"status_code": …, "body": …}, "error": …}`.
//!
//! Append-only: results are written as whole lines and `fsync`ed before their requests
//! count as done. A crash can leave only a torn last line (no newline yet), which
//! [`resume`] cuts off; every complete line is a result, and a request whose result
//! line is complete is never sent again.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, Write};
use std::path::Path;

use serde_json::{Value, json};

use crate::input::{Fingerprints, fingerprint};

/// Holds the output's exclusive lock for the whole run: a second `mistral` writing the
/// same file would send every request again and write it twice.
#[derive(Debug)]
pub struct Lock {
    _file: Option<File>,
}

/// Takes the exclusive lock of `path` (creating the file), or says who holds it. A file
/// system without locks (or a device such as `/dev/full`) is not locked.
pub fn lock(path: &Path) -> Result<Lock, String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {} for writing: {e}", path.display()))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(Lock { _file: None });
    }
    match file.try_lock() {
        Ok(()) => Ok(Lock { _file: Some(file) }),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "{} is being written by another mistral process; wait for it to end (or stop it) and run again",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(_)) => Ok(Lock { _file: None }),
    }
}

/// What the output held when the run started.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Fingerprints of the `custom_id`s that have a result.
    pub done: Fingerprints,
    /// Of them, results that are errors.
    pub errors: u64,
    /// Bytes of a torn last line that were cut off.
    pub truncated: u64,
}

/// Reads the results already in `path` (none if it does not exist or is not a regular
/// file, such as `/dev/full`) and cuts off a torn last line.
pub fn resume(path: &Path) -> Result<Resumed, String> {
    let mut resumed = Resumed::default();
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(resumed),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Ok(resumed);
    }
    let mut reader = BufReader::with_capacity(1 << 16, &file);
    let mut buf = Vec::new();
    let mut good_end = 0u64;
    let mut done = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            // A torn last line: cut below.
            break;
        }
        let value: Value = serde_json::from_slice(&buf).map_err(|e| {
            format!(
                "{} line {line_no} is not a result ({e}); it is not this program's output, so nothing is appended to it",
                path.display()
            )
        })?;
        let Some(id) = value.get("custom_id").and_then(Value::as_str) else {
            return Err(format!(
                "{} line {line_no} has no custom_id; it is not this program's output",
                path.display()
            ));
        };
        if is_error(&value) {
            resumed.errors += 1;
        }
        done.push(fingerprint(id));
        good_end += n as u64;
    }
    drop(reader);
    resumed.done = Fingerprints::from_unsorted(done);
    if meta.len() > good_end {
        resumed.truncated = meta.len() - good_end;
        file.set_len(good_end)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot cut the torn last line of {}: {e}", path.display()))?;
    }
    Ok(resumed)
}

/// `true` when a result line records an error.
pub fn is_error(value: &Value) -> bool {
    let status = value
        .pointer("/response/status_code")
        .and_then(Value::as_u64);
    !value.get("error").is_none_or(Value::is_null)
        || !status.is_some_and(|s| (200..300).contains(&s))
}

/// A success line.
pub fn success_line(custom_id: &str, status: u16, body: Value) -> String {
    let mut line = json!({
        "custom_id": custom_id,
        "response": {"status_code": status, "body": body},
        "error": null,
    })
    .to_string();
    line.push('\n');
    line
}

/// An error line: the response's status and body, and the error in words.
pub fn error_line(
    custom_id: &str,
    status: Option<u16>,
    body: Value,
    message: &str,
    code: Option<&str>,
) -> String {
    let response = match status {
        Some(status) => json!({"status_code": status, "body": body}),
        None => Value::Null,
    };
    let mut line = json!({
        "custom_id": custom_id,
        "response": response,
        "error": {"message": message, "code": code},
    })
    .to_string();
    line.push('\n');
    line
}

/// The output opened for appending.
#[derive(Debug)]
pub struct Appender {
    file: File,
    /// Whether `fsync` applies (not for a character device such as `/dev/full`).
    sync: bool,
    path: String,
}

impl Appender {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> Result<Appender, String> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {} for writing: {e}", path.display()))?;
        let sync = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        Ok(Appender {
            file,
            sync,
            path: path.display().to_string(),
        })
    }

    /// Appends whole lines in one write and makes them durable.
    pub fn append(&mut self, lines: &[u8]) -> Result<(), String> {
        let describe = |e: io::Error| format!("cannot write {}: {e}", self.path);
        self.file.write_all(lines).map_err(describe)?;
        if self.sync {
            self.file.sync_data().map_err(describe)?;
        }
        Ok(())
    }

    /// Current length of the file (for a torn-line cut after a failed write).
    pub fn cut_back(&mut self, len: u64) {
        if self.sync {
            let _ = self.file.set_len(len);
            let _ = self.file.seek(io::SeekFrom::End(0));
        }
    }

    /// The file's length now (0 for a non-regular file).
    pub fn len(&self) -> u64 {
        if self.sync {
            self.file.metadata().map(|m| m.len()).unwrap_or(0)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, content: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mistral-cli-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_torn_last_line_is_cut_and_complete_lines_count() {
        let mut content = success_line("a", 200, json!({})).into_bytes();
        content.extend(error_line("b", Some(422), json!({}), "bad", None).into_bytes());
        let whole = content.len() as u64;
        content.extend(br#"{"custom_id":"c","resp"#);
        let path = temp("torn.jsonl", &content);
        let resumed = resume(&path).unwrap();
        assert_eq!(resumed.done.len(), 2);
        assert!(resumed.done.contains(&fingerprint("a")));
        assert_eq!(resumed.errors, 1);
        assert_eq!(resumed.truncated, content.len() as u64 - whole);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let path = temp("foreign.jsonl", b"hello\n");
        assert!(resume(&path).unwrap_err().contains("line 1"));
    }
}
