//! `journal-server`: the reference journaling server and its operator commands. The binary
//! is [`main`]; everything else is wiring of the `mailjournal` crates.

mod archive_args;
mod archive_cmd;
mod config_cmd;
mod inspect;
mod serve;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Journal connector for Microsoft 365 / Exchange journal reports.
#[derive(Debug, Parser)]
#[command(name = "journal-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the journal connector (SMTP server).
    Serve(serve::ServeArgs),
    /// Service status per journal definition and queue details; works while the server runs.
    Status {
        #[command(flatten)]
        archive: archive_args::ArchiveArgs,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Items listed, newest first (0: all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Write the stored bytes of one item to standard output (exit 1 when the id is unknown).
    Get {
        #[command(flatten)]
        archive: archive_args::ArchiveArgs,
        /// The queue id from the 250 reply.
        id: String,
        /// The bytes exactly as the client transmitted them (after dot-unstuffing).
        #[arg(long)]
        as_received: bool,
    },
    /// One archived message as the archive knows it: every envelope recipient (Bcc included)
    /// of every report merged into it. Exit 1 when the id is unknown or not archived.
    Show {
        #[command(flatten)]
        archive: archive_args::ArchiveArgs,
        /// A queue id (a merged report's id shows the message it was merged into).
        id: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The archived messages an address sent or received (Bcc and expanded groups included),
    /// newest first.
    Find {
        #[command(flatten)]
        archive: archive_args::ArchiveArgs,
        #[command(flatten)]
        filters: archive_cmd::Filters,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
        /// At most this many (0: every one).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Archived forms as an mbox file or a directory of .eml files, oldest first.
    Export {
        #[command(flatten)]
        archive: archive_args::ArchiveArgs,
        #[command(flatten)]
        filters: archive_cmd::Filters,
        /// mbox (one file) or eml (a directory).
        #[arg(long, value_enum)]
        format: archive_cmd::ExportFormat,
        /// The mbox file or the directory to write.
        #[arg(long)]
        output: std::path::PathBuf,
        /// Put the envelope (sender, every recipient: Bcc included) before each message as
        /// X-Mailjournal-Envelope-* header fields. Off by default.
        #[arg(long)]
        with_envelope: bool,
    },
    /// Start an item over: any that is not settled (failed, or waiting); the running server
    /// picks it up within seconds, or the next start does. Exit 1 when the id is unknown,
    /// settled, or held for a journal definition that is not configured.
    Retry {
        #[command(flatten)]
        archive: archive_args::ArchiveArgs,
        /// The queue id.
        id: String,
    },
    /// Check a configuration file: prints every error and warning with its path.
    /// Exit 0 when valid, 1 when not, 2 when it cannot be read or parsed.
    CheckConfig {
        /// The TOML (or, by extension, JSON) configuration file.
        file: std::path::PathBuf,
    },
    /// Print a starter configuration with the definition provisioned for a primary domain.
    Init {
        /// The primary mail domain, e.g. contoso.com.
        #[arg(long)]
        domain: String,
    },
    /// Parse journal items and print one JSON object per file (exit 2 if a file is unreadable).
    Inspect {
        /// Read every file as standard EML (the definition's journal type "eml").
        #[arg(long)]
        eml: bool,
        /// Report the decrypted copy as the original when present.
        #[arg(long)]
        prefer_clear_text_version: bool,
        /// The journal items.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Print the Exchange Online PowerShell that sets up Microsoft 365 journaling.
    #[command(name = "m365-plan")]
    M365Plan(config_cmd::PlanArgs),
}

/// Runs `command` on the archive `args` name; exit 2 when it cannot be named.
fn with_source(
    args: &archive_args::ArchiveArgs,
    command: impl FnOnce(&mailjournal::status::ArchiveSource) -> ExitCode,
) -> ExitCode {
    match args.source() {
        Ok(source) => command(&source),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Status {
            archive,
            json,
            limit,
        } => with_source(&archive, |s| status::status(s, json, limit)),
        Command::Get {
            archive,
            id,
            as_received,
        } => with_source(&archive, |s| status::get(s, &id, as_received)),
        Command::Retry { archive, id } => with_source(&archive, |s| status::retry(s, &id)),
        Command::Show { archive, id, json } => {
            with_source(&archive, |s| archive_cmd::show(s, &id, json))
        }
        Command::Find {
            archive,
            filters,
            json,
            limit,
        } => with_source(&archive, |s| archive_cmd::find(s, &filters, json, limit)),
        Command::Export {
            archive,
            filters,
            format,
            output,
            with_envelope,
        } => with_source(&archive, |s| {
            archive_cmd::export(s, &filters, format, &output, with_envelope)
        }),
        Command::CheckConfig { file } => config_cmd::check_config(&file),
        Command::Init { domain } => config_cmd::init(&domain),
        Command::M365Plan(args) => config_cmd::m365_plan(&args),
        Command::Inspect {
            eml,
            prefer_clear_text_version,
            files,
        } => {
            let options = mailjournal::envelope::ParseOptions {
                journal_type: if eml {
                    mailjournal::envelope::Format::Eml
                } else {
                    mailjournal::envelope::Format::Envelope
                },
                prefer_clear_text_version,
                remove_journal_headers: false,
            };
            inspect::inspect(&files, &options)
        }
    }
}
