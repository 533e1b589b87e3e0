//! The `course-service` command: `serve`, `cluster`, `seed`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use course_service::cache::CatalogCache;
use course_service::cluster::{self, ClusterSpec};
use course_service::config::{Config, Env};
use course_service::{backup, seed, server, store};

#[derive(Parser)]
#[command(
    name = "course-service",
    version,
    about = "The MicroCourses course catalogue service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on one address.
    Serve {
        /// Configuration file (TOML); every field has a default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding the file and MC_LISTEN.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run and supervise N `serve` workers on consecutive ports.
    Cluster {
        #[arg(long, default_value_t = 3)]
        instances: u16,
        #[arg(long, default_value_t = 9001)]
        base_port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load courses from a JSON file (idempotent: existing slugs are left alone).
    Seed {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Add COUNT generated courses (deterministic for a SEED; for benchmarks and trials).
    /// Running it again with the same seed adds nothing.
    Generate {
        count: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write every course to FILE: MongoDB Extended JSON, one document per line.
    Export {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check all of FILE (an export), then store each course under its id (idempotent).
    Import {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    shared::telemetry::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, listen } => match load_config(config, listen.as_deref()) {
            Ok(cfg) => server::run(cfg, shared::shutdown::signal()).await,
            Err(e) => Err(e),
        },
        Command::Cluster {
            instances,
            base_port,
            host,
            config,
        } => {
            // Validate once here, so a bad file fails the cluster rather than crash-loop N workers.
            match load_config(config.clone(), Some(&format!("{host}:{base_port}"))) {
                Ok(_) => {
                    let spec = ClusterSpec {
                        instances,
                        base_port,
                        host,
                        config,
                    };
                    cluster::run(spec, shared::shutdown::signal()).await
                }
                Err(e) => Err(e),
            }
        }
        Command::Seed { file, config } => run_seed(file, config).await,
        Command::Generate {
            count,
            seed,
            config,
        } => run_generate(count, seed, config).await,
        Command::Export { file, config } => run_export(file, config).await,
        Command::Import { file, config } => run_import(file, config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("course-service: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<PathBuf>, listen: Option<&str>) -> Result<Config, String> {
    Config::load(path.as_deref(), &Env::from_process(), listen).map_err(|e| e.to_string())
}

async fn run_seed(file: PathBuf, config: Option<PathBuf>) -> Result<(), String> {
    let cfg = load_config(config, None)?;
    let courses = seed::read(&file)?;
    let client = store::connect(&cfg).await.map_err(|e| e.to_string())?;
    let metrics = course_service::metrics::Metrics::new();
    let st = store::CourseStore::new(
        &client,
        &cfg.database,
        cfg.operation_timeout,
        metrics.clone(),
    );
    let report = seed::load(&st, courses).await?;
    if report.inserted > 0 {
        // Running instances learn of the new courses: through their change stream (memory
        // cache), or through this bump of the shared generation (Redis cache).
        CatalogCache::new(&cfg.cache, &metrics)?.invalidate().await;
    }
    println!(
        "seeded {}: {} new, {} already present",
        file.display(),
        report.inserted,
        report.already_present
    );
    client.shutdown().await;
    Ok(())
}

/// The store for a one-off command, with its client (to shut down after).
async fn open_store(
    config: Option<PathBuf>,
) -> Result<(Config, mongodb::Client, store::CourseStore), String> {
    let cfg = load_config(config, None)?;
    let client = store::connect(&cfg).await.map_err(|e| e.to_string())?;
    let metrics = course_service::metrics::Metrics::new();
    let st = store::CourseStore::new(&client, &cfg.database, cfg.operation_timeout, metrics);
    Ok((cfg, client, st))
}

async fn run_generate(count: usize, seed: u64, config: Option<PathBuf>) -> Result<(), String> {
    let (cfg, client, st) = open_store(config).await?;
    let started = std::time::Instant::now();
    let inserted = seed::load_synthetic(&st, seed::synthetic(count, seed)).await?;
    if inserted > 0 {
        let metrics = course_service::metrics::Metrics::new();
        CatalogCache::new(&cfg.cache, &metrics)?.invalidate().await;
    }
    println!(
        "generated {count} courses (seed {seed}): {inserted} new, {} already present, in {:.1?}",
        count as u64 - inserted,
        started.elapsed()
    );
    client.shutdown().await;
    Ok(())
}

async fn run_export(file: PathBuf, config: Option<PathBuf>) -> Result<(), String> {
    let (_, client, st) = open_store(config).await?;
    let n = backup::export(&st, &file).await?;
    println!("exported {n} courses to {}", file.display());
    client.shutdown().await;
    Ok(())
}

async fn run_import(file: PathBuf, config: Option<PathBuf>) -> Result<(), String> {
    // The whole file is checked before the database is even opened.
    let docs = backup::read(&file)?;
    let (cfg, client, st) = open_store(config).await?;
    let report = backup::import(&st, docs).await?;
    // Running instances learn of the change like after a seed.
    let metrics = course_service::metrics::Metrics::new();
    CatalogCache::new(&cfg.cache, &metrics)?.invalidate().await;
    println!(
        "imported {}: {} added, {} replaced",
        file.display(),
        report.added,
        report.replaced
    );
    client.shutdown().await;
    Ok(())
}
