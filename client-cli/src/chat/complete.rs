//! Tab completion in the input line: `/commands` as the first word, member
//! usernames (as `@name`) anywhere. Tab again cycles through the matches;
//! the app forgets the cycle on any other key.

/// A completion in progress: the matches and the one inserted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// Where the completed word starts (char index in the input).
    pub start: usize,
    /// The matches, each as inserted (with a trailing space).
    pub candidates: Vec<String>,
    /// The one inserted now.
    pub index: usize,
}

impl Cycle {
    /// The text inserted now.
    pub fn current(&self) -> &str {
        self.candidates.get(self.index).map_or("", String::as_str)
    }

    /// Moves to the next match; returns the text it replaces (its length
    /// in chars) and the new text.
    pub fn advance(&mut self) -> (usize, &str) {
        let old = self.current().chars().count();
        self.index = (self.index + 1) % self.candidates.len().max(1);
        (old, self.current())
    }
}

/// Completes the word that ends at the cursor. `before` is the input up to
/// the cursor; `names` the usernames to offer (in order of preference);
/// `commands` the command names. `None`: nothing to complete.
pub fn start(before: &str, names: &[String], commands: &[&str]) -> Option<Cycle> {
    let chars: Vec<char> = before.chars().collect();
    let start = chars.iter().rposition(|c| c.is_whitespace()).map_or(0, |i| i + 1);
    let word: String = chars[start..].iter().collect();
    let candidates: Vec<String> = if start == 0 && word.starts_with('/') && !word.starts_with("//") {
        let prefix = word[1..].to_lowercase();
        commands.iter().filter(|c| c.starts_with(&prefix)).map(|c| format!("/{c} ")).collect()
    } else {
        let prefix = word.strip_prefix('@').unwrap_or(&word).to_lowercase();
        if prefix.is_empty() && !word.starts_with('@') {
            return None;
        }
        names.iter().filter(|n| n.starts_with(&prefix)).map(|n| format!("@{n} ")).collect()
    };
    if candidates.is_empty() {
        return None;
    }
    Some(Cycle { start, candidates, index: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["bob", "carol", "caroline", "alice"].iter().map(|s| s.to_string()).collect()
    }

    const COMMANDS: &[&str] = &["dm", "go", "group", "help", "rename", "role"];

    #[test]
    fn commands_at_the_start_only() {
        let c = start("/ro", &names(), COMMANDS).unwrap();
        assert_eq!((c.start, c.candidates.clone()), (0, vec!["/role ".to_string()]));
        let mut c = start("/g", &names(), COMMANDS).unwrap();
        assert_eq!(c.current(), "/go ");
        assert_eq!(c.advance(), (4, "/group "));
        assert_eq!(c.advance(), (7, "/go "), "wraps around");
        assert_eq!(start("hello /ro", &names(), COMMANDS), None);
        assert_eq!(start("/zz", &names(), COMMANDS), None);
    }

    #[test]
    fn usernames_with_or_without_the_at() {
        let c = start("hi @ca", &names(), COMMANDS).unwrap();
        assert_eq!((c.start, c.candidates), (3, vec!["@carol ".to_string(), "@caroline ".to_string()]));
        let c = start("bo", &names(), COMMANDS).unwrap();
        assert_eq!(c.candidates, ["@bob "]);
        let c = start("/role @b", &names(), COMMANDS).unwrap();
        assert_eq!((c.start, c.candidates), (6, vec!["@bob ".to_string()]));
        assert_eq!(start("", &names(), COMMANDS), None);
        assert_eq!(start("hello ", &names(), COMMANDS), None);
        assert_eq!(start("@", &names(), COMMANDS).unwrap().candidates.len(), 4);
        assert_eq!(start("@Bo", &names(), COMMANDS).unwrap().candidates, ["@bob "]);
    }
}
