//! Paths on the wire: absolute paths or `file://` URIs (PROTOCOL.md section 9).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// Why a wire path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not absolute.
    #[error("must be an absolute path or a file:// URI, got `{0}`")]
    Relative(String),
    /// A `file://` URI with a host other than empty or `localhost`, or a bad escape.
    #[error("invalid file URI `{0}`")]
    BadUri(String),
    /// Contains a NUL byte.
    #[error("contains a NUL byte")]
    Nul,
}

/// Which form a path arrived in (responses use the same form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathForm {
    /// A plain absolute path.
    Plain,
    /// A `file://` URI.
    Uri,
}

/// Parses an absolute path or `file://` URI (percent-escapes decoded).
pub fn parse_wire_path(s: &str) -> Result<(PathBuf, PathForm), PathError> {
    if s.contains('\0') {
        return Err(PathError::Nul);
    }
    if let Some(rest) = s.strip_prefix("file://") {
        let path_part = if rest.starts_with('/') {
            rest
        } else if let Some(r) = rest.strip_prefix("localhost") {
            r
        } else {
            return Err(PathError::BadUri(s.to_string()));
        };
        if !path_part.starts_with('/') {
            return Err(PathError::BadUri(s.to_string()));
        }
        // Drop a query or fragment: they are not part of a file path.
        let path_part = path_part.split(['?', '#']).next().unwrap_or("");
        let bytes = percent_decode(path_part).ok_or_else(|| PathError::BadUri(s.to_string()))?;
        if bytes.contains(&0) {
            return Err(PathError::Nul);
        }
        return Ok((PathBuf::from(OsString::from_vec(bytes)), PathForm::Uri));
    }
    if !s.starts_with('/') {
        return Err(PathError::Relative(s.to_string()));
    }
    Ok((PathBuf::from(s), PathForm::Plain))
}

/// What a `file://` URI leaves unescaped in a path: RFC 3986's unreserved characters and `/`.
const URI_PATH_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Decodes percent-escapes, refusing a `%` that is not followed by two hex digits (the
/// decoder itself passes such text through unchanged, which would turn a typo into a
/// different path).
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let well_formed = b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || b.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    well_formed.then(|| percent_encoding::percent_decode(b).collect())
}

/// Renders a path as a `file://` URI (percent-encoding what is not unreserved or `/`).
pub fn to_file_uri(path: &Path) -> String {
    let encoded = percent_encoding::percent_encode(path.as_os_str().as_bytes(), URI_PATH_ESCAPED);
    format!("file://{encoded}")
}

/// Renders a path in the given form.
pub fn render(path: &Path, form: PathForm) -> String {
    match form {
        PathForm::Plain => path.to_string_lossy().into_owned(),
        PathForm::Uri => to_file_uri(path),
    }
}

/// The real path of `path` when it exists, else the real path of its deepest existing
/// ancestor with the rest appended.
pub(crate) fn canonical_or_lexical(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = std::fs::canonicalize(&cur) {
            let mut out = real;
            for name in missing.iter().rev() {
                out.push(name);
            }
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                cur = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_uri() {
        assert_eq!(
            parse_wire_path("/a b").unwrap(),
            (PathBuf::from("/a b"), PathForm::Plain)
        );
        assert_eq!(
            parse_wire_path("file:///a%20b/%C3%A9").unwrap().0,
            PathBuf::from("/a b/é")
        );
        assert_eq!(
            parse_wire_path("file://localhost/tmp").unwrap().0,
            PathBuf::from("/tmp")
        );
        assert!(matches!(
            parse_wire_path("rel/x"),
            Err(PathError::Relative(_))
        ));
        assert!(matches!(
            parse_wire_path("file://host/x"),
            Err(PathError::BadUri(_))
        ));
        assert!(matches!(
            parse_wire_path("file:///%zz"),
            Err(PathError::BadUri(_))
        ));
        // A sign is not a hex digit (`u8::from_str_radix` would take `+f`), nor is a short escape.
        for bad in ["file:///%+f", "file:///%-1", "file:///a%2", "file:///a%"] {
            assert!(
                matches!(parse_wire_path(bad), Err(PathError::BadUri(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_wire_path("file:///a%00"),
            Err(PathError::Nul)
        ));
    }

    #[test]
    fn uri_roundtrip() {
        let p = Path::new("/tmp/a b/é%");
        let uri = to_file_uri(p);
        assert_eq!(parse_wire_path(&uri).unwrap().0, p);
    }
}
