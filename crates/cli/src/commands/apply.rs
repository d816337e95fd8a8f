//! `mayfly apply -f FILE.yaml`: send a whole configuration file to `POST /v1/apply`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use mayfly_domain::config_file::{self, ConfigFile, FileError};
use serde_json::{Value, json};

use crate::connection::ClientOptions;
use crate::output::{self, array_field, clean_text, field_text};

/// A configuration file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The file (or standard input) could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// A `${VAR}` placeholder or the YAML is invalid; the inner error names file, line,
    /// resource and field.
    #[error(transparent)]
    File(#[from] FileError),
    /// The request body could not be built.
    #[error("cannot encode the configuration as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// YAML configuration file; `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,

    /// Delete resources that the server has and the file does not list.
    #[arg(long)]
    pub prune: bool,

    /// Report what would change without changing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Output format: `table` prints one line per change, `json` the API's response.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ApplyOutput,

    #[command(flatten)]
    pub client: ClientOptions,
}

/// The `-o` option of `mayfly apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ApplyOutput {
    /// One line per change and a summary.
    #[default]
    Table,
    /// The API's JSON response.
    Json,
}

/// Runs `mayfly apply`.
pub async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let config = load_config_file(&args.file, |name| std::env::var(name).ok())?;
    let body = apply_body(&config, args.prune, args.dry_run)?;
    let client = args.client.admin_client()?;

    let response = client.post(&["v1", "apply"], Some(&body)).await?;

    if args.output == ApplyOutput::Json {
        output::print_json(&response)?;
        return Ok(ExitCode::SUCCESS);
    }
    output::print_text(&render_changes(&response, args.dry_run))?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the file (or standard input for `-`), expands `${VAR}` placeholders with `lookup` and
/// parses the result.
pub fn load_config_file(
    path: &std::path::Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ConfigFile, ApplyError> {
    let (file_name, text) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| ApplyError::Read {
                file: "standard input".to_string(),
                source,
            })?;
        ("<stdin>".to_string(), text)
    } else {
        let file_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ApplyError::Read {
            file: file_name.clone(),
            source,
        })?;
        (file_name, text)
    };

    Ok(config_file::parse_with_variables(
        &file_name, &text, lookup,
    )?)
}

/// Builds the body of `POST /v1/apply`.
pub fn apply_body(config: &ConfigFile, prune: bool, dry_run: bool) -> Result<Value, ApplyError> {
    Ok(json!({"config": serde_json::to_value(config)?, "prune": prune, "dry_run": dry_run}))
}

/// Renders one line per change (`created server_workload "payments-api"`), skipping unchanged
/// resources, and a closing count of each action.
pub fn render_changes(response: &Value, dry_run: bool) -> String {
    let mut counts = [0usize; 4];
    let mut text = String::new();

    for change in array_field(response, "changes") {
        let action = field_text(change, "action");
        let kind = clean_text(&field_text(change, "kind"));
        let name = clean_text(&field_text(change, "name"));
        let (index, past, future) = match action.as_str() {
            "create" => (0, "created", "would create"),
            "update" => (1, "updated", "would update"),
            "delete" => (2, "deleted", "would delete"),
            "unchanged" => {
                counts[3] += 1;
                continue;
            }
            // An action this CLI does not know yet is shown as the server names it.
            _ => {
                text.push_str(&format!("{} {kind} {name:?}\n", clean_text(&action)));
                continue;
            }
        };

        counts[index] += 1;
        let verb = if dry_run { future } else { past };
        text.push_str(&format!("{verb} {kind} {name:?}\n"));
    }

    text.push_str(&format!(
        "{} created, {} updated, {} deleted, {} unchanged",
        counts[0], counts[1], counts[2], counts[3]
    ));
    if dry_run {
        text.push_str(" (dry run: nothing was changed)");
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const FILE: &str = "server_workloads:\n  - name: api\n    host: ${API_HOST}\n    port: 443\n";

    fn write_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn placeholders_expand_from_lookup() {
        let file = write_file(FILE);

        let config = load_config_file(file.path(), |name| {
            (name == "API_HOST").then(|| "api.local".to_string())
        });

        let config = config.unwrap();
        assert_eq!(config.server_workloads[0].host, "api.local");
    }

    #[test]
    fn unset_variable_is_named() {
        let file = write_file(FILE);

        let error = load_config_file(file.path(), |_| None).err();

        let message = error.map(|error| error.to_string()).unwrap_or_default();
        assert!(message.contains("API_HOST"), "{message}");
        assert!(message.contains(":3:"), "{message}");
    }

    #[test]
    fn parse_error_names_file_and_line() {
        let file = write_file(
            "server_workloads:\n  - name: api\n    host: a.local\n    port: 443\n    colour: red\n",
        );

        let error = load_config_file(file.path(), |_| None).err();

        let message = error.map(|error| error.to_string()).unwrap_or_default();
        assert!(
            message.contains(&file.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("colour"), "{message}");
    }

    #[test]
    fn missing_file_names_path() {
        let error =
            load_config_file(std::path::Path::new("/nonexistent/mayfly.yaml"), |_| None).err();
        let message = error.map(|error| error.to_string()).unwrap_or_default();
        assert!(message.contains("/nonexistent/mayfly.yaml"), "{message}");
    }

    #[test]
    fn body_carries_flags_and_config() {
        let file = write_file("trust_providers:\n  - name: local\n    kind: unix\n");
        let config = load_config_file(file.path(), |_| None).unwrap();

        let body = apply_body(&config, true, false).unwrap();

        assert_eq!(body["prune"], json!(true));
        assert_eq!(body["dry_run"], json!(false));
        assert_eq!(
            body["config"]["trust_providers"][0],
            json!({"name": "local", "kind": "unix"})
        );
    }

    #[test]
    fn changes_render_lines_and_summary() {
        let response = json!({"changes": [
            {"action": "create", "kind": "server_workload", "name": "payments-api"},
            {"action": "update", "kind": "access_policy", "name": "a-to-b"},
            {"action": "unchanged", "kind": "trust_provider", "name": "local"},
            {"action": "delete", "kind": "client_workload", "name": "old"},
            {"action": "create", "kind": "credential_provider", "name": "jwt"},
        ]});

        let text = render_changes(&response, false);

        let expected = "created server_workload \"payments-api\"\n\
            updated access_policy \"a-to-b\"\n\
            deleted client_workload \"old\"\n\
            created credential_provider \"jwt\"\n\
            2 created, 1 updated, 1 deleted, 1 unchanged\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn dry_run_says_nothing_changed() {
        let response =
            json!({"changes": [{"action": "delete", "kind": "server_workload", "name": "x"}]});

        let text = render_changes(&response, true);

        assert!(
            text.starts_with("would delete server_workload \"x\"\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "0 created, 0 updated, 1 deleted, 0 unchanged (dry run: nothing was changed)\n"
            ),
            "{text}"
        );
    }
}
