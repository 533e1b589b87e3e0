//! The `proxy` command: `proxy --config configs/proxy.toml [--check]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use proxy::config::{ProxyConfig, UpstreamsConfig};

#[derive(Parser)]
#[command(
    name = "proxy",
    version,
    about = "The MicroCourses load-balancing reverse proxy"
)]
struct Cli {
    /// proxy.toml (upstreams_file inside it is read relative to it).
    #[arg(long)]
    config: PathBuf,
    /// Validate both files, print what would run, and exit (0 if valid).
    #[arg(long)]
    check: bool,
    /// Write the serving process's pid here (rewritten by the new process after a SIGUSR2
    /// binary upgrade).
    #[arg(long)]
    pid_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    shared::telemetry::init();
    let cli = Cli::parse();
    let (mut proxy_config, upstreams) = match load(&cli.config) {
        Ok(both) => both,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!(
                "proxy: {} configuration error(s); nothing started",
                errors.len()
            );
            return ExitCode::from(2);
        }
    };
    if cli.check {
        print_plan(&proxy_config, &upstreams);
        return ExitCode::SUCCESS;
    }
    proxy_config.pid_file = cli.pid_file;
    match proxy::server::run(proxy_config, upstreams, shared::shutdown::signal()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Both files, or every error found in them.
fn load(path: &std::path::Path) -> Result<(ProxyConfig, UpstreamsConfig), Vec<String>> {
    let proxy_config = ProxyConfig::load(path).map_err(to_strings)?;
    let upstreams = UpstreamsConfig::load(&proxy_config.upstreams_file).map_err(to_strings)?;
    Ok((proxy_config, upstreams))
}

fn to_strings(errors: Vec<shared::config::ConfigError>) -> Vec<String> {
    errors.into_iter().map(|e| e.to_string()).collect()
}

fn print_plan(p: &ProxyConfig, u: &UpstreamsConfig) {
    println!("{}: ok", p.path.display());
    println!("{}: ok", p.upstreams_file.display());
    println!("listen http  {}", p.listen.http);
    if let Some(https) = p.listen.https {
        println!("listen https {https} (cert {})", p.tls.cert.display());
    }
    println!("listen admin {}", p.listen.admin);
    for r in &u.routes {
        println!(
            "route {}{} -> {}",
            r.host.as_deref().unwrap_or("*"),
            r.path_prefix,
            r.pool
        );
    }
    for pool in &u.pools {
        println!("pool {} ({})", pool.name, pool.algorithm.as_str());
        for e in &pool.endpoints {
            println!("  {} weight {}", e.addr, e.weight);
        }
    }
}
