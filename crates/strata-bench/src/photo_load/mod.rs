//! `strata photo-load`: the thumbnail benchmark's tools (`bench/thumbnails.py` drives them,
//! side by side with libvips' `vipsthumbnail`).
//! - `make`: a seeded set of synthetic photos ([`make`]);
//! - `thumbs`: every photo of a directory through the photo worker's own pipeline
//!   ([`strata_photos::process::render_sizes`]), one after another on one thread, each output
//!   written to a file as `vipsthumbnail` writes its own; prints one JSON object with the wall
//!   time and the time of each phase (reading and writing files, decoding, resizing,
//!   encoding).
//!
//! Progress goes to stderr.

pub mod make;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use strata_photos::process::{self, Size, Timings};

/// The thumbnail benchmark's tools.
#[derive(Debug, Args)]
pub struct PhotoLoadArgs {
    #[command(subcommand)]
    command: PhotoLoadCommand,
}

#[derive(Debug, Subcommand)]
enum PhotoLoadCommand {
    /// Write a seeded set of synthetic photos (JPEG, some PNG and WebP, 0.3 to 12 MP).
    Make(MakeArgs),
    /// Render every photo of a directory with the worker's pipeline, on one thread, timed.
    Thumbs(ThumbsArgs),
}

#[derive(Debug, Args)]
struct MakeArgs {
    /// Where the photos go (created if missing).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 100)]
    count: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Which outputs `thumbs` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SizeSet {
    /// The three thumbnails: 512, 128 and 64 pixels.
    Thumbs,
    /// The thumbnails and the original re-encoded, as the photo worker does.
    All,
}

impl SizeSet {
    fn sizes(self) -> &'static [Size] {
        match self {
            SizeSet::Thumbs => &[Size::S64, Size::S128, Size::S512],
            SizeSet::All => &Size::ALL,
        }
    }
}

#[derive(Debug, Args)]
struct ThumbsArgs {
    /// The photos (every file in it, by name).
    #[arg(long)]
    dir: PathBuf,
    /// Where the outputs go, as `<name>_<size>.<extension>` (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "thumbs")]
    sizes: SizeSet,
}

pub async fn run(args: PhotoLoadArgs) -> anyhow::Result<()> {
    let report = match args.command {
        PhotoLoadCommand::Make(a) => tokio::task::spawn_blocking(move || make_set(&a)).await??,
        PhotoLoadCommand::Thumbs(a) => tokio::task::spawn_blocking(move || thumbs(&a)).await??,
    };
    println!("{report}");
    Ok(())
}

fn make_set(a: &MakeArgs) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let bytes = make::make(&a.dir, a.seed, a.count, |name, size| {
        eprintln!("made {name} ({:.1} MB)", size as f64 / 1e6);
    })?;
    Ok(json!({
        "dir": a.dir, "count": a.count, "seed": a.seed, "bytes": bytes,
        "secs": started.elapsed().as_secs_f64(),
    }))
}

/// The photos of `dir`, by name.
fn photos(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    anyhow::ensure!(!paths.is_empty(), "{} holds no photos", dir.display());
    Ok(paths)
}

fn thumbs(a: &ThumbsArgs) -> anyhow::Result<serde_json::Value> {
    let paths = photos(&a.dir)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let sizes = a.sizes.sizes();
    let mut timings = Timings::default();
    let (mut io, mut bytes_in, mut bytes_out, mut pixels, mut outputs) =
        (Duration::ZERO, 0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    for (i, path) in paths.iter().enumerate() {
        let t = Instant::now();
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        io += t.elapsed();
        let rendered = process::render_sizes(&bytes, sizes, &mut timings)
            .with_context(|| format!("rendering {}", path.display()))?;
        let t = Instant::now();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("photo");
        let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("out");
        for (size, out) in &rendered.variants {
            let name = format!("{stem}_{}.{ext}", size.as_str());
            std::fs::write(a.out.join(&name), out)
                .with_context(|| format!("writing {name} in {}", a.out.display()))?;
            bytes_out += out.len() as u64;
            outputs += 1;
        }
        io += t.elapsed();
        bytes_in += bytes.len() as u64;
        pixels += u64::from(rendered.width) * u64::from(rendered.height);
        if (i + 1) % 10 == 0 || i + 1 == paths.len() {
            eprintln!(
                "strata: {}/{} photos, {:.1} s",
                i + 1,
                paths.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let photos = paths.len() as u64;
    let thumbnails = photos * 3;
    Ok(json!({
        "sizes": format!("{:?}", a.sizes).to_lowercase(),
        "photos": photos,
        "thumbnails": thumbnails,
        "outputs": outputs,
        "megapixels_in": pixels as f64 / 1e6,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "secs": secs,
        "photos_per_sec": photos as f64 / secs,
        "thumbnails_per_sec": thumbnails as f64 / secs,
        "phases_secs": {
            "decode": timings.decode.as_secs_f64(),
            "resize": timings.resize.as_secs_f64(),
            "encode": timings.encode.as_secs_f64(),
            "files": io.as_secs_f64(),
        },
    }))
}
