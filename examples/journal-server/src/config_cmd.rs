//! `check-config`, `init` and `m365-plan`: thin wrappers over `mailjournal::definition`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mailjournal::definition::{Config, ConfigError, m365, provision, region};

/// Arguments of `m365-plan`.
#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// The description of the journal definition to plan for (default: the first enabled one).
    #[arg(long)]
    journal: Option<String>,
    /// The region whose journal smart hosts route the journal domain (eu, de, us, usb, ca, za,
    /// au, je, uspcom).
    #[arg(
        long,
        conflicts_with = "smart_host",
        required_unless_present = "smart_host"
    )]
    region: Option<String>,
    /// Explicit smart hosts instead of a region.
    #[arg(long, num_args = 1..)]
    smart_host: Vec<String>,
    /// The undeliverable journal reports address (alternate journaling recipient).
    #[arg(long)]
    ndr_to: String,
}

/// Why a configuration file could not be loaded (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML (or JSON) of the configuration's shape; the error carries line and column.
    #[error("{}:{source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

/// Reads a configuration file: TOML, or JSON when the name ends in `.json`.
pub(crate) fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        Config::from_json(&text)
    } else {
        Config::from_toml(&text)
    };
    parsed.map_err(|source| LoadError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn check_config(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let report = config.validate();
    print!("{report}");
    let (mut errors, warnings) = (report.errors().count(), report.warnings().count());
    // The files themselves, as serve (and a SIGHUP reload) would read them: run this before
    // `systemctl reload` after a renewal.
    if let (Some(certificate), Some(key)) = (
        &config.server.tls_certificate,
        &config.server.tls_private_key,
    ) && let Err(e) = crate::serve::check_tls_files(certificate, key)
    {
        println!(
            "error: server.tls_certificate = {:?}: {e} (hint: a PEM chain, leaf first, and the PEM private key of that leaf)",
            certificate.display().to_string()
        );
        errors += 1;
    }
    if let Some(path) = config.admin.as_ref().and_then(|a| a.token_file.as_ref())
        && let Err(e) = crate::serve::read_token(path)
    {
        println!("error: admin.token_file: {e}");
        errors += 1;
    }
    println!(
        "{}: {errors} error(s), {warnings} warning(s)",
        path.display()
    );
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub(crate) fn init(domain: &str) -> ExitCode {
    match provision::starter_config(domain).map(|c| c.to_toml()) {
        Ok(Ok(text)) => {
            println!("# Starter configuration for {domain} (journal-server init).");
            println!(
                "# Add the sending servers' ranges to additional_source_ip_ranges, and TLS files."
            );
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("cannot write the configuration: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{domain:?} is not a usable primary domain: {e}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn m365_plan(args: &PlanArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let report = config.validate();
    if report.has_errors() {
        eprint!("{report}");
        eprintln!("fix the configuration first (journal-server check-config)");
        return ExitCode::from(1);
    }
    let journal = match &args.journal {
        Some(name) => config.journal.iter().find(|j| &j.description == name),
        None => config.journal.iter().find(|j| !j.disabled),
    };
    let Some(journal) = journal else {
        eprintln!("no such journal definition in {}", args.config.display());
        return ExitCode::from(1);
    };
    let hosts: Vec<String> = match &args.region {
        Some(name) => match region::lookup(name) {
            Some(r) => r.smart_hosts.iter().map(|h| h.to_string()).collect(),
            None => {
                let codes: Vec<_> = region::REGIONS.iter().map(|r| r.code).collect();
                eprintln!("unknown region {name:?}; one of: {}", codes.join(", "));
                return ExitCode::from(2);
            }
        },
        None => args.smart_host.clone(),
    };
    match m365::plan(&config, journal, &hosts, &args.ndr_to) {
        Ok(plan) => {
            print!("{plan}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("refusing to plan: {e}");
            ExitCode::from(1)
        }
    }
}
