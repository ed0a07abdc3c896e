//! Keeping secrets out of a bundle: what the cluster's secrets are
//! ([`Needles::of_cluster`]) and their removal from every entry
//! ([`Needles::scrub`]).
//!
//! A secret is found by its bytes, not by where it came from: every PEM
//! private-key block anywhere in an entry is cut out, and so is every line of
//! the body of each private key the cluster holds (the CA keys, the
//! service-account key, the admin key, each node's keys in its machine
//! config) and the bootstrap token, wherever they appear (a log line, a JSON
//! string with `\n` escapes). A replacement is counted, never shown.

use std::path::Path;

/// What replaces a secret.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// The shortest key-body line searched for: shorter pieces of base64 could
/// match ordinary text by chance; PEM body lines are 64 characters except
/// the last.
const MIN_NEEDLE: usize = 16;

/// The byte strings of one cluster's secrets.
#[derive(Default)]
pub struct Needles {
    needles: Vec<Vec<u8>>,
}

impl Needles {
    /// The secrets of the cluster whose directory is `dir`: every file under
    /// `secrets/` and `nodes/` and every `*.key` at its top level. Files that
    /// cannot be read are skipped (the scrub still cuts PEM blocks out).
    pub fn of_cluster(dir: &Path) -> Needles {
        let mut n = Needles::default();
        let mut files = Vec::new();
        for sub in ["secrets", "nodes"] {
            files.extend(walk(&dir.join(sub)));
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "key") {
                    files.push(p);
                }
            }
        }
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            if f.file_name().is_some_and(|x| x == crate::pki::TOKEN_FILE) {
                n.add_token(text.trim());
            }
            n.add_pem_keys(&text);
            // A token in any other file (none holds one today).
            for line in text.lines() {
                if let Some(t) = token_in(line) {
                    n.add_token(t);
                }
            }
        }
        n.needles.sort();
        n.needles.dedup();
        n
    }

    /// How many byte strings are searched for.
    pub fn len(&self) -> usize {
        self.needles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The byte strings themselves (for tests that check a bundle).
    pub fn as_slices(&self) -> impl Iterator<Item = &[u8]> {
        self.needles.iter().map(Vec::as_slice)
    }

    fn add(&mut self, s: &str) {
        if s.len() >= MIN_NEEDLE {
            self.needles.push(s.as_bytes().to_vec());
        }
    }

    /// A bootstrap token `id.secret`: the whole token and its secret half.
    fn add_token(&mut self, token: &str) {
        if token.is_empty() {
            return;
        }
        self.add(token);
        if let Some((_, secret)) = token.split_once('.') {
            self.add(secret);
        }
    }

    /// The body lines of every PEM private key in `text`, whether its lines
    /// are real newlines, indented (a YAML block) or `\n` escapes (JSON).
    fn add_pem_keys(&mut self, text: &str) {
        let unescaped = text.replace("\\n", "\n");
        let mut inside = false;
        for line in unescaped.lines() {
            let line = line.trim().trim_matches(|c| c == '"' || c == '\'');
            if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
                inside = true;
            } else if line.starts_with("-----END") {
                inside = false;
            } else if inside {
                self.add(line);
            }
        }
    }

    /// `data` with every PEM private-key block and every needle replaced by
    /// [`REDACTED`], and how many replacements were made.
    pub fn scrub(&self, data: &[u8]) -> (Vec<u8>, usize) {
        let (mut out, mut count) = cut_pem_blocks(data);
        for needle in &self.needles {
            let (next, n) = replace_all(&out, needle);
            if n > 0 {
                out = next;
                count += n;
            }
        }
        (out, count)
    }
}

/// A bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`) in a line, if any.
fn token_in(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (0..b.len().saturating_sub(22)).find_map(|i| {
        let w = &b[i..i + 23];
        let bounded = (i == 0 || !ok(&b[i - 1])) && b.get(i + 23).is_none_or(|c| !ok(c));
        (bounded && w[6] == b'.' && w[..6].iter().all(ok) && w[7..].iter().all(ok))
            .then(|| &line[i..i + 23])
    })
}

/// Every regular file under `dir`, recursively (symbolic links not followed).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&e.path())),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
    out
}

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";
const KEY_LABEL: &[u8] = b"PRIVATE KEY";
/// The longest label between `-----BEGIN ` and `-----` taken for a header
/// (`ENCRYPTED PRIVATE KEY` is 21 bytes).
const MAX_LABEL: usize = 40;

/// The first private-key marker `<prefix>... PRIVATE KEY-----` in `hay`:
/// its start and end. A `-----BEGIN ` that opens anything else (a
/// certificate, a line cut short) is passed over by its own length only, so
/// a key header right after it is still found.
fn key_marker(hay: &[u8], prefix: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = find(&hay[from..], prefix) {
        let start = from + i;
        let label_at = start + prefix.len();
        let window = &hay[label_at..hay.len().min(label_at + MAX_LABEL + DASHES.len())];
        if let Some(j) = find(window, DASHES) {
            let label = &window[..j];
            if label.ends_with(KEY_LABEL) && !label.iter().any(|&c| c == b'\n' || c == b'\\') {
                return Some((start, label_at + j + DASHES.len()));
            }
        }
        from = label_at;
    }
    None
}

/// Cuts every private-key block, `-----BEGIN ... PRIVATE KEY-----` to its
/// `-----END ... PRIVATE KEY-----` (an unterminated one to the end of the
/// data), and a key's tail whose header is not in the data (a log's kept
/// end, a rotation) from the start of the data to its END marker.
fn cut_pem_blocks(data: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(data.len());
    let mut count = 0;
    let mut rest = data;
    if let Some((end_start, end_end)) = key_marker(rest, END)
        && key_marker(rest, BEGIN).is_none_or(|(b, _)| b > end_start)
    {
        out.extend_from_slice(REDACTED);
        count += 1;
        rest = &rest[end_end..];
    }
    while let Some((start, header_end)) = key_marker(rest, BEGIN) {
        out.extend_from_slice(&rest[..start]);
        out.extend_from_slice(REDACTED);
        count += 1;
        let after = &rest[header_end..];
        rest = match key_marker(after, END) {
            Some((_, e)) => &after[e..],
            None => &[],
        };
    }
    out.extend_from_slice(rest);
    (out, count)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn replace_all(hay: &[u8], needle: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(hay.len());
    let mut count = 0;
    let mut rest = hay;
    while let Some(i) = find(rest, needle) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(REDACTED);
        rest = &rest[i + needle.len()..];
        count += 1;
    }
    out.extend_from_slice(rest);
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgabcdefghijklmnop\nqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/abcdefghijklmnopq\nrstuvwxyz0123456\n-----END PRIVATE KEY-----\n";

    #[test]
    fn pem_blocks_are_cut_and_certificates_kept() {
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let text = format!("before\n{cert}{KEY}after\n");
        let (out, n) = Needles::default().scrub(text.as_bytes());
        let out = String::from_utf8(out).unwrap();
        assert_eq!(n, 1);
        assert!(out.contains("BEGIN CERTIFICATE"), "{out}");
        assert!(!out.contains("PRIVATE KEY"), "{out}");
        assert!(
            out.starts_with("before\n") && out.ends_with("after\n"),
            "{out}"
        );
        // Unterminated: cut to the end.
        let (out, n) = Needles::default().scrub(b"x -----BEGIN EC PRIVATE KEY-----\nabc");
        assert_eq!((out.as_slice(), n), (b"x [REDACTED]".as_slice(), 1));
    }

    #[test]
    fn a_key_after_a_stray_header_and_a_key_tail_are_cut() {
        let n = Needles::default();
        for before in ["no \"-----BEGIN \" line\n", "-----BEGIN CERTIFICATE\n"] {
            let text = format!("{before}{KEY}after\n");
            let (out, count) = n.scrub(text.as_bytes());
            let out = String::from_utf8(out).unwrap();
            assert_eq!(count, 1, "{out}");
            assert!(
                !out.contains("PRIVATE KEY") && !out.contains("MIGHAgEA"),
                "{out}"
            );
            assert!(out.starts_with(before) && out.ends_with("after\n"), "{out}");
        }
        // The end of a key whose header is not in the data.
        let tail = &KEY[KEY.find("qrst").unwrap()..];
        let (out, count) = n.scrub(format!("{tail}next line\n").as_bytes());
        assert_eq!(
            (String::from_utf8(out).unwrap().as_str(), count),
            ("[REDACTED]\nnext line\n", 1)
        );
    }

    #[test]
    fn key_lines_and_tokens_are_found_wherever_they_are() {
        let mut n = Needles::default();
        // A JSON string with escapes, as a machine config might hold it.
        n.add_pem_keys(&serde_json::to_string(KEY).unwrap());
        n.add_token("abcdef.0123456789abcdef");
        assert_eq!(n.len(), 5, "three body lines and the token twice");
        let leaked = "log: qrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/abcdefghijklmnopq \
                      token 0123456789abcdef";
        let (out, count) = n.scrub(leaked.as_bytes());
        assert_eq!(count, 2);
        assert_eq!(out, b"log: [REDACTED] token [REDACTED]");
    }

    #[test]
    fn tokens_are_recognised_only_whole() {
        assert_eq!(
            token_in("token: abcdef.0123456789abcdef"),
            Some("abcdef.0123456789abcdef")
        );
        assert_eq!(token_in("xabcdef.0123456789abcdef"), None);
        assert_eq!(token_in("abcdef.0123456789abcdefg"), None);
        assert_eq!(token_in("short"), None);
    }
}
