//! Topic Name and Topic Filter syntax (v5 4.7, v3.1.1 4.7).

/// Checks a Topic Name as found in PUBLISH or a Will: non-empty, no `+` or `#`
/// (v5 [MQTT-3.3.2-2], [MQTT-4.7.3-1]). `Utf8Str` already guarantees the string rules.
pub fn validate_topic_name(name: &[u8]) -> bool {
    !name.is_empty() && !name.iter().any(|&b| b == b'+' || b == b'#')
}

/// A rule of Topic Filter syntax (v5 4.7, 4.8.2; v3.1.1 4.7). A filter that breaks one is
/// not correctly formed: the packet carrying it is malformed (see
/// [`crate::DecodeError::TopicFilterInvalid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterRule {
    /// Empty: v5 [MQTT-4.7.3-1]; v3.1.1 [MQTT-4.7.3-1].
    Empty,
    /// `#` not alone in the last level: v5 [MQTT-4.7.1-1]; v3.1.1 [MQTT-4.7.1-2].
    MultiLevelWildcard,
    /// `+` not a whole level: v5 [MQTT-4.7.1-2]; v3.1.1 [MQTT-4.7.1-3].
    SingleLevelWildcard,
    /// `$share/` without a ShareName of at least one character free of `+` and `#`, followed
    /// by `/`: v5 [MQTT-4.8.2-1], [MQTT-4.8.2-2].
    ShareName,
    /// `$share/{ShareName}/` not followed by a Topic Filter: v5 [MQTT-4.8.2-2].
    SharedFilterMissing,
}

impl FilterRule {
    /// What the rule requires, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            FilterRule::Empty => "a topic filter must not be empty",
            FilterRule::MultiLevelWildcard => {
                "'#' must be alone in the last level of a topic filter"
            }
            FilterRule::SingleLevelWildcard => "'+' must occupy a whole topic filter level",
            FilterRule::ShareName => {
                "a shared subscription needs a share name without '+', '#' or '/' after \"$share/\""
            }
            FilterRule::SharedFilterMissing => {
                "a shared subscription needs a topic filter after \"$share/{name}/\""
            }
        }
    }
}

/// Checks a Topic Filter: non-empty (v5 [MQTT-4.7.3-1]); `#` only alone in the last level
/// (v5 [MQTT-4.7.1-1], v3.1.1 [MQTT-4.7.1-2]); `+` only as a whole level
/// (v5 [MQTT-4.7.1-2], v3.1.1 [MQTT-4.7.1-3]). A shared subscription
/// `$share/{ShareName}/{filter}` needs a non-empty ShareName without wildcards or `/` and a
/// non-empty filter after it (v5 [MQTT-4.8.2-1], [MQTT-4.8.2-2]).
///
/// # Errors
/// The first rule the filter breaks.
pub fn check_filter(filter: &[u8]) -> Result<(), FilterRule> {
    if filter.is_empty() {
        return Err(FilterRule::Empty);
    }
    if let Some(rest) = filter.strip_prefix(b"$share/") {
        let Some(slash) = rest.iter().position(|&b| b == b'/') else {
            return Err(FilterRule::ShareName);
        };
        let (group, f) = (&rest[..slash], &rest[slash + 1..]);
        if group.is_empty() || group.iter().any(|&b| b == b'+' || b == b'#') {
            return Err(FilterRule::ShareName);
        }
        if f.is_empty() {
            return Err(FilterRule::SharedFilterMissing);
        }
        return check_plain_filter(f);
    }
    check_plain_filter(filter)
}

/// [`check_filter`] as a yes/no.
pub fn validate_filter(filter: &[u8]) -> bool {
    check_filter(filter).is_ok()
}

fn check_plain_filter(filter: &[u8]) -> Result<(), FilterRule> {
    let mut levels = filter.split(|&b| b == b'/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains(&b'#') && (level != b"#" || !last) {
            return Err(FilterRule::MultiLevelWildcard);
        }
        if level.contains(&b'+') && level != b"+" {
            return Err(FilterRule::SingleLevelWildcard);
        }
    }
    Ok(())
}

/// Splits `$share/{group}/{filter}` into its parts; `None` for an ordinary filter.
pub fn split_shared(filter: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = filter.strip_prefix(b"$share/")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    Some((&rest[..slash], &rest[slash + 1..]))
}

/// True when `filter` contains a wildcard character.
pub fn has_wildcard(filter: &[u8]) -> bool {
    filter.iter().any(|&b| b == b'+' || b == b'#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in [
            "a",
            "a/b",
            "+",
            "#",
            "a/+/b",
            "a/#",
            "+/+",
            "/",
            "$SYS/#",
            "$share/g/a/#",
        ] {
            assert!(validate_filter(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "a#",
            "a/#/b",
            "a+",
            "a/b+",
            "#/a",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/",
        ] {
            assert!(!validate_filter(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn each_rule_is_named() {
        for (bad, rule) in [
            ("", FilterRule::Empty),
            ("#/a", FilterRule::MultiLevelWildcard),
            ("a/#/b", FilterRule::MultiLevelWildcard),
            ("a#", FilterRule::MultiLevelWildcard),
            ("a+/b", FilterRule::SingleLevelWildcard),
            ("a/+b", FilterRule::SingleLevelWildcard),
            ("$share/g", FilterRule::ShareName),
            ("$share//a", FilterRule::ShareName),
            ("$share/g+/a", FilterRule::ShareName),
            ("$share/g#/a", FilterRule::ShareName),
            ("$share/g/", FilterRule::SharedFilterMissing),
            ("$share/g/a+", FilterRule::SingleLevelWildcard),
        ] {
            assert_eq!(check_filter(bad.as_bytes()), Err(rule), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_topic_name(b"a/b"));
        assert!(!validate_topic_name(b""));
        assert!(!validate_topic_name(b"a/+"));
        assert!(!validate_topic_name(b"a/#"));
    }

    #[test]
    fn shared_split() {
        assert_eq!(
            split_shared(b"$share/g/a/b"),
            Some((&b"g"[..], &b"a/b"[..]))
        );
        assert_eq!(split_shared(b"a/b"), None);
    }
}
