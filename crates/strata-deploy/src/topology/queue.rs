//! `[queue]` and `[blobs]`: where the photo pipeline's jobs and bytes go.
//!
//! ```toml
//! [queue]
//! engine = "rabbitmq"     # "embedded" (default): the SQLite queue in DIR/data/queue
//! # url = "amqp://USER:PASSWORD@HOST:5672/%2f"   # a broker of one's own instead of rabbitmq-1
//!
//! [blobs]
//! engine = "seaweedfs"    # "fs" (default): files in DIR/data/photos/blobs
//! # volume_size_mib = 256         # s3-1's volumes: it makes as many as its disk holds
//! # endpoint = "http://HOST:8333"   # an S3-compatible service of one's own instead of s3-1,
//! # bucket = "strata-photos"        # credentials from STRATA_S3_ACCESS_KEY / STRATA_S3_SECRET_KEY
//! # ca_file = "/etc/strata/s3-ca.pem" # https:// only: more roots than the system's
//! ```

use super::reader::Section;

/// `[queue]` as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum QueueSpec {
    /// The SQLite queue in the data directory.
    #[default]
    Embedded,
    /// RabbitMQ: `rabbitmq-1`, run by `strata up`.
    RabbitMq,
    /// RabbitMQ of one's own, at this URL (it may hold a password).
    RabbitMqUrl { url: String },
}

/// `[blobs]` as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BlobsSpec {
    /// Files in the data directory.
    #[default]
    Fs,
    /// SeaweedFS: `s3-1`, run by `strata up`, with volumes of `volume_size_mib`.
    SeaweedFs { volume_size_mib: u32 },
    /// An S3-compatible service of one's own.
    S3 {
        endpoint: String,
        bucket: String,
        /// More roots to trust for an `https://` endpoint.
        ca_file: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueEngine {
    Embedded,
    RabbitMq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobsEngine {
    Fs,
    SeaweedFs,
    S3,
}

/// Reads `[queue]`.
pub(super) fn read_queue(sec: &mut Section<'_>) -> QueueSpec {
    let engine = sec.one_of(
        "engine",
        vec![
            ("embedded".into(), QueueEngine::Embedded),
            ("rabbitmq".into(), QueueEngine::RabbitMq),
        ],
    );
    let url = sec.secret(
        "url",
        "an amqp:// URL (amqp://USER:PASSWORD@HOST:PORT/VHOST)",
        |s| s.starts_with("amqp://") && s.len() > "amqp://".len() && s.len() <= 2048,
    );
    match (engine, url) {
        (Some(QueueEngine::RabbitMq), Some(url)) => QueueSpec::RabbitMqUrl { url },
        (Some(QueueEngine::RabbitMq), None) => QueueSpec::RabbitMq,
        (_, Some(_)) => {
            sec.error(
                "url",
                "`queue.url` names a RabbitMQ broker: add engine = \"rabbitmq\"",
            );
            QueueSpec::Embedded
        }
        _ => QueueSpec::Embedded,
    }
}

/// Reads `[blobs]`.
pub(super) fn read_blobs(sec: &mut Section<'_>) -> BlobsSpec {
    let engine = sec.one_of(
        "engine",
        vec![
            ("fs".into(), BlobsEngine::Fs),
            ("seaweedfs".into(), BlobsEngine::SeaweedFs),
            ("s3".into(), BlobsEngine::S3),
        ],
    );
    let endpoint = sec.string(
        "endpoint",
        "an http:// or https:// URL of an S3-compatible service (https://HOST[:PORT])",
        |s| {
            ["http://", "https://"]
                .iter()
                .any(|scheme| s.starts_with(scheme) && s.len() > scheme.len())
                && s.len() <= 2048
        },
    );
    let ca_file = sec.path("ca_file");
    if ca_file.is_some()
        && endpoint
            .as_ref()
            .is_some_and(|e| !e.starts_with("https://"))
    {
        sec.error(
            "ca_file",
            "`blobs.ca_file` is for an https:// endpoint: use https://, or drop ca_file",
        );
    }
    let bucket = sec.string(
        "bucket",
        "a bucket name: 3 to 63 characters of a-z, 0-9, '-' and '.'",
        |s| {
            (3..=63).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        },
    );
    let volume_size_mib = sec.int("volume_size_mib", 16..=30_000);
    if volume_size_mib.is_some() && engine != Some(BlobsEngine::SeaweedFs) {
        sec.error(
            "volume_size_mib",
            "`blobs.volume_size_mib` sizes the volumes of s3-1: add engine = \"seaweedfs\"",
        );
    }
    match engine {
        Some(BlobsEngine::S3) => match endpoint {
            Some(endpoint) => BlobsSpec::S3 {
                endpoint,
                bucket: bucket.unwrap_or_else(|| strata_photos::role::DEFAULT_BUCKET.into()),
                ca_file,
            },
            None => {
                if !sec.has("endpoint") {
                    sec.error(
                        "engine",
                        "`blobs.engine = \"s3\"` needs `endpoint = \"http://HOST:PORT\"` (or \
                         engine = \"seaweedfs\" to let strata up run one)",
                    );
                }
                BlobsSpec::Fs
            }
        },
        other => {
            for key in ["endpoint", "bucket", "ca_file"] {
                if sec.has(key) {
                    sec.error(
                        key,
                        format!(
                            "`blobs.{key}` names an S3 service of one's own: use engine = \"s3\""
                        ),
                    );
                }
            }
            if other == Some(BlobsEngine::SeaweedFs) {
                BlobsSpec::SeaweedFs {
                    volume_size_mib: volume_size_mib
                        .unwrap_or(strata_blobs::node::DEFAULT_VOLUME_MIB),
                }
            } else {
                BlobsSpec::Fs
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::*;

    #[test]
    fn queue_and_blobs_engines_are_read_and_checked() {
        let t = Topology::parse(
            "[api]\ncount = 1\n[queue]\nengine = \"rabbitmq\"\n[blobs]\nengine = \"seaweedfs\"\n",
            8080,
        )
        .expect("valid");
        assert_eq!(t.queue, QueueSpec::RabbitMq);
        assert_eq!(
            t.blobs,
            BlobsSpec::SeaweedFs {
                volume_size_mib: strata_blobs::node::DEFAULT_VOLUME_MIB
            }
        );
        assert_eq!(t.instance_count(), 3, "the API server, rabbitmq-1 and s3-1");
        let own = Topology::parse(
            "[api]\ncount = 1\n[queue]\nengine = \"rabbitmq\"\nurl = \"amqp://u:p@mq:5672/%2f\"\n[blobs]\nengine = \"s3\"\nendpoint = \"http://s3:8333\"\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            own.queue,
            QueueSpec::RabbitMqUrl {
                url: "amqp://u:p@mq:5672/%2f".into()
            }
        );
        assert_eq!(
            own.blobs,
            BlobsSpec::S3 {
                endpoint: "http://s3:8333".into(),
                bucket: "strata-photos".into(),
                ca_file: None,
            }
        );
        assert_eq!(own.instance_count(), 1, "nothing more to run");
        let none = Topology::parse("[api]\ncount = 1\n", 8080).expect("valid");
        assert_eq!(
            (none.queue, none.blobs),
            (QueueSpec::Embedded, BlobsSpec::Fs)
        );

        let e = errors(
            "[api]\ncount = 1\n[queue]\nengine = \"kafka\"\nurl = \"amqp://u:secret@h/\"\n[blobs]\nengine = \"s3\"\nbucket = \"B\"\n",
        );
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 4, "{shown:#?}");
        assert!(shown[0].contains("queue.engine"), "{shown:#?}");
        assert!(shown[1].contains("add engine = \"rabbitmq\""), "{shown:#?}");
        assert!(
            shown.iter().all(|s| !s.contains("secret")),
            "a URL's password is never shown: {shown:#?}"
        );
        assert!(
            shown.iter().any(|s| s.contains("bucket name")),
            "{shown:#?}"
        );
        assert!(
            shown.iter().any(|s| s.contains("needs `endpoint")),
            "{shown:#?}"
        );
    }

    #[test]
    fn the_object_stores_volumes_are_sized_only_where_strata_runs_it() {
        let t = Topology::parse(
            "[api]\ncount = 1\n[blobs]\nengine = \"seaweedfs\"\nvolume_size_mib = 1024\n",
            8080,
        )
        .expect("valid");
        assert_eq!(
            t.blobs,
            BlobsSpec::SeaweedFs {
                volume_size_mib: 1024
            }
        );
        let e = errors("[api]\ncount = 1\n[blobs]\nvolume_size_mib = 1024\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].to_string().contains("add engine = \"seaweedfs\""),
            "{e:?}"
        );
        let e = errors("[api]\ncount = 1\n[blobs]\nengine = \"seaweedfs\"\nvolume_size_mib = 8\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].to_string().contains("volume_size_mib"), "{e:?}");
    }
}
