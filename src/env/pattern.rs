//! Name patterns: the whole name must match, case-insensitively; `*` matches any run of
//! characters (also empty), `?` exactly one character; nothing else is special.

use wildmatch::WildMatch;

/// A set of patterns compiled once (per policy), then matched against many names.
///
/// Case-insensitivity is by full lowercasing of pattern and name before matching (so a
/// character whose lowercase is several characters compares as those characters), and the
/// matching itself is `wildmatch`'s (`*` any run, `?` one character, linear time).
///
/// ```
/// use stockade::env::PatternSet;
/// let secrets = PatternSet::new(["*KEY*", "*TOKEN*"]);
/// assert!(secrets.any("monkey"));
/// assert!(!secrets.any("PATH"));
/// ```
#[derive(Debug, Clone)]
pub struct PatternSet(Vec<WildMatch>);

impl PatternSet {
    /// Compiles every pattern.
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> PatternSet {
        PatternSet(
            patterns
                .into_iter()
                .map(|p| WildMatch::new(&p.as_ref().to_lowercase()))
                .collect(),
        )
    }

    /// True if any pattern of the set matches the whole `name`.
    pub fn any(&self, name: &str) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let name = name.to_lowercase();
        self.0.iter().any(|p| p.matches(&name))
    }
}

/// True if `name` matches `pattern` (a one-pattern [`PatternSet`]).
///
/// ```
/// use stockade::env::matches;
/// assert!(matches("*KEY*", "monkey"));
/// assert!(matches("AWS_?", "aws_x"));
/// assert!(!matches("A.B", "AxB"));
/// ```
pub fn matches(pattern: &str, name: &str) -> bool {
    PatternSet::new([pattern]).any(name)
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
        // Backtracking matchers take ~2000^50 steps here. The deadline is a hang detector, far
        // above the linear matcher's cost, not a speed assertion.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let name = "a".repeat(2000);
            let pattern = "*a".repeat(50) + "b";
            let _ = tx.send(matches(&pattern, &name));
        });
        let verdict = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(verdict, Ok(false), "the matcher did not finish in 30 s");
    }
}
