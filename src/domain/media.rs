//! Media types (`Content-Type`) as files declare them and as they are served.
//!
//! A declared type is parsed, not matched as text: one well-formed `type/subtype` with at
//! most a `charset` parameter, stored lowercase. So a space's type rules compare the
//! essence and nothing can hide behind a parameter (`image/png;x=,text/html` is refused,
//! not served as HTML), and what is served is exactly what was checked.

use super::Invalid;

/// What is served for content whose type was not declared.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// `raw` as stored: the essence lowercase, plus `; charset=<lowercase>` if given.
pub fn normalize_content_type(raw: &str) -> Result<String, Invalid> {
    let refuse = |why: &str| {
        Invalid(format!(
            "contentType must be one media type such as \"text/plain\" or \
             \"text/plain; charset=utf-8\": {why}"
        ))
    };
    if raw.len() > 255 || !raw.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return Err(refuse("printable ASCII of at most 255 characters"));
    }
    let parsed: mime::Mime = raw.trim().parse().map_err(|_| refuse("not well formed"))?;
    if parsed.type_() == mime::STAR || parsed.subtype() == mime::STAR {
        return Err(refuse("no wildcards"));
    }
    let mut normalized = parsed.essence_str().to_ascii_lowercase();
    for (name, value) in parsed.params() {
        if name != mime::CHARSET {
            return Err(refuse("the only parameter accepted is charset"));
        }
        let value = value.as_str();
        if value.is_empty() || !value.bytes().all(is_token_byte) {
            return Err(refuse("a charset is a single word"));
        }
        normalized.push_str("; charset=");
        normalized.push_str(&value.to_ascii_lowercase());
    }
    Ok(normalized)
}

/// The `type/subtype` of a normalized type.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// The type content is served with: what was stored, normalised again (content stored
/// before types were parsed is refused here and served as the default).
pub fn served_type(stored: Option<&str>) -> String {
    stored
        .and_then(|ct| normalize_content_type(ct).ok())
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned())
}

/// Whether content of this (normalised) type is downloaded rather than shown: anything
/// but a short list of types browsers display without running anything (images other
/// than SVG, audio, video, plain text). A page, a script, an SVG, XML, an XSL sheet, a
/// PDF, or a type a browser would sniff (`unknown/unknown`) never runs as the origin
/// that serves it.
pub fn served_as_attachment(content_type: &str) -> bool {
    let essence = essence(content_type).to_ascii_lowercase();
    let Some((top, sub)) = essence.split_once('/') else {
        return true;
    };
    let inline = match top {
        "image" => matches!(
            sub,
            "png"
                | "jpeg"
                | "gif"
                | "webp"
                | "avif"
                | "bmp"
                | "x-icon"
                | "vnd.microsoft.icon"
                | "tiff"
                | "heic"
                | "heif"
        ),
        "audio" | "video" => true,
        "text" => sub == "plain",
        _ => false,
    };
    !inline
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_type_with_at_most_a_charset_is_accepted_normalized() {
        assert_eq!(normalize_content_type("Text/Plain").unwrap(), "text/plain");
        assert_eq!(
            normalize_content_type("text/plain; Charset=UTF-8").unwrap(),
            "text/plain; charset=utf-8"
        );
        for bad in [
            "image/png;x=,text/html",
            "image/png; x=1",
            "text/html, image/png",
            "image/*",
            "*/*",
            "png",
            "",
            "text/plain; charset=",
            "text/plain; charset=\"utf 8\"",
            "text/pl\u{e9}in",
            "text/plain\r\nX-Injected: 1",
        ] {
            assert!(normalize_content_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pages_and_scripts_are_attachments() {
        for t in [
            "text/xsl",
            "unknown/unknown",
            "application/unknown",
            "application/json",
            "text/html",
            "application/xhtml+xml",
            "image/svg+xml",
            "text/xml",
            "application/xml",
            "text/javascript",
            "application/javascript; charset=utf-8",
            "application/pdf",
            "multipart/x-mixed-replace",
            "application/octet-stream",
            "image/x-unknown",
        ] {
            assert!(served_as_attachment(t), "{t}");
        }
        for t in [
            "image/png",
            "image/jpeg",
            "text/plain",
            "text/plain; charset=utf-8",
            "video/mp4",
            "audio/ogg",
        ] {
            assert!(!served_as_attachment(t), "{t}");
        }
    }
}
