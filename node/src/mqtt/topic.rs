//! CORE. Topic names and topic filters (section 4.7): validation, shared-subscription
//! parsing, and the reference matcher the trie is property-tested against.

use super::reason;

/// Bounds on topics, from configuration.
#[derive(Clone, Copy, Debug)]
pub struct TopicLimits {
    /// Maximum number of `/`-separated levels.
    pub levels_max: usize,
    /// Maximum length in bytes.
    pub len_max: usize,
}

impl Default for TopicLimits {
    fn default() -> Self {
        Self { levels_max: 32, len_max: 65_535 }
    }
}

fn within(s: &str, limits: TopicLimits) -> bool {
    s.len() <= limits.len_max && s.split('/').count() <= limits.levels_max
}

/// Checks a PUBLISH topic name: non-empty, no wildcards (MQTT-3.3.2-2, MQTT-4.7.3-1), within
/// limits. Returns the reason code on failure (0x90 Topic Name invalid).
pub fn validate_topic_name(topic: &str, limits: TopicLimits) -> Result<(), u8> {
    if topic.is_empty() || topic.contains(['+', '#']) || !within(topic, limits) {
        return Err(reason::TOPIC_NAME_INVALID);
    }
    Ok(())
}

/// Checks a topic filter: non-empty, `#` only as the whole last level, `+` only as a whole
/// level (MQTT-4.7.1-1, -2, MQTT-4.7.3-1), within limits.
pub fn validate_filter(filter: &str, limits: TopicLimits) -> Result<(), u8> {
    if filter.is_empty() || !within(filter, limits) {
        return Err(reason::TOPIC_FILTER_INVALID);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        let ok = match level {
            "#" => last,
            "+" => true,
            l => !l.contains(['+', '#']),
        };
        if !ok {
            return Err(reason::TOPIC_FILTER_INVALID);
        }
    }
    Ok(())
}

/// True when the filter contains a wildcard.
pub fn is_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// A parsed `$share/{group}/{filter}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// Share name.
    pub group: &'a str,
    /// The filter after the share name.
    pub filter: &'a str,
}

/// Splits a shared subscription filter. `Ok(None)` for an ordinary filter; an error (0x8F)
/// for a malformed share: empty share name, wildcards in it, or a missing filter
/// (MQTT-4.8.2-1, -2).
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, u8> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        if filter == "$share" {
            return Err(reason::TOPIC_FILTER_INVALID);
        }
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(reason::TOPIC_FILTER_INVALID);
    };
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(reason::TOPIC_FILTER_INVALID);
    }
    Ok(Some(SharedFilter { group, filter: inner }))
}

/// Reference matcher: does `filter` match `topic`? A linear, obviously-correct statement of
/// section 4.7 including the `$` rule (MQTT-4.7.2-1): wildcards at the first level never
/// match a topic starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: TopicLimits = TopicLimits { levels_max: 32, len_max: 65_535 };

    #[test]
    fn mqtt_4_7_1_2_multi_level_wildcard_matches_parent_and_children() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b"));
        assert!(!matches("sport/tennis/#", "sport"));
    }

    #[test]
    fn mqtt_4_7_1_3_single_level_wildcard_matches_one_level() {
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", ""));
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards() {
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    #[test]
    fn mqtt_4_7_1_1_filters_with_misplaced_wildcards_are_invalid() {
        for bad in ["sport/tennis#", "sport/tennis/#/ranking", "sport+", "", "a/b+/c"] {
            assert!(validate_filter(bad, L).is_err(), "{bad}");
        }
        for good in ["#", "+", "+/tennis/#", "sport/+/player1", "/", "a//b"] {
            assert!(validate_filter(good, L).is_ok(), "{good}");
        }
    }

    #[test]
    fn mqtt_3_3_2_2_topic_names_must_not_contain_wildcards() {
        assert!(validate_topic_name("a/+/b", L).is_err());
        assert!(validate_topic_name("a/#", L).is_err());
        assert!(validate_topic_name("", L).is_err());
        assert!(validate_topic_name("a/b", L).is_ok());
    }

    #[test]
    fn topic_limits_are_enforced() {
        let l = TopicLimits { levels_max: 3, len_max: 10 };
        assert!(validate_topic_name("a/b/c", l).is_ok());
        assert!(validate_topic_name("a/b/c/d", l).is_err());
        assert!(validate_topic_name("abcdefghijk", l).is_err());
    }

    #[test]
    fn mqtt_4_8_2_shared_filters_parse() {
        assert_eq!(parse_shared("$share/g/a/+"), Ok(Some(SharedFilter { group: "g", filter: "a/+" })));
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert!(parse_shared("$share/g").is_err());
        assert!(parse_shared("$share//a").is_err());
        assert!(parse_shared("$share/g+/a").is_err());
    }
}
