//! Which names can be stored.
//!
//! Line protocol accepts nearly any UTF-8 name and so does Sluice; a name is
//! refused only where it cannot be stored or would be ambiguous: the
//! namespace becomes an object store path segment, NUL cannot be stored in
//! PostgreSQL text, and `time` is the timestamp column.

/// Longest table or column name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 512;
/// Longest namespace name, in bytes.
pub(crate) const MAX_NAMESPACE_BYTES: usize = 64;

/// Namespace: 1–64 of `A-Z a-z 0-9 _ -`, and `.` not leading.
pub(crate) fn check_namespace(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("namespace is empty");
    }
    if name.len() > MAX_NAMESPACE_BYTES {
        return Err("namespace is longer than 64 bytes");
    }
    if name.starts_with('.') {
        return Err("namespace starts with `.`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("namespace may contain only ASCII letters, digits, `_`, `-` and `.`");
    }
    Ok(())
}

/// Table (measurement) name.
pub(crate) fn check_table(name: &str) -> Result<(), &'static str> {
    check_stored(name, "table name")
}

/// Tag or field name.
pub(crate) fn check_column(name: &str) -> Result<(), &'static str> {
    if name == "time" {
        return Err("`time` is the timestamp column and cannot be a tag or field");
    }
    check_stored(name, "column name")
}

fn check_stored(name: &str, _what: &'static str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err("name is longer than 512 bytes");
    }
    if name.as_bytes().contains(&0) {
        return Err("name contains a NUL byte");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(check_namespace("telegraf").is_ok());
        assert!(check_namespace("my-db_1.prod").is_ok());
        assert!(check_namespace("").is_err());
        assert!(check_namespace(".hidden").is_err());
        assert!(check_namespace("a/b").is_err());
        assert!(check_namespace("ünï").is_err());
        assert!(check_namespace(&"x".repeat(65)).is_err());
    }

    #[test]
    fn columns() {
        assert!(check_column("usage idle").is_ok());
        assert!(check_column("ünïcode,=").is_ok());
        assert!(check_column("time").is_err());
        assert!(check_column("a\0b").is_err());
        assert!(check_column(&"x".repeat(513)).is_err());
        assert!(check_table("time").is_ok());
    }
}
