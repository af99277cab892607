//! The command line (`Cli`) and what every command runs with: the
//! context (`Ctx`: the arguments, the profile and how to reach the server)
//! and how a command fails (`Failure`, which decides the exit code). Shared
//! by `main.rs` and the interactive `chat` module, so that neither imports
//! the other's items.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use confab_client::tls::{self, Trust};
use confab_client::{ClientError, ConnectOptions, Connection, Profile, TransportKind};
use confab_protocol::pb;
use serde_json::Value;

/// Command-line client for Confab chat servers.
///
/// Exit codes: 0 success; 1 the server refused the request (the message
/// names its error code); 2 bad usage (a malformed argument, a password
/// not given or not the same twice); 3 connection or local failure.
#[derive(Debug, Parser)]
#[command(name = "confab", version, about = "Command-line client for Confab chat servers", long_about)]
pub struct Cli {
    /// Server address, HOST:PORT (default: the profile's server — on the
    /// port of the transport used, when the profile's was for another kind
    /// of listener — else $CONFAB_SERVER, else 127.0.0.1:7443, or
    /// 127.0.0.1:7080 for --transport ws/wss).
    #[arg(long, global = true, value_name = "HOST:PORT", value_parser = server_address)]
    pub server: Option<String>,
    /// Transport: quic (default), tcp (TCP+TLS), ws (WebSocket over plain
    /// HTTP, e.g. on loopback) or wss (WebSocket over TLS).
    #[arg(long, global = true, value_enum)]
    pub transport: Option<TransportKind>,
    /// Trust only this certificate (PEM file, e.g. the server's
    /// DATA_DIR/tls/cert.pem). Without it the fingerprint seen on first
    /// contact is stored in the profile and required from then on.
    #[arg(long, global = true, value_name = "PEM")]
    pub trust_cert: Option<PathBuf>,
    /// Ask this server's /v1/discover (its plain HTTP address, e.g.
    /// http://127.0.0.1:7080) where to connect, on every connect and
    /// reconnect: the first node that serves the transport wins (a cluster
    /// lists its least loaded node first). Overrides --server; remembered
    /// in the profile at signup and login.
    #[arg(long, global = true, value_name = "URL", value_parser = discover_url)]
    pub discover: Option<String>,
    /// Profile directory: token, device id, cursor, trusted fingerprints
    /// (default: the user's config dir, e.g. ~/.config/confab).
    #[arg(long, global = true, value_name = "DIR")]
    pub profile: Option<PathBuf>,
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account and log this profile in.
    Signup {
        /// Username: 3-32 of a-z 0-9 _ . - (lowercased for you).
        user: String,
        /// Name for this device.
        #[arg(long, default_value = "confab-cli")]
        device: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log in as a new device of an existing account.
    Login {
        /// Username.
        user: String,
        /// Name for this device.
        #[arg(long, default_value = "confab-cli")]
        device: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Revoke this device's token and forget it.
    Logout,
    /// Show who this profile is logged in as.
    Whoami,
    /// List this account's devices.
    Devices,
    /// Revoke one of this account's devices, or with --others every device
    /// but this one (after a leaked password).
    Revoke {
        /// Device id (see `devices`).
        #[arg(required_unless_present = "others", conflicts_with = "others")]
        device_id: Option<u64>,
        /// Revoke every other device of the account.
        #[arg(long)]
        others: bool,
    },
    /// Change this account's password (asks for the current one, then the
    /// new one twice).
    Passwd {
        /// Also sign out every other device of the account.
        #[arg(long)]
        revoke_others: bool,
        /// Read the current and the new password from stdin, one per line.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Block a user: they cannot open a direct conversation with you, add
    /// you to groups, or send in your direct conversation.
    Block {
        /// @username.
        user: String,
    },
    /// Unblock a user.
    Unblock {
        /// @username.
        user: String,
    },
    /// List the users you blocked.
    Blocked,
    /// Show or change who may reach you: `--dm everyone|nobody`,
    /// `--groups everyone|contacts|nobody` (contacts: people you have a
    /// direct conversation with), `--search everyone|nobody`. Without
    /// options, shows the settings.
    Privacy {
        /// Who may open a new direct conversation with you.
        #[arg(long, value_enum)]
        dm: Option<DmAudience>,
        /// Who may create a group with you in it or add you to one.
        #[arg(long, value_enum)]
        groups: Option<GroupAudience>,
        /// Who may find you by the start of your username (`confab
        /// search`); your whole username always finds you.
        #[arg(long, value_enum)]
        search: Option<SearchAudience>,
    },
    /// Find people by the start of their username (at least 2 characters;
    /// any case: it is lowercased).
    Search {
        /// The start of a username, with or without '@'.
        prefix: String,
        /// At most this many (server maximum applies).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Send a message to @USER (a direct conversation) or a conversation id.
    Send {
        /// @username or conversation id.
        #[arg(value_parser = conversation_ref)]
        to: String,
        /// The text, or '-' to read it from stdin.
        text: String,
    },
    /// Page a conversation's history (newest page by default).
    History {
        /// Conversation id, or @username for the direct conversation.
        #[arg(value_parser = conversation_ref)]
        conversation: String,
        /// Only messages before this seq.
        #[arg(long)]
        before: Option<u64>,
        /// Only messages after this seq.
        #[arg(long, conflicts_with = "before")]
        after: Option<u64>,
        /// Page size (server maximum applies).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// List conversations with unread counts, most recent first.
    Conversations,
    /// Mark a conversation read up to a seq (default: all).
    Read {
        /// Conversation id, or @username for the direct conversation.
        #[arg(value_parser = conversation_ref)]
        conversation: String,
        /// Up to this seq.
        seq: Option<u64>,
    },
    /// Fetch every event missed since this profile's cursor, and advance it.
    Sync,
    /// Group conversations.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Show users' presence (online, away, or offline with last-seen).
    Presence {
        /// @usernames.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Print events as they arrive until interrupted (reconnects and
    /// catches up by itself).
    Tail,
    /// Push notifications for this device while it is away: a webhook the
    /// server POSTs a signed JSON notice to (your own relay to FCM or APNs,
    /// or a UnifiedPush distributor such as ntfy), or off.
    #[command(subcommand)]
    Push(PushCommand),
    /// Print a shell completion script for confab (bash, zsh, fish,
    /// elvish, powershell), e.g. `confab completions bash >
    /// ~/.local/share/bash-completion/completions/confab`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `confab manpage | man -l -`.
    Manpage,
    /// Chat interactively in the terminal: conversation list, messages,
    /// typing and presence, live; /help inside lists the keys and
    /// commands (docs/CHAT.md describes them).
    Chat {
        /// No terminal: the same UI drawn off screen, typing what
        /// CONFAB_CONFORMANCE_CONVERSATION and CONFAB_CONFORMANCE_SEND say
        /// (for the client conformance suite); runs until killed.
        #[arg(long, hide = true)]
        headless: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Have the server POST notifications for this device to URL (https;
    /// http only if the operator allows it). Prints the HMAC secret the
    /// server signs them with (header Confab-Signature, spec §10.5): give
    /// it to whatever receives them. A new registration replaces the old
    /// one and gets a new secret. With UnifiedPush, URL is the endpoint
    /// your distributor gave the app (docs/OPERATING.md, "UnifiedPush").
    Webhook {
        /// Where the notices go.
        url: String,
    },
    /// Stop push notifications for this device.
    Off,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group (you become its owner).
    Create {
        /// The group's title.
        title: String,
        /// Initial members.
        users: Vec<String>,
    },
    /// Add members (owner or admin; all or none).
    Add {
        /// Group conversation id (see `confab conversations`).
        #[arg(value_parser = group_id)]
        conversation: u64,
        /// @usernames.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove a member (owner or admin).
    Remove {
        /// Group conversation id (see `confab conversations`).
        #[arg(value_parser = group_id)]
        conversation: u64,
        /// @username.
        user: String,
    },
    /// Leave a group.
    Leave {
        /// Group conversation id (see `confab conversations`).
        #[arg(value_parser = group_id)]
        conversation: u64,
    },
    /// Rename a group (owner or admin).
    Rename {
        /// Group conversation id (see `confab conversations`).
        #[arg(value_parser = group_id)]
        conversation: u64,
        /// The new title.
        title: String,
    },
    /// List a group's members and roles.
    Members {
        /// Group conversation id (see `confab conversations`).
        #[arg(value_parser = group_id)]
        conversation: u64,
    },
    /// Set a member's role (owner only): owner, admin or member.
    Role {
        /// Group conversation id (see `confab conversations`).
        #[arg(value_parser = group_id)]
        conversation: u64,
        /// @username.
        user: String,
        /// The new role.
        #[arg(value_enum, ignore_case = true)]
        role: Role,
    },
}

/// HOST:PORT, checked before anything connects (a usage error, exit
/// code 2); whether the host resolves is the connection's business.
fn server_address(s: &str) -> std::result::Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_string()),
        _ => Err("give HOST:PORT, e.g. 127.0.0.1:7443 (the HTTP port, 7080 by default, for --transport ws)".into()),
    }
}

/// A discovery URL, `http://HOST:PORT` (a usage error otherwise).
fn discover_url(s: &str) -> std::result::Result<String, String> {
    confab_client::discover::host_of(s).map(|_| s.to_string())
}

/// "@username" or a conversation id, checked before anything connects
/// (a usage error, exit code 2).
fn conversation_ref(s: &str) -> std::result::Result<String, String> {
    match s.strip_prefix('@') {
        Some(user) if !user.is_empty() => Ok(s.to_string()),
        _ if s.parse::<u64>().is_ok() => Ok(s.to_string()),
        _ => Err(format!("'{s}' is neither @username nor a conversation id (`confab conversations` lists them)")),
    }
}

/// A group's conversation id; `@user` names a direct conversation, which
/// is never a group, so it gets a sentence rather than a parse error.
fn group_id(s: &str) -> std::result::Result<u64, String> {
    if let Some(user) = s.strip_prefix('@') {
        return Err(format!(
            "@{user} names a direct conversation, not a group: give the group's conversation id (`confab conversations` lists them)"
        ));
    }
    s.parse().map_err(|_| format!("'{s}' is not a conversation id (`confab conversations` lists them)"))
}

/// How a command failed, for the exit code.
pub enum Failure {
    /// The server refused the request (exit code 1).
    Server(ClientError),
    /// What the user gave is not usable, found after clap's checks (e.g.
    /// two passwords that differ): exit code 2, as clap's own usage errors.
    Usage(String),
    /// A connection or local failure (exit code 3).
    Local(String),
    /// A failure no retry can fix, that a person has to decide about: the
    /// server's certificate is not the pinned one (exit code 3).
    Untrusted(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Server { .. } => Failure::Server(e),
            ClientError::CertificateChanged { .. } => Failure::Untrusted(e.to_string()),
            other => Failure::Local(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// What a command runs with: the parsed arguments, the profile directory
/// and the profile loaded from it.
pub struct Ctx {
    pub cli: Cli,
    pub dir: PathBuf,
    pub profile: Profile,
    /// The server of the last connection (discovery may pick another each
    /// time).
    pub connected: Option<String>,
    /// Notes for the user (a certificate trusted on first use) are kept
    /// here instead of printed when Some: `confab chat` shows them in its
    /// status bar rather than over its screen.
    pub held_notes: Option<Vec<String>>,
}

impl Ctx {
    pub fn server(&self) -> String {
        if let Some(s) = &self.cli.server {
            return s.clone();
        }
        let transport = self.transport();
        if let Some(stored) = &self.profile.server {
            let stored_for = self.profile.transport.unwrap_or(TransportKind::Quic);
            if let Some(s) = stored_server_for(stored, stored_for, transport) {
                return s;
            }
        }
        match std::env::var("CONFAB_SERVER") {
            Ok(s) if !s.is_empty() => s,
            _ => format!("127.0.0.1:{}", transport.default_port()),
        }
    }

    pub fn transport(&self) -> TransportKind {
        self.cli.transport.or(self.profile.transport).unwrap_or(TransportKind::Quic)
    }

    /// How to trust `server`: `--trust-cert`, else the fingerprint stored
    /// for it, else one that discovery named and the profile already trusts
    /// for another address (a cluster's nodes share a certificate), else
    /// first use.
    fn trust_for(&self, server: &str, named: Option<&str>) -> Result<Trust> {
        if let Some(pem) = &self.cli.trust_cert {
            let bytes = std::fs::read(pem).map_err(|e| Failure::Local(format!("{}: {e}", pem.display())))?;
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let cert = CertificateDer::pem_slice_iter(&bytes)
                .next()
                .ok_or_else(|| Failure::Local(format!("{}: no certificate", pem.display())))?
                .map_err(|e| Failure::Local(format!("{}: {e}", pem.display())))?;
            return Ok(Trust::Fingerprint(tls::fingerprint(&cert)));
        }
        if let Some(fp) = self.profile.known_servers.get(server) {
            return Ok(Trust::Fingerprint(tls::normalize_fingerprint(fp)));
        }
        let trusted = |fp: &str| {
            let fp = tls::normalize_fingerprint(fp);
            self.profile.known_servers.values().any(|k| tls::normalize_fingerprint(k) == fp)
        };
        Ok(match named {
            Some(fp) if trusted(fp) => Trust::Fingerprint(tls::normalize_fingerprint(fp)),
            _ => Trust::FirstUse,
        })
    }

    pub fn save(&self) -> Result<()> {
        self.profile.save(&self.dir).map_err(Failure::from)
    }

    pub async fn connect(&mut self) -> Result<Connection> {
        // --discover, else the remembered one unless --server names a node.
        let remembered = self.profile.discover.clone().filter(|_| self.cli.server.is_none());
        let discover = self.cli.discover.clone().or(remembered);
        let (server, named) = match &discover {
            Some(url) => {
                // The URL given first, then the nodes the last answer
                // listed (the first may be the node that went away).
                let mut urls = vec![url.clone()];
                urls.extend(self.profile.discover_nodes.iter().filter(|u| *u != url).cloned());
                match confab_client::discover::pick_first(&urls, self.transport()).await {
                    Ok(answer) => {
                        if answer.peers != self.profile.discover_nodes {
                            self.profile.discover_nodes = answer.peers;
                            if self.profile.token.is_some() {
                                self.save()?;
                            }
                        }
                        (answer.node.address, answer.node.fingerprint)
                    }
                    // No node answered: the node of the last connection, if
                    // this process made one, else the failure.
                    Err(e) => match self.connected.clone() {
                        Some(last) => (last, None),
                        None => return Err(Failure::Local(e)),
                    },
                }
            }
            None => (self.server(), None),
        };
        let trust = self.trust_for(&server, named.as_deref())?;
        self.connected = Some(server.clone());
        let mut opts = ConnectOptions::new(server.clone(), trust.clone());
        opts.transport = self.transport();
        let conn = Connection::connect(&opts).await?;
        // Plain ws:// has no certificate to pin.
        if trust == Trust::FirstUse && !conn.fingerprint().is_empty() {
            let note = format!(
                "trusting {server}'s certificate sha256:{} (first use; stored in the profile)",
                conn.fingerprint()
            );
            match &mut self.held_notes {
                Some(held) => held.push(note),
                None => eprintln!("note: {note}"),
            }
            self.profile.known_servers.insert(server, conn.fingerprint().to_string());
            self.save()?;
        }
        Ok(conn)
    }

    /// Connects and resumes this profile's device.
    pub async fn session(&mut self) -> Result<(Connection, pb::AuthOk)> {
        let Some(token) = self.profile.token.clone() else {
            return Err(Failure::Local("not logged in: run `confab login USER` (or `confab signup USER`)".into()));
        };
        let conn = self.connect().await?;
        match conn.resume(&token).await {
            Ok(ok) => Ok((conn, ok)),
            Err(e) if e.code() == Some(confab_protocol::ErrorCode::INVALID_TOKEN) => {
                self.profile.clear_login();
                self.save()?;
                Err(Failure::Server(e))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn out(&self, value: Value, text: impl FnOnce() -> String) {
        if self.cli.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }
}

/// The profile's server address for `transport`. QUIC and TCP share a
/// port, WebSocket has the HTTP one: an address stored for the other kind
/// (a profile made over QUIC, now used with --transport ws) keeps its host,
/// on this transport's default port.
fn stored_server_for(stored: &str, stored_for: TransportKind, transport: TransportKind) -> Option<String> {
    if stored_for.default_port() == transport.default_port() {
        return Some(stored.to_string());
    }
    let (host, _) = stored.rsplit_once(':')?;
    Some(format!("{host}:{}", transport.default_port()))
}

#[cfg(test)]
mod server_tests {
    use super::*;

    #[test]
    fn a_profile_made_over_quic_is_used_on_the_http_port_for_websocket() {
        let (q, t, w) = (TransportKind::Quic, TransportKind::Tcp, TransportKind::Ws);
        assert_eq!(stored_server_for("127.0.0.1:7443", q, t).as_deref(), Some("127.0.0.1:7443"));
        assert_eq!(stored_server_for("127.0.0.1:7443", q, w).as_deref(), Some("127.0.0.1:7080"));
        assert_eq!(stored_server_for("chat.example:7080", w, t).as_deref(), Some("chat.example:7443"));
        assert_eq!(stored_server_for("[::1]:9000", t, w).as_deref(), Some("[::1]:7080"));
        assert_eq!(stored_server_for("chat.example:9443", t, q).as_deref(), Some("chat.example:9443"));
    }
}

/// A group member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// What an admin may do, and set roles (owners are peers).
    Owner,
    /// Add members, remove members (not admins or owners), rename.
    Admin,
    /// Send and read.
    Member,
}

impl From<Role> for pb::MemberRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Owner => pb::MemberRole::Owner,
            Role::Admin => pb::MemberRole::Admin,
            Role::Member => pb::MemberRole::Member,
        }
    }
}

/// Who may open a direct conversation with you.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DmAudience {
    /// Anyone you have not blocked.
    Everyone,
    /// Nobody new (direct conversations that exist stay open).
    Nobody,
}

/// Who may put you in a group.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GroupAudience {
    /// Anyone you have not blocked.
    Everyone,
    /// People you have a direct conversation with.
    Contacts,
    /// Nobody.
    Nobody,
}

/// Who may find you by a prefix of your username.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SearchAudience {
    /// Anyone you have not blocked (and who has not blocked you).
    Everyone,
    /// Only people who type your whole username.
    Nobody,
}

impl From<SearchAudience> for pb::Audience {
    fn from(a: SearchAudience) -> Self {
        match a {
            SearchAudience::Everyone => pb::Audience::Everyone,
            SearchAudience::Nobody => pb::Audience::Nobody,
        }
    }
}

impl From<DmAudience> for pb::Audience {
    fn from(a: DmAudience) -> Self {
        match a {
            DmAudience::Everyone => pb::Audience::Everyone,
            DmAudience::Nobody => pb::Audience::Nobody,
        }
    }
}

impl From<GroupAudience> for pb::Audience {
    fn from(a: GroupAudience) -> Self {
        match a {
            GroupAudience::Everyone => pb::Audience::Everyone,
            GroupAudience::Contacts => pb::Audience::Contacts,
            GroupAudience::Nobody => pb::Audience::Nobody,
        }
    }
}
