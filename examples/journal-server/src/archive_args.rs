//! Where the read commands (`status`, `get`, `show`, `find`, `export`) find the archive: a
//! data directory (the embedded archive), or a configuration file (the archive it names:
//! the shared backend, from any node or an admin host).

use std::path::PathBuf;

use mailjournal::definition::ArchiveBackend;
use mailjournal::status::ArchiveSource;

/// `--data-dir DIR` or `--config FILE`.
#[derive(Debug, clap::Args)]
pub(crate) struct ArchiveArgs {
    /// The server's data directory (its embedded archive, spool and health file).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    /// The server's configuration file: its `[archive]` (the shared backend, credentials
    /// from the environment as for `serve`) and its data directory.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ArchiveArgs {
    /// The archive to read, or why it cannot be.
    pub(crate) fn source(&self) -> Result<ArchiveSource, String> {
        let (Some(path), None) = (&self.config, &self.data_dir) else {
            return Ok(ArchiveSource::embedded(
                self.data_dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new(".")),
            ));
        };
        let config = crate::config_cmd::load(path).map_err(|e| e.to_string())?;
        let data_dir = config.server.data_dir.clone();
        match config.archive.as_ref() {
            Some(a) if a.backend == ArchiveBackend::Shared => {
                let options = crate::serve::shared_options(a).map_err(|e| e.to_string())?;
                Ok(ArchiveSource::shared(options, &data_dir))
            }
            _ => Ok(ArchiveSource::embedded(&data_dir)),
        }
    }
}
