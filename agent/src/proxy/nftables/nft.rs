//! Runs the `nft` tool: JSON documents in (`nft -j -f -`, one transaction each), the
//! table's listing out.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::ruleset::TABLE;

/// Why an nft command failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started.
    #[error(
        "cannot run {program}: {source} (the nftables proxy needs the `nft` tool, Debian \
         package nftables, and CAP_NET_ADMIN; or run with --proxy-mode userspace or none)"
    )]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `nft` refused the commands.
    #[error("{program} {args} failed: {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its arguments.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `nft` printed something that is not JSON.
    #[error("nft printed invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// How to run `nft`: the program and the arguments before nft's own (e.g.
/// `nsenter --net=/var/run/netns/X nft` in tests).
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
    prefix: Vec<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft {
            program: PathBuf::from("nft"),
            prefix: Vec::new(),
        }
    }
}

impl Nft {
    /// `program` with `prefix` arguments before nft's own: `Nft::with_prefix("nsenter",
    /// ["--net=/var/run/netns/x", "nft"])` programs the namespace `x`.
    pub fn with_prefix(program: impl Into<PathBuf>, prefix: Vec<String>) -> Nft {
        Nft {
            program: program.into(),
            prefix,
        }
    }

    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, NftError> {
        let program = self.program.display().to_string();
        let mut child = Command::new(&self.program)
            .args(&self.prefix)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| NftError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input)
                .await
                .map_err(|source| NftError::Spawn {
                    program: program.clone(),
                    source,
                })?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|source| NftError::Spawn {
                program: program.clone(),
                source,
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(NftError::Failed {
                program,
                args: self
                    .prefix
                    .iter()
                    .map(String::as_str)
                    .chain(args.iter().copied())
                    .collect::<Vec<_>>()
                    .join(" "),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// Applies `document` (nft JSON commands) as one transaction: all or nothing.
    pub(crate) async fn apply(&self, document: &Value) -> Result<(), NftError> {
        let input = serde_json::to_vec(document)?;
        self.run(&["-j", "-f", "-"], Some(&input)).await.map(drop)
    }

    /// `nft -j list table ip wasmkube`; `None` when there is no such table.
    pub async fn list_table(&self) -> Result<Option<Value>, NftError> {
        match self.run(&["-j", "list", "table", "ip", TABLE], None).await {
            Ok(out) => Ok(Some(serde_json::from_str(&out)?)),
            Err(NftError::Failed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the table and everything in it (`--cleanup`); no table is fine.
    pub async fn delete_table(&self) -> Result<bool, NftError> {
        match self.run(&["delete", "table", "ip", TABLE], None).await {
            Ok(_) => Ok(true),
            Err(NftError::Failed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

impl Nft {
    /// Whether nftables can be programmed here: `nft list tables` runs and may read the
    /// kernel's tables (it needs CAP_NET_ADMIN). Blocking; for start-up decisions.
    pub fn probe(&self) -> Result<(), NftError> {
        let program = self.program.display().to_string();
        let output = std::process::Command::new(&self.program)
            .args(&self.prefix)
            .args(["list", "tables"])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| NftError::Spawn {
                program: program.clone(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(NftError::Failed {
                program,
                args: "list tables".into(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }
}
