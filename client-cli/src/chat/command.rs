//! Slash commands typed in the input line.

use confab_protocol::pb;

/// The commands, for Tab completion (their aliases work too).
pub const COMMANDS: &[&str] =
    &["add", "dm", "go", "group", "help", "leave", "members", "presence", "quit", "remove", "rename", "role"];

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slash {
    /// `/dm @user`: open (or create) the direct conversation.
    Dm(String),
    /// `/group create TITLE @a @b`: a new group.
    GroupCreate {
        /// The words that are not @names, joined.
        title: String,
        /// The @names.
        users: Vec<String>,
    },
    /// `/add @a @b` to the open group.
    Add(Vec<String>),
    /// `/remove @user` from the open group.
    Remove(String),
    /// `/leave` the open group.
    Leave,
    /// `/rename TITLE` the open group.
    Rename(String),
    /// `/members` of the open conversation.
    Members,
    /// `/role @user owner|admin|member` in the open group.
    Role {
        /// Whose.
        user: String,
        /// The new role.
        role: pb::MemberRole,
    },
    /// `/go N` or `/go NAME`: open a conversation by its number in the
    /// list or its name.
    Go(String),
    /// `/presence @a @b`.
    Presence(Vec<String>),
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// What the input line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A message to send (`//text` sends "/text").
    Message(String),
    /// A command.
    Command(Slash),
}

fn user(word: &str) -> Result<String, String> {
    match word.strip_prefix('@') {
        Some(u) if !u.is_empty() => Ok(u.to_lowercase()),
        _ => Err(format!("'{word}' is not a @username")),
    }
}

fn users(words: &[&str], usage: &str) -> Result<Vec<String>, String> {
    if words.is_empty() {
        return Err(format!("usage: {usage}"));
    }
    words.iter().map(|w| user(w)).collect()
}

/// Reads what was typed. Text that does not start with '/' is a message.
pub fn parse(text: &str) -> Result<Input, String> {
    let Some(rest) = text.strip_prefix('/') else { return Ok(Input::Message(text.to_string())) };
    if rest.starts_with('/') {
        return Ok(Input::Message(rest.to_string()));
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else { return Err("empty command: /help lists them".into()) };
    let one_user = |usage: &str| match args {
        [u] => user(u),
        _ => Err(format!("usage: {usage}")),
    };
    let none = |cmd: Slash| if args.is_empty() { Ok(cmd) } else { Err(format!("/{name} takes no arguments")) };
    let cmd = match name.to_lowercase().as_str() {
        "dm" | "msg" | "query" => Slash::Dm(one_user("/dm @user")?),
        "group" => match args.split_first() {
            Some((&"create", rest)) => {
                let (names, title): (Vec<&str>, Vec<&str>) = rest.iter().partition(|w| w.starts_with('@'));
                if title.is_empty() {
                    return Err("usage: /group create TITLE @user …".into());
                }
                Slash::GroupCreate { title: title.join(" "), users: users_or_none(&names)? }
            }
            _ => return Err("usage: /group create TITLE @user …".into()),
        },
        "add" | "invite" => Slash::Add(users(args, "/add @user …")?),
        "remove" | "kick" => Slash::Remove(one_user("/remove @user")?),
        "leave" | "part" => none(Slash::Leave)?,
        "rename" | "title" => {
            if args.is_empty() {
                return Err("usage: /rename TITLE".into());
            }
            Slash::Rename(args.join(" "))
        }
        "members" | "names" | "who" => none(Slash::Members)?,
        "role" | "op" => match args {
            [u, role] => Slash::Role { user: user(u)?, role: role_of(role)? },
            _ => return Err("usage: /role @user owner|admin|member".into()),
        },
        "go" | "join" | "j" | "buffer" => {
            if args.is_empty() {
                return Err("usage: /go N or /go NAME (a number in the list, @user or a title)".into());
            }
            Slash::Go(args.join(" "))
        }
        "presence" | "whois" => Slash::Presence(users(args, "/presence @user …")?),
        "help" | "?" => Slash::Help,
        "quit" | "exit" | "q" => Slash::Quit,
        other => return Err(format!("unknown command /{other}: /help lists them")),
    };
    Ok(Input::Command(cmd))
}

fn role_of(word: &str) -> Result<pb::MemberRole, String> {
    match word.to_lowercase().as_str() {
        "owner" => Ok(pb::MemberRole::Owner),
        "admin" => Ok(pb::MemberRole::Admin),
        "member" => Ok(pb::MemberRole::Member),
        _ => Err(format!("'{word}' is not a role: owner, admin or member")),
    }
}

fn users_or_none(words: &[&str]) -> Result<Vec<String>, String> {
    words.iter().map(|w| user(w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Slash {
        match parse(s) {
            Ok(Input::Command(c)) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn commands() {
        assert_eq!(cmd("/dm @Bob"), Slash::Dm("bob".into()));
        assert_eq!(
            cmd("/group create Weekend plans @alice @bob"),
            Slash::GroupCreate { title: "Weekend plans".into(), users: vec!["alice".into(), "bob".into()] }
        );
        assert_eq!(cmd("/add @carol @dave"), Slash::Add(vec!["carol".into(), "dave".into()]));
        assert_eq!(cmd("/remove @carol"), Slash::Remove("carol".into()));
        assert_eq!(cmd("/leave"), Slash::Leave);
        assert_eq!(cmd("/rename The  Team"), Slash::Rename("The Team".into()));
        assert_eq!(cmd("/members"), Slash::Members);
        assert_eq!(cmd("/presence @bob"), Slash::Presence(vec!["bob".into()]));
        assert_eq!(cmd("/role @Bob Admin"), Slash::Role { user: "bob".into(), role: pb::MemberRole::Admin });
        assert_eq!(cmd("/go 2"), Slash::Go("2".into()));
        assert_eq!(cmd("/join Weekend plans"), Slash::Go("Weekend plans".into()));
        assert_eq!(cmd("/help"), Slash::Help);
        assert_eq!(cmd("/quit"), Slash::Quit);
    }

    #[test]
    fn messages_and_mistakes() {
        assert_eq!(parse("hello /dm"), Ok(Input::Message("hello /dm".into())));
        assert_eq!(parse("//dm is a command"), Ok(Input::Message("/dm is a command".into())));
        assert!(parse("/dm bob").unwrap_err().contains("@username"));
        assert!(parse("/dm").unwrap_err().contains("usage"));
        assert!(parse("/group create @bob").unwrap_err().contains("usage"));
        assert!(parse("/frobnicate").unwrap_err().contains("unknown command"));
        assert!(parse("/leave now").unwrap_err().contains("no arguments"));
        assert!(parse("/role @bob king").unwrap_err().contains("not a role"));
        assert!(parse("/role @bob").unwrap_err().contains("usage"));
        assert!(parse("/go").unwrap_err().contains("usage"));
    }
}
