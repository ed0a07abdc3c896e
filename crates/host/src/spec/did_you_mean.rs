//! "Did you mean …?" for unknown keys: the closest known key by edit distance,
//! treating `snake_case`, `kebab-case` and a different letter case as the same key.

/// Levenshtein distance between two strings, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Keys longer than this get no suggestion: no known key comes close, and
/// the edit distance costs the product of the lengths.
const MAX_KEY_LEN: usize = 64;

/// The known key closest to `unknown`, if one is close enough to be a plausible typo.
pub fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    if unknown.len() > MAX_KEY_LEN {
        return None;
    }
    let wanted = normalize(unknown);
    if let Some(exact) = known.iter().find(|k| normalize(k) == wanted) {
        return Some(exact);
    }
    // Keys are short: allow one edit for short keys, about a third of the length otherwise.
    let limit = (wanted.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(&wanted, &normalize(k)), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("memroy", "memory"), 2);
        assert_eq!(edit_distance("cpu", "cpus"), 1);
    }

    #[test]
    fn suggestions() {
        let keys = ["count", "cpus", "memory", "disk", "nodes"];
        assert_eq!(suggest("memroy", &keys), Some("memory"));
        assert_eq!(suggest("cpu", &keys), Some("cpus"));
        assert_eq!(suggest("Disk", &keys), Some("disk"));
        assert_eq!(suggest("colour", &keys), None);
        assert_eq!(suggest("", &keys), None);
        assert_eq!(suggest(&"memory".repeat(100), &keys), None);
        let keys = ["runc", "crun", "gvisor", "userNamespaces"];
        assert_eq!(suggest("user_namespaces", &keys), Some("userNamespaces"));
        assert_eq!(suggest("user-namespace", &keys), Some("userNamespaces"));
    }
}
