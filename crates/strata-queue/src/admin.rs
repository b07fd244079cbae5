//! `strata queue`: what an operator asks of a deployment's queue — its counts, and its dead
//! letters listed, replayed (back in the queue with fresh attempts) or purged. The embedded
//! queue is opened directly (its database file), so this works whether or not any role is
//! running; with `--url` the same commands go to a RabbitMQ broker.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::rabbitmq::{RabbitConfig, RabbitQueue};
use crate::sqlite::SqliteQueue;
use crate::{MessageId, Queue, QueueName, QueuePolicy};

/// `strata queue …`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    /// Data directory of the deployment (the queue is in its `queue` directory).
    #[arg(
        long,
        env = "STRATA_DATA",
        default_value = ".strata/data",
        global = true
    )]
    pub data: PathBuf,
    /// Directory of the embedded queue, when not under the data directory.
    #[arg(long, env = "STRATA_QUEUE_DIR", global = true)]
    pub queue_dir: Option<PathBuf>,
    /// A RabbitMQ broker instead of the embedded queue (`amqp://USER:PASSWORD@HOST:PORT/VHOST`;
    /// `strata up` prints its broker's).
    #[arg(long, env = "STRATA_QUEUE_URL", hide_env_values = true, global = true)]
    pub url: Option<String>,
    /// The deployment's RabbitMQ namespace.
    #[arg(
        long,
        env = "STRATA_QUEUE_NAMESPACE",
        default_value = "strata",
        global = true
    )]
    pub namespace: String,
    #[command(subcommand)]
    pub action: QueueAction,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueAction {
    /// Each queue's messages: ready, delayed, in flight, dead, and how long the oldest ready
    /// one has waited.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter list: messages that used their attempts.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqAction {
    /// The oldest dead letters, with why their last attempt failed.
    List {
        /// The queue (photo jobs travel on `photos`).
        #[arg(long, default_value = "photos")]
        queue: QueueName,
        /// How many to show.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
    },
    /// Puts dead letters back in the queue with fresh attempts: one by id, or `--all`.
    Replay {
        #[arg(long, default_value = "photos")]
        queue: QueueName,
        /// The message id (`list` shows them).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        #[arg(long)]
        all: bool,
    },
    /// Deletes dead letters for good: one by id, or `--all`.
    Purge {
        #[arg(long, default_value = "photos")]
        queue: QueueName,
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        #[arg(long)]
        all: bool,
    },
}

/// Runs a `strata queue` command.
pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    let (queue, names): (Box<dyn Queue>, Vec<QueueName>) = match &args.url {
        None => {
            let dir = args
                .queue_dir
                .clone()
                .unwrap_or_else(|| args.data.join("queue"));
            if !dir.join(crate::sqlite::DB_FILE).exists() {
                anyhow::bail!(
                    "there is no queue in {}: pass the deployment's --data directory (or --queue-dir), or --url for a RabbitMQ broker",
                    dir.display()
                );
            }
            let queue = SqliteQueue::open(&dir, QueuePolicy::default())
                .with_context(|| format!("cannot open the queue in {}", dir.display()))?;
            let names = queue.names().await?;
            (Box::new(queue), names)
        }
        Some(url) => {
            let mut config = RabbitConfig::new(url.clone(), QueuePolicy::default());
            config.namespace = QueueName::parse(&args.namespace).context("--namespace")?;
            // The broker's queues are declared per name: the photo jobs' is the one there is.
            let photos = QueueName::parse("photos").context("the photos queue's name")?;
            (Box::new(RabbitQueue::new(config)), vec![photos])
        }
    };
    act(queue.as_ref(), names, args.action).await
}

async fn act(queue: &dyn Queue, names: Vec<QueueName>, action: QueueAction) -> anyhow::Result<()> {
    match action {
        QueueAction::Stats { json } => {
            let mut rows = Vec::new();
            for name in names {
                rows.push((name.clone(), queue.stats(&name).await?));
            }
            if json {
                let doc: Vec<String> = rows
                    .iter()
                    .map(|(n, s)| {
                        format!(
                            r#"{{"queue":"{n}","ready":{},"delayed":{},"in_flight":{},"dead":{},"oldest_ready_age_ms":{}}}"#,
                            s.ready, s.delayed, s.in_flight, s.dead, s.oldest_ready_age_ms
                        )
                    })
                    .collect();
                println!("[{}]", doc.join(","));
            } else if rows.is_empty() {
                println!("no messages in any queue");
            } else {
                println!(
                    "{:<20} {:>8} {:>8} {:>10} {:>8} {:>14}",
                    "QUEUE", "READY", "DELAYED", "IN FLIGHT", "DEAD", "OLDEST READY"
                );
                for (n, s) in rows {
                    println!(
                        "{:<20} {:>8} {:>8} {:>10} {:>8} {:>12.1} s",
                        n.as_str(),
                        s.ready,
                        s.delayed,
                        s.in_flight,
                        s.dead,
                        s.oldest_ready_age_ms as f64 / 1000.0
                    );
                }
            }
        }
        QueueAction::Dlq { action } => match action {
            DlqAction::List { queue: name, limit } => {
                let dead = queue
                    .dead_letters(&name, usize::try_from(limit).unwrap_or(usize::MAX))
                    .await?;
                if dead.is_empty() {
                    println!("no dead letters in {name}");
                }
                for d in dead {
                    println!(
                        "{}  attempts {}  {:?}  {}",
                        d.message.id,
                        d.message.attempt,
                        String::from_utf8_lossy(&d.message.payload)
                            .chars()
                            .take(80)
                            .collect::<String>(),
                        d.error
                    );
                }
            }
            DlqAction::Replay {
                queue: name, id, ..
            } => {
                let n = queue.replay(&name, id.map(MessageId)).await?;
                println!(
                    "replayed {n} dead letter{} into {name}",
                    if n == 1 { "" } else { "s" }
                );
            }
            DlqAction::Purge {
                queue: name, id, ..
            } => {
                let n = queue.purge(&name, id.map(MessageId)).await?;
                println!(
                    "purged {n} dead letter{} from {name}",
                    if n == 1 { "" } else { "s" }
                );
            }
        },
    }
    Ok(())
}
