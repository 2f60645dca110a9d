//! Text checks shared by the extractors: percent-decoding, path normalisation, control
//! characters, and the once-only log of a misconfiguration.

use std::sync::atomic::{AtomicBool, Ordering};

use http::request::Parts;

use super::KeyError;

/// `true` when the request target names no path: the authority form of `CONNECT`
/// (`example.com:443`, an empty path) or the asterisk form (`OPTIONS *`). No route of a
/// router can match it (axum answers from its catch-all fallback), so path-based extractors
/// let it through without a lock.
pub(super) fn names_no_path(parts: &Parts) -> bool {
    !parts.uri.path().starts_with('/')
}

/// Refuses text with a control character (`\0`, `\n`, DEL, C1 controls, ...) with a `400`
/// naming `what()`, never echoing the text.
pub(super) fn refuse_control(text: &str, what: impl FnOnce() -> String) -> Result<(), KeyError> {
    if text.chars().any(char::is_control) {
        return Err(KeyError::new(format!(
            "{} contains a control character",
            what()
        )));
    }
    Ok(())
}

/// The key of a request path (without the query): percent-decoded and normalised.
///
/// - every `%XX` is decoded; a bad escape (`%ZZ`, a lone `%`), a decoded text that is not
///   UTF-8, or a control character is a `400`;
/// - empty segments (`//`) and `.` segments are dropped, `..` drops the segment before it
///   (never above the root), also when written `%2E%2E`;
/// - a trailing slash is dropped (`/a/` is `/a`; the root stays `/`);
/// - inside a segment, `%` and `/` are written back as `%25` and `%2F`, so that a segment
///   holding an encoded slash (`a%2Fb`) stays apart from two segments (`a/b`).
///
/// So every spelling of one path gives one key; a few different paths that a router keeps
/// apart (`/a/` and `/a`, `/a//b` and `/a/b`) share a key too, which only locks more.
pub(super) fn normalize_path(raw: &str) -> Result<String, KeyError> {
    let mut segments: Vec<String> = Vec::new();
    for raw_segment in raw.split('/') {
        let segment = decode_segment(raw_segment)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut key = String::with_capacity(raw.len());
    for segment in &segments {
        key.push('/');
        for c in segment.chars() {
            match c {
                '%' => key.push_str("%25"),
                '/' => key.push_str("%2F"),
                c => key.push(c),
            }
        }
    }
    if key.is_empty() {
        key.push('/');
    }
    Ok(key)
}

/// Percent-decodes one raw path segment.
fn decode_segment(raw: &str) -> Result<String, KeyError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|pair| {
                let high = char::from(pair[0]).to_digit(16)?;
                let low = char::from(pair[1]).to_digit(16)?;
                u8::try_from(high * 16 + low).ok()
            });
            let Some(byte) = hex else {
                return Err(KeyError::new("the path has an invalid percent-encoding"));
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out)
        .map_err(|_| KeyError::new("the path is not valid UTF-8 once percent-decoded"))?;
    refuse_control(&text, || "the path".to_owned())?;
    Ok(text)
}

/// Logs a misconfiguration once per extractor (not per request) at `error` level, on the
/// `tower_redlock::layer::key` target. A clone logs on its own.
#[derive(Debug, Default)]
pub(super) struct LogOnce(AtomicBool);

impl LogOnce {
    /// Logs `error` the first time, and returns it.
    pub(super) fn misconfigured(&self, error: KeyError) -> KeyError {
        if !self.0.swap(true, Ordering::Relaxed) {
            tracing::error!(
                target: "tower_redlock::layer::key",
                "{}: every such request is refused with a 500",
                error.message()
            );
        }
        error
    }
}

impl Clone for LogOnce {
    fn clone(&self) -> Self {
        LogOnce::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let cases = [
            ("/", "/"),
            ("", "/"),
            ("/p/42", "/p/42"),
            ("/p/%34%32", "/p/42"),
            ("/p/42/", "/p/42"),
            ("//p///42//", "/p/42"),
            ("/p/./42", "/p/42"),
            ("/p/x/../42", "/p/42"),
            ("/p/x/%2E%2E/42", "/p/42"),
            ("/p/x/%2e./42", "/p/42"),
            ("/../../p", "/p"),
            ("/..", "/"),
            ("/p/a%2Fb", "/p/a%2Fb"),
            ("/p/a%2fb", "/p/a%2Fb"),
            ("/p/a/b", "/p/a/b"),
            ("/p/100%25", "/p/100%25"),
            ("/p/a%20b", "/p/a b"),
            ("/p/%C3%A9t%C3%A9", "/p/été"),
            ("/p/..x", "/p/..x"),
            ("/p/+42", "/p/+42"),
        ];
        for (raw, key) in cases {
            assert_eq!(normalize_path(raw).as_deref(), Ok(key), "{raw}");
        }
    }

    #[test]
    fn bad_encodings_are_400_without_echo() {
        for raw in [
            "/p/%ZZ",
            "/p/%",
            "/p/%4",
            "/p/%FF",
            "/p/%C3",
            "/p/%00",
            "/p/a%0Ab",
            "/p/%7F",
            "/p/%C2%85",
        ] {
            let error = normalize_path(raw).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{raw}");
            assert!(!error.message().contains("/p"), "{error}");
        }
    }
}
