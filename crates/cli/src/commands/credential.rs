//! `mayfly credential get`: fetch a credential for the calling process, attested either by the
//! server's workload socket or by an OIDC token read from a file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::api::{ApiError, Problem, unix_socket};
use crate::connection::ServerOptions;
use crate::output::{self, clean_text};
use crate::secret::Secret;
use crate::target::{Target, parse_target};

/// Exit code when the server denies the credential request.
pub const EXIT_DENIED: u8 = 3;

/// A failure to obtain a credential, including a denial by the server.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The server denied the request (401 or 403). Only the failing step and the request id are
    /// disclosed to the caller; the audit log has the details.
    #[error(
        "denied at step {step} (request id {request_id}); an admin finds the reason with `mayfly audit list --outcome failure`"
    )]
    Denied { step: String, request_id: String },
    /// The OIDC token file could not be read.
    #[error("cannot read the OIDC token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The OIDC token file is empty.
    #[error("the OIDC token file {path} is empty")]
    EmptyTokenFile { path: PathBuf },
    /// The OIDC token has characters that an HTTP header cannot carry.
    #[error("the OIDC token in {path} contains whitespace or control characters")]
    InvalidTokenFile { path: PathBuf },
    /// The reply lacks the field the output format needs.
    #[error("the server's reply has no {field}")]
    MissingField { field: &'static str },
    /// The credential is presented another way than the output format prints.
    #[error("this credential is presented as {presented}: use -o {output} or -o json")]
    OtherPresentation {
        presented: &'static str,
        output: &'static str,
    },
    /// The reply names an environment variable that a shell cannot set.
    #[error("the server's reply names an invalid environment variable {name:?}")]
    InvalidVariable { name: String },
}

#[derive(Debug, clap::Args)]
pub struct CredentialArgs {
    #[command(subcommand)]
    pub command: CredentialCommand,

    #[command(flatten)]
    pub server: ServerOptions,
}

#[derive(Debug, clap::Subcommand)]
pub enum CredentialCommand {
    /// Fetch a credential for a server workload and print it.
    Get(GetArgs),
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Server workload name.
    #[arg(required_unless_present = "target", conflicts_with = "target")]
    pub server_workload: Option<String>,

    /// Address the server workload by HOST:PORT instead of by name.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_target)]
    pub target: Option<Target>,

    /// Workload socket of the server [default: <data-dir>/workload.sock].
    #[arg(long, env = "MAYFLY_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// File holding an OIDC token to present as evidence over HTTP, instead of using the socket.
    #[arg(long, env = "MAYFLY_OIDC_TOKEN_FILE", value_name = "FILE")]
    pub oidc_token_file: Option<PathBuf>,

    /// Output: `token` prints the bare token, `header` prints how to present it (`Name: value`
    /// lines), `env` prints `export NAME='value'` lines for credentials presented as environment
    /// variables (AWS), `json` prints the whole reply.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: CredentialOutput,
}

/// The `-o` option of `mayfly credential get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CredentialOutput {
    #[default]
    Token,
    Header,
    Env,
    Json,
}

/// Runs `mayfly credential get`.
pub async fn run(args: CredentialArgs) -> anyhow::Result<ExitCode> {
    let CredentialCommand::Get(get) = &args.command;
    let body = request_body(get.server_workload.as_deref(), get.target.as_ref());

    let result = match &get.oidc_token_file {
        Some(path) => {
            let token = read_token_file(path)?;
            let client = args.server.client_with_token(Some(token))?;
            client.post(&["v1", "credentials"], Some(&body)).await
        }
        None => {
            let socket = get
                .socket
                .clone()
                .unwrap_or_else(|| args.server.data_dir.join("workload.sock"));
            unix_socket::post_json(&socket, "/v1/credentials", &body)
                .await?
                .into_json()
        }
    };

    let reply = result.map_err(denial_error)?;
    output::print_text(&render_credential(&reply, get.output)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Builds `{"server_workload": NAME}` or `{"target": {"host", "port"}}`.
pub fn request_body(server_workload: Option<&str>, target: Option<&Target>) -> Value {
    match (server_workload, target) {
        (_, Some(target)) => json!({"target": {"host": target.host, "port": target.port}}),
        (name, None) => json!({"server_workload": name.unwrap_or_default()}),
    }
}

/// Turns a 401 or 403 problem into [`CredentialError::Denied`], and leaves other errors as they are.
pub fn denial_error(error: ApiError) -> anyhow::Error {
    match error {
        ApiError::Problem {
            status: 401 | 403,
            problem,
        } => {
            let Problem {
                step, request_id, ..
            } = *problem;
            let unknown = || "unknown".to_string();
            CredentialError::Denied {
                step: clean_text(&step.unwrap_or_else(unknown)),
                request_id: clean_text(&request_id.unwrap_or_else(unknown)),
            }
            .into()
        }
        other => other.into(),
    }
}

/// Renders the reply in the chosen output.
pub fn render_credential(
    reply: &Value,
    format: CredentialOutput,
) -> Result<String, CredentialError> {
    match format {
        CredentialOutput::Json => {
            Ok(serde_json::to_string_pretty(reply).unwrap_or_else(|_| reply.to_string()))
        }
        CredentialOutput::Token => {
            let token = reply.get("token").and_then(Value::as_str);
            token
                .map(clean_text)
                .ok_or(CredentialError::MissingField { field: "token" })
        }
        CredentialOutput::Header => {
            let presentation = reply
                .get("presentation")
                .ok_or(CredentialError::MissingField {
                    field: "presentation",
                })?;
            let mut lines = Vec::new();
            if let Some(headers) = presentation.get("headers").and_then(Value::as_object) {
                for (name, value) in headers {
                    lines.push(format!(
                        "{}: {}",
                        clean_text(name),
                        clean_text(value.as_str().unwrap_or_default())
                    ));
                }
            }
            if let Some(query) = presentation.get("query").and_then(Value::as_object) {
                for (name, value) in query {
                    lines.push(format!(
                        "{}={}",
                        clean_text(name),
                        clean_text(value.as_str().unwrap_or_default())
                    ));
                }
            }
            if lines.is_empty() {
                if presentation.get("environment").is_some() {
                    return Err(CredentialError::OtherPresentation {
                        presented: "environment variables",
                        output: "env",
                    });
                }
                return Err(CredentialError::MissingField {
                    field: "presentation headers or query",
                });
            }
            Ok(lines.join("\n"))
        }
        CredentialOutput::Env => {
            let presentation = reply
                .get("presentation")
                .ok_or(CredentialError::MissingField {
                    field: "presentation",
                })?;
            let Some(variables) = presentation.get("environment").and_then(Value::as_object) else {
                if presentation.get("headers").is_some() || presentation.get("query").is_some() {
                    return Err(CredentialError::OtherPresentation {
                        presented: "headers or query parameters",
                        output: "header",
                    });
                }
                return Err(CredentialError::MissingField {
                    field: "presentation environment",
                });
            };
            let mut lines = Vec::new();
            for (name, value) in variables {
                if !is_variable_name(name) {
                    return Err(CredentialError::InvalidVariable {
                        name: clean_text(name),
                    });
                }
                let value = clean_text(value.as_str().unwrap_or_default());
                lines.push(format!("export {name}='{}'", value.replace('\'', "'\\''")));
            }
            Ok(lines.join("\n"))
        }
    }
}

/// Tells whether `name` is a variable name that every POSIX shell accepts.
fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

fn read_token_file(path: &Path) -> Result<Secret, CredentialError> {
    let contents = std::fs::read_to_string(path)
        .map(Secret::new)
        .map_err(|source| CredentialError::TokenFile {
            path: path.to_path_buf(),
            source,
        })?;
    let token = contents.expose().trim();
    if token.is_empty() {
        return Err(CredentialError::EmptyTokenFile {
            path: path.to_path_buf(),
        });
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(CredentialError::InvalidTokenFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(token.to_string()))
}

#[cfg(test)]
mod tests;
