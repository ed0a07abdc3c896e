//! Making a node's serial output safe to print on the host's terminal. The
//! serial log holds whatever the guest wrote; an escape sequence in it could
//! retitle the terminal, rewrite what is on screen or, on some terminals,
//! answer back as if typed. [`Escaper`] turns every control character into
//! visible text before it is written.
//!
//! What is shown as is: printable text (UTF-8), newline and tab, and a
//! carriage return directly before a newline (the kernel's serial console ends
//! lines with `\r\n`; it is dropped). Everything else that is a control
//! character is shown as an escape: C0 controls and DEL as `\x1b`, `\x7f`, a
//! lone carriage return as `\r`, C1 controls (U+0080–U+009F) as `\u{9b}`, and
//! bytes that are not UTF-8 as `\xff`.
//!
//! This module only transforms bytes; [`super::lifecycle::console`] reads the
//! log and writes the result.

use std::fmt::Write as _;

/// A streaming escaper: bytes arrive in chunks that may split a UTF-8
/// sequence or a `\r\n` pair; the unfinished part waits for the next chunk.
#[derive(Debug, Default)]
pub struct Escaper {
    /// The start of a UTF-8 sequence cut by the end of the last chunk.
    carry: Vec<u8>,
    /// The last chunk ended in `\r`: shown once the next byte is known.
    pending_cr: bool,
}

impl Escaper {
    /// Appends the visible form of `input` to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(input);
        let mut text = String::new();
        let mut rest: &[u8] = &buf;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    self.chars(s, &mut text);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is UTF-8 (`valid_up_to` says so): this never fails.
                    if let Ok(s) = std::str::from_utf8(valid) {
                        self.chars(s, &mut text);
                    }
                    match e.error_len() {
                        Some(n) => {
                            self.flush_cr(&mut text);
                            for b in &after[..n] {
                                let _ = write!(text, "\\x{b:02x}");
                            }
                            rest = &after[n..];
                        }
                        // An incomplete sequence at the end: wait for more.
                        None => {
                            self.carry = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out.extend_from_slice(text.as_bytes());
    }

    /// Appends what is still held back (an unfinished sequence, a last `\r`).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let mut text = String::new();
        self.flush_cr(&mut text);
        for b in std::mem::take(&mut self.carry) {
            let _ = write!(text, "\\x{b:02x}");
        }
        out.extend_from_slice(text.as_bytes());
    }

    fn flush_cr(&mut self, text: &mut String) {
        if std::mem::take(&mut self.pending_cr) {
            text.push_str("\\r");
        }
    }

    fn chars(&mut self, s: &str, text: &mut String) {
        for c in s.chars() {
            match c {
                '\n' => {
                    self.pending_cr = false;
                    text.push('\n');
                }
                '\r' => {
                    self.flush_cr(text);
                    self.pending_cr = true;
                }
                _ => {
                    self.flush_cr(text);
                    push_visible(c, text);
                }
            }
        }
    }
}

/// `c` as shown: itself, or an escape for a control character.
fn push_visible(c: char, text: &mut String) {
    match c {
        '\t' => text.push('\t'),
        '\u{0}'..='\u{1f}' | '\u{7f}' => {
            let _ = write!(text, "\\x{:02x}", c as u32);
        }
        '\u{80}'..='\u{9f}' => {
            let _ = write!(text, "\\u{{{:x}}}", c as u32);
        }
        _ => text.push(c),
    }
}

/// `s` with every control character but newline and tab made visible (for
/// single lines and excerpts taken from a serial log).
pub fn escape_str(s: &str) -> String {
    let mut e = Escaper::default();
    let mut out = Vec::with_capacity(s.len());
    e.push(s.as_bytes(), &mut out);
    e.finish(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(chunks: &[&[u8]]) -> String {
        let mut e = Escaper::default();
        let mut out = Vec::new();
        for c in chunks {
            e.push(c, &mut out);
        }
        e.finish(&mut out);
        String::from_utf8(out).expect("the escaper writes UTF-8")
    }

    #[test]
    fn plain_text_newlines_and_tabs_pass() {
        assert_eq!(shown(&[b"[    1.0] a\tb\n"]), "[    1.0] a\tb\n");
        assert_eq!(shown(&["grüße ✓\n".as_bytes()]), "grüße ✓\n");
    }

    #[test]
    fn serial_line_endings_become_newlines() {
        assert_eq!(shown(&[b"one\r\ntwo\r\n"]), "one\ntwo\n");
        // The pair split across two reads.
        assert_eq!(shown(&[b"one\r", b"\ntwo"]), "one\ntwo");
    }

    #[test]
    fn escape_sequences_are_shown_not_sent() {
        // Set the window title, clear the screen, move the cursor, bell.
        let hostile = b"\x1b]0;owned\x07\x1b[2J\x1b[H\x08\x00x\x7f";
        let out = shown(&[hostile]);
        assert_eq!(out, "\\x1b]0;owned\\x07\\x1b[2J\\x1b[H\\x08\\x00x\\x7f");
        assert!(!out.bytes().any(|b| b < 0x20 || b == 0x7f), "{out:?}");
        // A lone carriage return would let a line overwrite itself.
        assert_eq!(shown(&[b"ok\rFAKE\n"]), "ok\\rFAKE\n");
        assert_eq!(shown(&[b"end\r"]), "end\\r");
    }

    #[test]
    fn c1_controls_and_bad_bytes_are_shown() {
        // U+009B (CSI as one C1 character) in UTF-8, then raw 0x9b and 0xff.
        assert_eq!(shown(&[b"a\xc2\x9b2Jb"]), "a\\u{9b}2Jb");
        assert_eq!(shown(&[b"a\x9b2J\xff"]), "a\\x9b2J\\xff");
    }

    #[test]
    fn utf8_split_across_reads_is_kept_whole() {
        let bytes = "é\u{9b}".as_bytes();
        assert_eq!(shown(&[&bytes[..1], &bytes[1..3], &bytes[3..]]), "é\\u{9b}");
        // A sequence that never finishes is shown byte by byte.
        assert_eq!(shown(&[b"x\xe2\x82"]), "x\\xe2\\x82");
    }

    #[test]
    fn escape_str_for_single_lines() {
        assert_eq!(escape_str("ready \u{1b}[31mred"), "ready \\x1b[31mred");
    }
}
