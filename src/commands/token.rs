//! `wasmkube server token create|list|delete`: bootstrap tokens for joining nodes, as
//! `kubeadm token` manages them (Secrets of type `bootstrap.kubernetes.io/token` in
//! `kube-system`, written through the API with the server's admin kubeconfig).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use wasmkube_apiserver::bootstrap_token::{
    self, BootstrapToken, DEFAULT_USAGES, NAMESPACE, TokenInfo,
};

use super::cluster::client_from_kubeconfig;

/// What to do with bootstrap tokens.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum TokenAction {
    /// Create a bootstrap token and print the join token for `wasmkube agent --token`.
    Create(CreateArgs),
    /// List the bootstrap tokens.
    List,
    /// Delete bootstrap tokens (by id or whole token); nodes that joined keep working.
    Delete {
        /// Token ids (`abcdef`) or tokens (`abcdef.0123456789abcdef`).
        #[arg(required = true, value_name = "TOKEN_ID")]
        tokens: Vec<String>,
    },
}

/// `token create` flags.
#[derive(clap::Args, Debug)]
pub(crate) struct CreateArgs {
    /// How long the token is valid (e.g. 24h, 30m); 0 = it never expires.
    #[arg(long, default_value = "24h", value_parser = super::cluster::parse_duration)]
    ttl: Duration,
    /// A description of what the token is for.
    #[arg(long, default_value = "")]
    description: String,
    /// Extra groups the token authenticates in (each system:bootstrappers:...).
    #[arg(long = "groups", value_delimiter = ',', value_name = "GROUP")]
    groups: Vec<String>,
    /// What the token may be used for: authentication, signing.
    #[arg(long, value_delimiter = ',', value_name = "USAGE", default_values_t = DEFAULT_USAGES.iter().map(|u| u.to_string()))]
    usages: Vec<String>,
}

/// Runs a token action against the server whose data directory is `data_dir`.
pub(crate) async fn execute(action: TokenAction, data_dir: &Path) -> anyhow::Result<()> {
    let kubeconfig = wasmkube_apiserver::pki::kubeconfig_path(data_dir);
    if !kubeconfig.exists() {
        bail!(
            "no admin kubeconfig at {}: start the server once with --data-dir {}",
            kubeconfig.display(),
            data_dir.display()
        );
    }
    let client = client_from_kubeconfig(&kubeconfig).await?;
    let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
    match action {
        TokenAction::Create(args) => create(&secrets, &args, data_dir, &kubeconfig).await,
        TokenAction::List => list(&secrets).await,
        TokenAction::Delete { tokens } => delete(&secrets, &tokens).await,
    }
}

async fn create(
    secrets: &Api<Secret>,
    args: &CreateArgs,
    data_dir: &Path,
    kubeconfig: &Path,
) -> anyhow::Result<()> {
    for group in &args.groups {
        if !bootstrap_token::is_extra_group(group) {
            bail!("--groups {group:?}: extra groups must look like system:bootstrappers:<name>");
        }
    }
    for usage in &args.usages {
        if !matches!(usage.as_str(), "authentication" | "signing") {
            bail!("--usages {usage:?}: a bootstrap token is used for authentication or signing");
        }
    }
    let ca_path = data_dir.join("pki").join("ca.crt");
    let ca_pem = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("reading the cluster CA {}", ca_path.display()))?;
    let token = BootstrapToken::generate();
    let expiration = if args.ttl.is_zero() {
        None
    } else {
        let ttl = jiff::SignedDuration::try_from(args.ttl).context("--ttl is too long")?;
        Some(
            jiff::Timestamp::now()
                .checked_add(ttl)
                .context("--ttl is too long")?,
        )
    };
    let object = bootstrap_token::secret_for(
        &token,
        expiration,
        &args.description,
        &args.usages,
        &args.groups,
    );
    let secret: Secret = serde_json::from_value(object).context("building the token Secret")?;
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the bootstrap token")?;
    let join = wasmkube_apiserver::join::join_token(&ca_pem, &token);
    println!("{join}");
    let server = server_url(kubeconfig).unwrap_or_else(|| "https://SERVER:6443".to_string());
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nJoin a node with:\n\n    wasmkube agent --server {server} --token {join}\n"
    );
    let _ = match expiration {
        Some(at) => writeln!(
            err,
            "The token expires at {} (delete it earlier with `wasmkube server token delete {}`).",
            at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            token.id
        ),
        None => writeln!(
            err,
            "The token never expires; delete it with `wasmkube server token delete {}`.",
            token.id
        ),
    };
    Ok(())
}

/// The apiserver URL of a kubeconfig's first cluster.
fn server_url(kubeconfig: &Path) -> Option<String> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).ok()?;
    config.clusters.first()?.cluster.as_ref()?.server.clone()
}

async fn list(secrets: &Api<Secret>) -> anyhow::Result<()> {
    let listed = secrets
        .list(&ListParams::default().fields(&format!("type={}", bootstrap_token::SECRET_TYPE)))
        .await
        .context("listing bootstrap tokens")?;
    let now = jiff::Timestamp::now();
    let mut rows = vec![[
        "TOKEN".to_string(),
        "TTL".to_string(),
        "EXPIRES".to_string(),
        "USAGES".to_string(),
        "DESCRIPTION".to_string(),
        "EXTRA GROUPS".to_string(),
    ]];
    for secret in listed.items {
        let Ok(value) = serde_json::to_value(&secret) else {
            continue;
        };
        let Some(info) = TokenInfo::from_secret(&value) else {
            continue;
        };
        rows.push(row(&info, now));
    }
    print!("{}", table(&rows));
    Ok(())
}

/// One `token list` row, as kubeadm prints it.
fn row(info: &TokenInfo, now: jiff::Timestamp) -> [String; 6] {
    let (ttl, expires) = match (info.expiration, &info.bad_expiration) {
        (_, Some(bad)) => ("<invalid>".to_string(), bad.clone()),
        (None, None) => ("<forever>".to_string(), "<never>".to_string()),
        (Some(at), None) => {
            let left = at.duration_since(now);
            let ttl = if left.is_negative() {
                "<invalid>".to_string()
            } else {
                wasmkube_apiserver::table::short_human_duration(left)
            };
            (ttl, at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        }
    };
    let or_none = |s: String| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s
        }
    };
    [
        info.token.to_string(),
        ttl,
        expires,
        info.usages.join(","),
        or_none(info.description.clone()),
        or_none(info.extra_groups.join(",")),
    ]
}

/// Columns padded to their widest cell plus three spaces (kubeadm's tabwriter).
fn table(rows: &[[String; 6]]) -> String {
    let mut widths = [0usize; 6];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}", width = widths[i] + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

async fn delete(secrets: &Api<Secret>, tokens: &[String]) -> anyhow::Result<()> {
    for given in tokens {
        let id = match BootstrapToken::parse(given) {
            Some(token) => token.id,
            None if BootstrapToken::is_id(given) => given.clone(),
            None => bail!(
                "{given:?} is neither a token id ([a-z0-9]{{6}}) nor a token ([a-z0-9]{{6}}.[a-z0-9]{{16}})"
            ),
        };
        let name = format!("{}{id}", bootstrap_token::SECRET_PREFIX);
        match secrets.delete(&name, &DeleteParams::default()).await {
            Ok(_) => println!("bootstrap token {id:?} deleted"),
            Err(e) if wasmkube_client::status::is_not_found(&e) => {
                bail!("bootstrap token {id:?} not found")
            }
            Err(e) => return Err(e).with_context(|| format!("deleting bootstrap token {id:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_list_rows_read_like_kubeadms() {
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let info = TokenInfo {
            token: BootstrapToken::parse("abcdef.0123456789abcdef").unwrap(),
            description: String::new(),
            expiration: Some("2025-01-01T23:00:00Z".parse().unwrap()),
            bad_expiration: None,
            usages: vec!["authentication".into(), "signing".into()],
            extra_groups: vec![],
        };
        let rows = [
            [
                "TOKEN",
                "TTL",
                "EXPIRES",
                "USAGES",
                "DESCRIPTION",
                "EXTRA GROUPS",
            ]
            .map(String::from),
            row(&info, now),
        ];
        assert_eq!(
            table(&rows),
            "TOKEN                     TTL   EXPIRES                USAGES                   DESCRIPTION   EXTRA GROUPS\n\
             abcdef.0123456789abcdef   23h   2025-01-01T23:00:00Z   authentication,signing   <none>        <none>\n"
        );
        let forever = TokenInfo {
            expiration: None,
            ..info
        };
        assert_eq!(row(&forever, now)[1], "<forever>");
        assert_eq!(row(&forever, now)[2], "<never>");
    }
}
