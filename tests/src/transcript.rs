//! Golden transcripts: request/response pairs at the wire, one file per
//! area under `tests/transcripts/`, replayed against a running server.
//!
//! A transcript is a sequence of blocks:
//!
//! ```text
//! # comments (kept when the file is regenerated)
//! > PutItem
//! {"TableName": "t", "Item": {"k": {"S": "a"}}}
//! < 200
//! {}
//! ```
//!
//! `> Op` starts a request (its body is every line up to the `<` line, sent
//! byte for byte, so malformed JSON can be written too); `< STATUS` starts
//! the expected answer, the response body pretty-printed with sorted keys.
//! Values that change from run to run (`...DateTime`, `TableId`) are
//! masked. With `UPDATE_TRANSCRIPTS=1` the files are rewritten from what
//! the server answered, to be reviewed as a diff.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One request of a transcript and the answer recorded for it.
pub struct Exchange {
    /// Comment lines before the request.
    pub comments: Vec<String>,
    pub op: String,
    pub body: String,
    pub expected: String,
}

/// Parses a transcript file's text.
pub fn parse(text: &str) -> Vec<Exchange> {
    let mut out = Vec::new();
    let mut comments = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(op) = line.strip_prefix("> ") {
            let mut body = Vec::new();
            while let Some(l) = lines.next_if(|l| !l.starts_with("< ") && *l != "<") {
                body.push(l);
            }
            let mut expected = Vec::new();
            if let Some(status) = lines.next() {
                expected.push(status.to_string());
                while let Some(l) = lines.next_if(|l| !l.starts_with("> ") && !l.starts_with('#')) {
                    expected.push(l.to_string());
                }
            }
            out.push(Exchange {
                comments: std::mem::take(&mut comments),
                op: op.trim().to_string(),
                body: body.join("\n").trim().to_string(),
                expected: expected.join("\n").trim().to_string(),
            });
        } else if line.starts_with('#') {
            comments.push(line.to_string());
        }
    }
    out
}

/// What the server answered, in the transcript's form: `< STATUS` and the
/// masked body pretty-printed (or as text when it is not JSON).
pub fn render_answer(status: u16, body: &str) -> String {
    let shown = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut v) => {
            mask(&mut v, None);
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
        Err(_) => body.to_string(),
    };
    format!("< {status}\n{shown}").trim().to_string()
}

fn mask(v: &mut serde_json::Value, key: Option<&str>) {
    use serde_json::Value;
    let volatile = key.is_some_and(|k| {
        k.ends_with("DateTime") || ["TableId", "LatestStreamArn", "LatestStreamLabel"].contains(&k)
    });
    match v {
        Value::Object(m) => m.iter_mut().for_each(|(k, x)| mask(x, Some(k))),
        Value::Array(a) => a.iter_mut().for_each(|x| mask(x, key)),
        _ if volatile => *v = Value::String("<masked>".into()),
        _ => {}
    }
}

/// Replays every exchange of `text` against `addr`; returns the transcript
/// rewritten with the answers the server gave.
pub fn replay(addr: SocketAddr, text: &str) -> String {
    let mut out = String::new();
    for ex in parse(text) {
        let (status, _, body) = crate::raw_request(
            addr,
            Some(&ex.op),
            &[("Content-Type", "application/x-amz-json-1.0"), crate::AUTH],
            ex.body.as_bytes(),
        );
        for c in &ex.comments {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str(&format!("> {}\n", ex.op));
        if !ex.body.is_empty() {
            out.push_str(&ex.body);
            out.push('\n');
        }
        out.push_str(&render_answer(status, &body));
        out.push_str("\n\n");
    }
    out
}

/// The transcript files, in name order.
pub fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("transcripts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/transcripts")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

/// Whether `UPDATE_TRANSCRIPTS` asks for the files to be rewritten.
pub fn updating() -> bool {
    std::env::var_os("UPDATE_TRANSCRIPTS").is_some_and(|v| v != "0" && !v.is_empty())
}
