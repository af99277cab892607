//! `confab-conformance`: runs the conformance suites (see the library
//! docs and spec/CONFORMANCE.md).
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use confab_conformance::client::{self, ClientOptions};
use confab_conformance::report::Report;
use confab_conformance::server::{self, Options, Settings};
use confab_conformance::wire::{Target, Transport, Trust};

#[derive(Parser)]
#[command(
    name = "confab-conformance",
    version,
    about = "Conformance suites for the Confab protocol (spec/PROTOCOL.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Tcp,
    Quic,
    Ws,
}

#[derive(Subcommand)]
enum Command {
    /// Black-box scenarios against a running server. Exit status 0 when
    /// nothing failed (skips allowed), 1 when a check failed, 2 when the
    /// suite could not run (unreachable server, bad options).
    ///
    /// The suite signs up four users named cf<random><a-d> (a server that
    /// limits signups per address allows a few runs per hour; use a fresh
    /// server or raise the limit) and leaves their conversations behind.
    Server {
        /// The server: host:port of its QUIC or TCP+TLS listener, or for
        /// --transport ws its HTTP listener (host:port, or a ws:// or
        /// wss:// URL).
        #[arg(long)]
        addr: String,
        /// The binding to test (spec §2).
        #[arg(long, value_enum, default_value = "tcp")]
        transport: TransportArg,
        /// Trust only the certificate with this SHA-256 fingerprint (as
        /// confabd prints it at start, "sha256:…").
        #[arg(long, conflicts_with = "ca")]
        fingerprint: Option<String>,
        /// Trust certificates that chain to the roots in this PEM file.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The TLS server name to verify (default: the host of --addr).
        #[arg(long)]
        server_name: Option<String>,
        /// Also write the results as JUnit XML to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Run only the checks whose id contains one of these (comma
        /// separated, e.g. "send.,vector.").
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The server's presence grace period (not advertised): enables
        /// presence.offline.
        #[arg(long)]
        presence_grace_ms: Option<u64>,
        /// The server's outbound queue in bytes (not advertised): enables
        /// slow_consumer.cut_off, which sends that much and more.
        #[arg(long)]
        outbound_queue_bytes: Option<u64>,
        /// The server's handshake deadline in ms (default 10,000 in
        /// confabd): enables handshake.timeout.
        #[arg(long)]
        handshake_timeout_ms: Option<u64>,
        /// The server's authentication deadline in ms (default 30,000 in
        /// confabd): enables auth.timeout.
        #[arg(long)]
        auth_timeout_ms: Option<u64>,
        /// A shell command that shuts the server down gracefully (e.g.
        /// "kill -TERM 1234"): enables shutdown.goaway, run last.
        #[arg(long, value_name = "CMD")]
        shutdown_command: Option<String>,
        /// Also run heartbeat.timeout, which waits 2.5 heartbeat intervals
        /// (50 s at the default interval; it runs anyway when the interval
        /// is 2 s or less).
        #[arg(long)]
        slow: bool,
        /// List the checks and exit.
        #[arg(long)]
        list: bool,
    },
    /// A scripted server that grades a client. For each scenario it starts
    /// the client through --driver (with CONFAB_CONFORMANCE_* variables
    /// that say where to connect, as whom, and what to send; see
    /// spec/CONFORMANCE.md), does one thing to it and checks what it did.
    /// Exit status as for `server`.
    Client {
        /// Where the scripted server listens (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// The binding the client speaks: tcp (TCP+TLS, a fresh self-signed
        /// certificate whose fingerprint the driver gets) or ws (plain
        /// WebSocket, ws://HOST:PORT/v1/ws).
        #[arg(long, value_enum, default_value = "tcp")]
        transport: TransportArg,
        /// Also write the results as JUnit XML to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Run only the scenarios whose id contains one of these (comma
        /// separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Show the driver's output and every frame the client sent.
        #[arg(long)]
        verbose: bool,
        /// The driver: the command (and its arguments) that starts the
        /// client under test, after `--`.
        #[arg(last = true, required = true)]
        driver: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server {
            addr,
            transport,
            fingerprint,
            ca,
            server_name,
            junit,
            only,
            presence_grace_ms,
            outbound_queue_bytes,
            handshake_timeout_ms,
            auth_timeout_ms,
            slow,
            shutdown_command,
            list,
        } => {
            if list {
                for s in server::all() {
                    println!("{:<34} {:<12} {}", s.id, s.section, s.title);
                }
                for (name, _) in confab_conformance::vectors::INVALID {
                    println!("vector.{name:<27} spec/vectors/invalid/{name}.json");
                }
                return ExitCode::SUCCESS;
            }
            let transport = match transport {
                TransportArg::Tcp => Transport::Tcp,
                TransportArg::Quic => Transport::Quic,
                TransportArg::Ws => Transport::Ws,
            };
            let trust = match (fingerprint, ca) {
                (Some(f), _) => Trust::Fingerprint(f),
                (None, Some(ca)) => Trust::Ca(ca),
                (None, None) => {
                    eprintln!(
                        "confab-conformance: say how to trust the server: --fingerprint sha256:… (confabd prints it at start) or --ca FILE"
                    );
                    return ExitCode::from(2);
                }
            };
            let target = match Target::new(&addr, transport, &trust, server_name.as_deref()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("confab-conformance: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = Options {
                target,
                settings: Settings {
                    presence_grace_ms,
                    outbound_queue_bytes,
                    handshake_timeout_ms,
                    auth_timeout_ms,
                    slow,
                    shutdown_command,
                },
                only,
            };
            let mut report = Report::new(format!("confab-conformance server {}", transport.name()), true);
            if let Err(e) = server::run(&opts, &mut report).await {
                eprintln!("confab-conformance: cannot run the suite against {addr}: {e}");
                return ExitCode::from(2);
            }
            finish(&report, junit.as_deref())
        }
        Command::Client { listen, transport, junit, only, verbose, driver } => {
            let transport = match transport {
                TransportArg::Tcp => Transport::Tcp,
                TransportArg::Ws => Transport::Ws,
                TransportArg::Quic => {
                    eprintln!(
                        "confab-conformance: the client suite speaks tcp and ws (grade a QUIC client on its TCP+TLS path)"
                    );
                    return ExitCode::from(2);
                }
            };
            let opts = ClientOptions { listen, transport, driver, only, verbose };
            let mut report = Report::new(format!("confab-conformance client {}", transport.name()), true);
            if let Err(e) = client::run(&opts, &mut report).await {
                eprintln!("confab-conformance: {e}");
                return ExitCode::from(2);
            }
            finish(&report, junit.as_deref())
        }
    }
}

/// Prints the summary, writes the JUnit file, and says how it went.
fn finish(report: &Report, junit: Option<&std::path::Path>) -> ExitCode {
    println!("{}", report.summary());
    if let Some(path) = junit
        && let Err(e) = std::fs::write(path, report.junit())
    {
        eprintln!("confab-conformance: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if report.counts().1 > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
