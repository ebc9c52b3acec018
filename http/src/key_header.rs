//! The `Idempotency-Key` header's value.

use ::http::header::HeaderValue;

/// Parses the header: the draft's structured-field string (`"abc"`) or the
/// bare token clients send in practice.
pub(crate) fn parse_key(value: &HeaderValue) -> Result<String, String> {
    let text = value
        .to_str()
        .map_err(|_| "the header is not visible ASCII".to_string())?
        .trim();
    let Some(quoted) = text.strip_prefix('"') else {
        return Ok(text.to_string());
    };
    let mut key = String::new();
    let mut chars = quoted.chars();
    loop {
        match chars.next() {
            Some('"') if chars.as_str().is_empty() => return Ok(key),
            Some('"') => return Err("text after the closing quote".into()),
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => key.push(c),
                _ => return Err("a backslash may only escape \" or \\".into()),
            },
            Some(c) => key.push(c),
            None => return Err("the quoted string is not closed".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_header_forms() {
        let parse = |s: &str| parse_key(&HeaderValue::from_str(s).unwrap());
        assert_eq!(parse("abc-123").unwrap(), "abc-123");
        assert_eq!(parse("\"abc-123\"").unwrap(), "abc-123");
        assert_eq!(parse(r#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        assert!(parse("\"open").is_err());
        assert!(parse("\"a\"b").is_err());
        assert!(parse(r#""a\x""#).is_err());
    }
}
