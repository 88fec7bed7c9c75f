//! Outside text (guest messages and logs, names and host names from peers)
//! on its way to a terminal or a log line: [`escape_controls`] makes every
//! control character visible, so no escape sequence reaches a terminal and
//! no newline forges a log line. And [`check_name`]: the one character set
//! of names (agent names, versions, node ids, label keys and values),
//! checked where they enter.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` would act on a terminal or a log reader rather than show:
/// C0 and C1 controls, DEL, and the bidirectional overrides and isolates
/// that reorder the text around them.
fn is_active(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The innermost cause of an error, said once (a transport error's
/// outer layers say only "error sending request").
pub fn root_cause(e: &dyn std::error::Error) -> String {
    let mut root = e;
    while let Some(next) = root.source() {
        root = next;
    }
    root.to_string()
}

/// `text` cut to at most `max` bytes (on a character boundary), ending
/// with a note of how many bytes were cut; borrowed when it fits.
pub fn cut_text(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} bytes cut)",
        &text[..end],
        text.len() - end
    ))
}

/// `text` with every control character written as an escape (`\n`, `\t`,
/// `\u{1b}`, ...); borrowed when there is none.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_active) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_active(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `json`, text serde_json wrote (which escapes C0 controls, below U+0020,
/// in strings and writes none outside them), with the other active
/// characters (DEL, C1 controls, bidirectional overrides) escaped as
/// `\uXXXX`: still the same JSON, now safe on a terminal.
pub fn escape_json_controls(json: &str) -> Cow<'_, str> {
    if !json.chars().any(|c| is_active(c) && c >= ' ') {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_active(c) && c >= ' ' {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Most characters of a name.
pub const MAX_NAME_CHARS: usize = 128;

/// A name that does not fit the character set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{shown}` {problem}")]
pub struct NameError {
    pub what: &'static str,
    pub shown: String,
    pub problem: &'static str,
}

/// Checks `name`, a `what` ("agent name", "version", "node id", "label
/// key", ...): 1 to 128 characters of ASCII letters, digits and `.`, `_`,
/// `-` (and `+` in versions, `/` in label keys), starting with a letter or
/// digit.
pub fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let fail = |problem| {
        Err(NameError {
            what,
            shown: escape_controls(&name.chars().take(MAX_NAME_CHARS).collect::<String>())
                .into_owned(),
            problem,
        })
    };
    let extra: &[char] = match what {
        "version" => &['+'],
        "label key" => &['/'],
        _ => &[],
    };
    if name.is_empty() {
        return fail("is empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return fail("is longer than 128 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return fail("must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || extra.contains(&c))
    {
        return fail("may hold only ASCII letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

/// Checks a placement label `key=value` (node labels, run selectors).
pub fn check_label(key: &str, value: &str) -> Result<(), NameError> {
    check_name("label key", key)?;
    check_name("label value", value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_is_untouched() {
        assert!(matches!(escape_controls("hello, wörld"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nINFO forged\x1b[2J\u{9b}\u{202e}z"),
            "a\\nINFO forged\\u{1b}[2J\\u{9b}\\u{202e}z"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_and_says_so() {
        assert!(matches!(cut_text("short", 5), Cow::Borrowed("short")));
        // "é" is two bytes: a cut at 2 would split it.
        assert_eq!(cut_text("aéb", 2), "a… (3 bytes cut)");
        assert_eq!(cut_text("abcdef", 4), "abcd… (2 bytes cut)");
    }

    #[test]
    fn json_stays_json_with_its_controls_escaped() {
        let text =
            serde_json::to_string_pretty(&serde_json::json!({"a": "x\u{1b}\u{9b}\u{7f}\u{202e}y"}))
                .unwrap();
        let safe = escape_json_controls(&text);
        assert!(!safe.chars().any(|c| is_active(c) && c != '\n'), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["a"], "x\u{1b}\u{9b}\u{7f}\u{202e}y");
    }

    #[test]
    fn names_fit_one_character_set() {
        for ok in ["hello", "a", "research-agent_2.v1", &"x".repeat(128)] {
            assert_eq!(check_name("agent name", ok), Ok(()), "{ok}");
        }
        assert_eq!(check_name("version", "1.0.0+build.5"), Ok(()));
        assert_eq!(check_name("label key", "warden.dev/role"), Ok(()));
        for bad in [
            "",
            "-x",
            ".hidden",
            "a b",
            "a\nb",
            "ä",
            "a/b",
            "a@b",
            &"x".repeat(129),
        ] {
            let e = check_name("agent name", bad).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert!(check_name("agent name", "a+b").is_err());
        assert_eq!(check_label("region", "eu-west.1"), Ok(()));
        assert!(check_label("region", "eu west").is_err());
    }
}
