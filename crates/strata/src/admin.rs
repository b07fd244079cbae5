//! `strata admin`: operator actions that the API never offers itself — granting and withdrawing
//! the admin role, and rotating and revoking the keys that sign access tokens. Each takes effect
//! on every API server of the deployment within a second, without a restart.
//!
//! The target is a deployment directory (`--dir`, as `strata up` made it: its PostgreSQL
//! primary if it runs one, else its SQLite data directory), or a data directory or PostgreSQL
//! URL given directly, as `strata serve` takes them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use strata_store::accounts::{ADMIN_ROLE, AccountStore};
use strata_store::postgres::{PgConfig, PgStore};

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// A deployment directory made by `strata up` (its database is used).
    #[arg(long, conflicts_with_all = ["data", "postgres"])]
    pub dir: Option<PathBuf>,
    /// A data directory (SQLite), as `strata serve --data` takes it.
    #[arg(long, env = "STRATA_DATA")]
    pub data: Option<PathBuf>,
    /// A PostgreSQL URL, as `strata serve --postgres` takes it. Never logged.
    #[arg(long, env = "STRATA_POSTGRES_URL", hide_env_values = true)]
    pub postgres: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminAction {
    /// Grant the admin role to the account with this email (at once: every server reads an
    /// account's roles on every authenticated request).
    Grant {
        email: String,
        #[command(flatten)]
        target: Target,
    },
    /// Withdraw the admin role from the account with this email (at once, on every server:
    /// tokens issued while it held the role no longer carry it).
    Withdraw {
        email: String,
        #[command(flatten)]
        target: Target,
    },
    /// Add a new key that signs access tokens from now on (older keys keep verifying; the
    /// newest three are kept). Servers pick it up within a second. Refused when it would retire
    /// a key whose tokens may still be live — at most two rotations per access-token lifetime.
    RotateKeys {
        /// The key directory (default: `keys` in the data directory).
        #[arg(long, env = "STRATA_KEYS")]
        keys: Option<PathBuf>,
        /// The API servers' access-token lifetime (`--access-ttl-secs` of `strata serve`).
        #[arg(long, env = "STRATA_ACCESS_TTL_SECS", default_value_t = 600)]
        access_ttl_secs: u64,
        /// Rotate even if live tokens' key is retired (their holders must refresh).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop every API server verifying tokens signed by key KID, within a second (tokens it
    /// signed fail; their holders refresh or log in again). A new key is made first when KID is
    /// the one signing. Key ids are the `kid` in a token's header and in /.well-known/jwks.json.
    RevokeKey {
        kid: String,
        /// The key directory (default: `keys` in the data directory).
        #[arg(long, env = "STRATA_KEYS")]
        keys: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
}

impl Target {
    fn data_dir(&self) -> PathBuf {
        match (&self.dir, &self.data) {
            (Some(dir), _) => dir.join(strata_deploy::state::DATA_DIR),
            (None, Some(data)) => data.clone(),
            (None, None) => PathBuf::from(".strata/data"),
        }
    }

    async fn accounts(&self) -> anyhow::Result<Arc<dyn AccountStore>> {
        match (&self.dir, &self.postgres) {
            (_, Some(url)) => Ok(Arc::new(
                PgStore::connect(&PgConfig::new(url.clone()))
                    .await
                    .context("cannot reach the PostgreSQL database")?
                    .store,
            )),
            (Some(dir), None) => strata_deploy::accounts::open(dir).await,
            (None, None) => strata_deploy::accounts::open_sqlite(&self.data_dir()).await,
        }
    }
}

async fn set_admin(email: &str, target: &Target, granted: bool) -> anyhow::Result<()> {
    let email = strata_core::email::Email::parse(email)
        .map_err(|why| anyhow::anyhow!("{email:?} is not an email address: it {why}"))?;
    let accounts = target.accounts().await?;
    match accounts.set_role(&email, ADMIN_ROLE, granted).await {
        Ok(account) => {
            println!(
                "{} is {}an admin (user {}); roles: [{}]",
                account.email,
                if granted { "now " } else { "no longer " },
                account.user_id,
                account.roles.join(", ")
            );
            Ok(())
        }
        Err(strata_store::StoreError::NoAccount(_)) => {
            anyhow::bail!("no account has the email {email}: create it first with POST /accounts")
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    match args.action {
        AdminAction::Grant { email, target } => set_admin(&email, &target, true).await,
        AdminAction::Withdraw { email, target } => set_admin(&email, &target, false).await,
        AdminAction::RotateKeys {
            keys,
            access_ttl_secs,
            force,
            target,
        } => {
            let dir = keys.unwrap_or_else(|| target.data_dir().join("keys"));
            let guard = (!force).then(|| std::time::Duration::from_secs(access_ttl_secs));
            let kid = strata_api::keys::rotate(&dir, guard).map_err(anyhow::Error::msg)?;
            println!(
                "new signing key {kid} in {}; API servers sign with it within {} ms",
                dir.display(),
                strata_api::keys::CHECK_EVERY.as_millis()
            );
            Ok(())
        }
        AdminAction::RevokeKey { kid, keys, target } => {
            let dir = keys.unwrap_or_else(|| target.data_dir().join("keys"));
            let revoked = strata_api::keys::revoke(&dir, &kid).map_err(anyhow::Error::msg)?;
            println!(
                "key {kid} revoked in {}: API servers stop accepting tokens it signed within {} ms; \
                 {} signs{}",
                dir.display(),
                strata_api::keys::CHECK_EVERY.as_millis(),
                revoked.signing,
                if revoked.made_new {
                    " (made now, as the revoked key was the one signing)"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}
