//! The secrets of a cluster's state dir as strings to search for, found
//! without ironclad's own scrubber (`ironclad_host::support::scrub`): a test
//! that a support bundle holds none of them must not share the code it
//! checks.

use std::path::Path;

/// Every body line (16 characters or more) of every PEM private key in any
/// file under `dir`, whether its lines are real newlines, indented or `\n`
/// escapes, and the bootstrap token.
pub fn strings_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.extend(strings_of_file(&p)),
                _ => {}
            }
        }
    }
    out
}

fn strings_of_file(p: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(p) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if p.ends_with("secrets/bootstrap-token") {
        out.push(text.trim().to_string());
    }
    let text = text.replace("\\n", "\n");
    let mut inside = false;
    for l in text.lines().map(|l| l.trim().trim_matches('"')) {
        if l.starts_with("-----BEGIN") && l.contains("PRIVATE KEY") {
            inside = true;
        } else if l.starts_with("-----END") {
            inside = false;
        } else if inside && l.len() >= 16 {
            out.push(l.to_string());
        }
    }
    out
}
