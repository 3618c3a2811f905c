//! Syntax of names, label keys and label values, as Kubernetes defines them. Each check
//! returns `None` when the input is fine, or the sentence that says what is wrong.

/// RFC 1123 label: at most 63 lowercase alphanumerics or '-', starting and ending with an
/// alphanumeric. Namespaces and App names are labels (an App name becomes part of its
/// instance ids and of `$BATON_APP`).
pub fn dns_label_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".into());
    }
    if value.len() > 63 {
        return Some(format!("must be no more than 63 characters (it has {})", value.len()));
    }
    let ok_chars = value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends =
        value.starts_with(|c: char| c.is_ascii_alphanumeric()) && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok_chars || !ok_ends {
        return Some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
                .into(),
        );
    }
    None
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels.
pub fn dns_subdomain_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".into());
    }
    if value.len() > 253 {
        return Some(format!("must be no more than 253 characters (it has {})", value.len()));
    }
    if let Some(part) = value.split('.').find(|part| part.len() > 63) {
        let shown = if value.contains('.') { format!(" ({part:?})") } else { String::new() };
        return Some(format!(
            "each part between dots must be no more than 63 characters (the part{shown} has {})",
            part.len()
        ));
    }
    if value.split('.').any(|part| dns_label_problem(part).is_some()) {
        return Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com')"
                .into(),
        );
    }
    None
}

/// A label key: an optional DNS-subdomain prefix and '/', then a name of at most 63
/// characters: alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric.
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && let Some(problem) = dns_subdomain_problem(prefix)
    {
        return Some(format!("prefix part {problem}"));
    }
    if name.is_empty() {
        return Some("name part must not be empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !label_name_chars_ok(name) {
        return Some(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
             with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc')"
                .into(),
        );
    }
    None
}

/// A label value: empty, or at most 63 characters like a label key's name part.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if !label_name_chars_ok(value) {
        return Some(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345')"
                .into(),
        );
    }
    None
}

fn label_name_chars_ok(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert_eq!(dns_label_problem("web-1"), None);
        assert!(dns_label_problem("Web").is_some());
        assert!(dns_label_problem("-web").is_some());
        assert!(dns_label_problem(&"a".repeat(64)).unwrap().contains("63"));
        let long = dns_subdomain_problem(&"a".repeat(64)).unwrap();
        assert!(long.contains("no more than 63 characters") && long.contains("has 64"), "{long}");
        let dotted = dns_subdomain_problem(&format!("x.{}", "b".repeat(70))).unwrap();
        assert!(dotted.contains("has 70"), "{dotted}");
        assert_eq!(dns_subdomain_problem("a.b-c.d"), None);
        assert!(dns_subdomain_problem("a..b").is_some());
    }

    #[test]
    fn label_keys_and_values() {
        assert_eq!(label_key_problem("app"), None);
        assert_eq!(label_key_problem("baton.dev/tier"), None);
        assert!(label_key_problem("Bad_Prefix/x").is_some());
        assert!(label_key_problem("x/").is_some());
        assert_eq!(label_value_problem(""), None);
        assert_eq!(label_value_problem("v1.2_a"), None);
        assert!(label_value_problem("has space").is_some());
    }
}
