//! Name patterns: the whole name must match, case-insensitively; `*` matches any run of
//! characters (also empty), `?` exactly one character; nothing else is special.

/// True if `name` matches `pattern`.
///
/// ```
/// use stockade::env::matches;
/// assert!(matches("*KEY*", "monkey"));
/// assert!(matches("AWS_?", "aws_x"));
/// assert!(!matches("A.B", "AxB"));
/// ```
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let n: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    let (mut pi, mut ni) = (0, 0);
    // Position of the last `*` seen and the name index it was tried at (greedy backtracking:
    // linear in practice, never exponential).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        // A `*` in the pattern is always a wildcard, even where the name has a literal `*`.
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// True if any pattern matches.
pub fn any_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("*", "", true),
            ("*", "ANY", true),
            ("", "", true),
            ("", "A", false),
            ("PATH", "path", true),
            ("PATH", "PATHX", false),
            ("*KEY*", "MONKEY", true),
            ("*KEY*", "KEY", true),
            ("*KEY*", "KE", false),
            ("*SECRET*", "my_secret", true),
            ("*TOKEN*", "GH_TOKEN", true),
            ("A?C", "ABC", true),
            ("A?C", "AC", false),
            ("A?C", "ABBC", false),
            ("A.B", "A.B", true),
            ("A.B", "AXB", false),
            ("A+", "A+", true),
            ("A+", "AA", false),
            ("[AB]", "A", false),
            ("[AB]", "[ab]", true),
            ("*_*_*", "A_B_C", true),
            ("*_*_*", "A_B", false),
            ("a*b*c", "aXXbYYbZZc", true),
            ("a*b*c", "aXXbYYbZZ", false),
            // Found by fuzz/env_pattern: a literal `*` in the name must not consume the
            // pattern's wildcard.
            ("*", "*x", true),
            ("*x", "**x", true),
            ("a*", "a*b", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(matches(p, n), want, "pattern {p:?} name {n:?}");
        }
    }

    #[test]
    fn no_exponential_blowup() {
        let name = "a".repeat(2000);
        let pattern = "*a".repeat(50) + "b";
        assert!(!matches(&pattern, &name));
    }
}
