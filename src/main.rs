use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::AsyncWriteExt;

use stockade::cli::{Cli, Command, ConfigCommand, RunArgs, SandboxArgs, ServeArgs};
use stockade::config::{ConfigFile, ServerConfig};
use stockade::process::zygote::Zygote;
use stockade::run::{RunPolicyFile, RunRequest, parse_inherit};
use stockade::sandbox::prepare::{SandboxSettings, SupervisorPorts};
use stockade::sandbox::server_files::ServerFiles;
use stockade::server::Server;
use stockade::transport::listen::{ListenAddr, parse_listen};
use stockade::transport::{stdio, ws};

/// Exit status of `stockade run` when stockade itself fails (as `timeout` and `env` use 125),
/// so that it cannot be mistaken for the command's own status.
const RUN_OWN_ERROR: i32 = 125;

/// Errors end the process with one clear message on stderr (the whole cause chain on one line),
/// never a backtrace, whatever `RUST_BACKTRACE` says: a CI log should show what to fix, not
/// where in stockade the error was noticed.
fn main() {
    let is_run = std::env::args_os().nth(1).is_some_and(|a| a == "run");
    if let Err(e) = real_main() {
        eprintln!("stockade: {e:#}");
        std::process::exit(if is_run { RUN_OWN_ERROR } else { 1 });
    }
}

fn real_main() -> anyhow::Result<()> {
    // Before any thread exists: every fd we create later must be >= 3.
    stockade::process::sys::ensure_std_fds();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STOCKADE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Run(args) => run(*args),
        Command::Config(ConfigCommand::Example { name }) => {
            print!(
                "{}",
                stockade::examples::server_config(&name).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        Command::Schema => {
            print!("{}", stockade::protocol::schema::protocol_schema_text());
            Ok(())
        }
        Command::Doctor(args) => {
            let mode = match &args.config {
                Some(path) => ConfigFile::load(path)?
                    .sandbox
                    .denial_audit
                    .as_deref()
                    .map(|m| {
                        stockade::sandbox::denials::audit::AuditMode::parse(m).ok_or_else(|| {
                            anyhow::anyhow!(
                                "sandbox.denial_audit: unknown value {m:?} (auto, off, enable)"
                            )
                        })
                    })
                    .transpose()?
                    .unwrap_or_default(),
                None => Default::default(),
            };
            let report = stockade::doctor::report(args.landlock_abi, mode);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", stockade::doctor::human(&report));
            }
            Ok(())
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let is_name = args
        .policy
        .as_deref()
        .is_some_and(|p| stockade::sandbox::policy::Level::parse(p).is_some());
    let file = match &args.policy {
        Some(path) if !is_name => {
            let file = std::path::Path::new(path);
            if !file.exists() {
                bail!(
                    "--policy {path}: neither a policy name (read-only, workspace-write, \
                     external-sandbox, danger-full-access) nor an existing policy file"
                );
            }
            RunPolicyFile::load(file).map_err(anyhow::Error::msg)?
        }
        _ => RunPolicyFile::default(),
    };
    let base_policy = match (&args.policy, &file.sandbox) {
        (Some(name), _) if is_name => Some(serde_json::json!({ "type": name })),
        (_, Some(table)) => Some(serde_json::to_value(table)?),
        _ => None,
    };
    let sandbox_policy =
        stockade::run::run_sandbox_policy(base_policy, &args.writable, args.network)
            .map_err(anyhow::Error::msg)?;
    let mut env = file.env_policy().map_err(anyhow::Error::msg)?;
    if let Some(inherit) = &args.env_inherit {
        env.inherit = parse_inherit(inherit).map_err(|e| anyhow::anyhow!("--env-inherit: {e}"))?;
    }
    env.ignore_default_excludes |= args.env_ignore_default_excludes;
    env.exclude.extend(args.env_exclude.iter().cloned());
    env.include.extend(args.env_include.iter().cloned());
    env.include_only
        .extend(args.env_include_only.iter().cloned());
    for kv in &args.env_set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env-set {kv:?}: expected NAME=VALUE"))?;
        env.set.insert(k.to_string(), v.to_string());
    }
    let cwd = match &args.cwd {
        Some(c) => std::path::absolute(c)?,
        None => std::env::current_dir()?,
    };
    // `run` is operated by its caller: every policy is allowed.
    let sandbox = SandboxSettings {
        ceiling: stockade::sandbox::policy::Level::DangerFullAccess,
        ..SandboxSettings::default()
    };
    let config = base_config(
        args.config.as_deref(),
        &args.sandbox,
        sandbox,
        ServerFiles::default(),
    )?;
    let audit = prepare_denial_audit(&config.sandbox)?;
    let (zygote, runtime) = start_processes()?;
    stockade::sandbox::denials::audit::start(audit.0, audit.1);
    let code = runtime.block_on(async move {
        let server = Server::new(config, zygote)?;
        let request = RunRequest {
            argv: args.command.clone(),
            cwd,
            env,
            sandbox_policy,
            limits: stockade::protocol::process::Limits {
                wall_time_ms: args.wall_time_ms,
                cpu_time_ms: args.cpu_time_ms,
                memory_bytes: args.memory_bytes,
                max_processes: args.max_processes,
                max_file_size_bytes: args.max_file_size_bytes,
                max_open_files: args.max_open_files,
                max_output_bytes: args.max_output_bytes,
            },
        };
        let reporting = stockade::run::RunReporting {
            quiet: args.quiet,
            report: args.report.clone(),
        };
        let code = stockade::run::run(server.clone(), request, reporting).await;
        server.shutdown().await;
        anyhow::Ok(code)
    })?;
    std::process::exit(code);
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listen = parse_listen(&args.listen)?;
    // Every file the server reads at startup is kept open and hidden from confined
    // processes and filesystem calls (a token there would let one drive the server).
    let mut files = ServerFiles::default();
    let token = match (&args.ws_token_file, &args.ws_token_env) {
        (Some(path), _) => {
            let t = files
                .read(path)
                .with_context(|| format!("reading --ws-token-file {}", path.display()))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                bail!("--ws-token-file {} is empty", path.display());
            }
            Some(t)
        }
        (None, Some(var)) => {
            // Still single-threaded here: the zygote and the runtime start later.
            let t = stockade::process::sys::take_env_secret(var).with_context(|| {
                format!("--ws-token-env {var}: the variable is not set (or not UTF-8)")
            })?;
            let t = t.trim().to_string();
            if t.is_empty() {
                bail!("--ws-token-env {var}: the variable is empty");
            }
            Some(t)
        }
        (None, None) => None,
    };
    if let ListenAddr::WebSocket(addr) = &listen
        && !addr.ip().is_loopback()
        && token.is_none()
        && !args.insecure_no_auth
    {
        bail!(
            "refusing to listen on non-loopback address {addr} without --ws-token-file \
             or --ws-token-env (anyone who can reach it could run commands); pass --insecure-no-auth to override"
        );
    }
    let config = ServerConfig {
        max_message_bytes: args.max_message_bytes,
        session_grace: Duration::from_millis(args.session_grace_ms),
        close_grace: Duration::from_millis(args.close_grace_ms),
        retain_output_bytes: args.retain_output_bytes,
        retain_exited: Duration::from_millis(args.retain_exited_ms),
        ..base_config(
            args.config.as_deref(),
            &args.sandbox,
            SandboxSettings::default(),
            files,
        )?
    };
    let mut config = ServerConfig {
        cgroup_root: args.cgroup_root.clone().or(config.cgroup_root.clone()),
        ..config
    };
    let audit = prepare_denial_audit(&config.sandbox)?;
    let (zygote, runtime) = start_processes()?;
    stockade::sandbox::denials::audit::start(audit.0, audit.1);
    runtime.block_on(async move {
        // Bound before the server exists: no confined process may reach the listener's port
        // (the sandbox denies it), so the port must be known when the sandbox is set up.
        let listener = match listen {
            ListenAddr::Stdio => None,
            ListenAddr::WebSocket(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?;
                let port = listener.local_addr()?.port();
                config.sandbox.supervisor_ports = SupervisorPorts::new(vec![port]);
                Some(listener)
            }
        };
        let server = Server::new(config, zygote).context("starting the server")?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let main_job = async {
            match listener {
                None => {
                    // On a worker, not on this `block_on` thread: the request tasks the
                    // connection spawns then start on the same worker without a cross-thread
                    // wakeup (one hop less per request).
                    let _ = tokio::spawn(stdio::run(server.clone())).await;
                    Ok(())
                }
                Some(listener) => {
                    let bound = listener.local_addr()?;
                    let mut stdout = tokio::io::stdout();
                    stdout
                        .write_all(format!("ws://{bound}\n").as_bytes())
                        .await?;
                    stdout.flush().await?;
                    let sec = ws::WsSecurity {
                        allowed_origins: args.allow_origin.clone(),
                        token,
                    };
                    ws::run(server.clone(), listener, sec).await;
                    Ok(())
                }
            }
        };
        let result: anyhow::Result<()> = tokio::select! {
            r = main_job => r,
            _ = sigterm.recv() => Ok(()),
            _ = sigint.recv() => Ok(()),
        };
        server.shutdown().await;
        result
    })?;
    // Do not wait for tokio's blocking stdin reader.
    std::process::exit(0);
}

/// The config file plus the sandbox flags (flags override the file) over `sandbox`. The
/// config file joins `files`, the server's own files that confined processes never see.
fn base_config(
    path: Option<&std::path::Path>,
    flags: &SandboxArgs,
    mut sandbox: SandboxSettings,
    mut files: ServerFiles,
) -> anyhow::Result<ServerConfig> {
    let file = match path {
        Some(path) => {
            let shown = path.display().to_string();
            let text = files
                .read(path)
                .map_err(|source| stockade::config::ConfigError::Read {
                    path: shown.clone(),
                    source,
                })?;
            ConfigFile::parse(&text, &shown)?
        }
        None => ConfigFile::default(),
    };
    sandbox.server_files = files;
    file.sandbox
        .apply(&mut sandbox)
        .map_err(anyhow::Error::msg)?;
    flags.apply(&mut sandbox).map_err(anyhow::Error::msg)?;
    Ok(ServerConfig {
        sandbox,
        limits_default: file.limits.default.into(),
        limits_max: file.limits.max.into(),
        cgroup_root: file.limits.cgroup_root.clone(),
        never_inherit: file.env.never_inherit,
        ..ServerConfig::default()
    })
}

/// Forks the zygote (which must happen while the process is still single-threaded), then
/// raises the fd limit (after the fork, so that children keep the limit the server was started
/// with) and builds the runtime.
/// The Landlock audit denial source's self-test (`[sandbox] denial_audit`): before the zygote
/// is forked, which must inherit the restrict flags it decides. `enable` that cannot turn
/// audit on stops the server.
fn prepare_denial_audit(
    sandbox: &SandboxSettings,
) -> anyhow::Result<(
    stockade::sandbox::denials::audit::AuditState,
    Option<std::sync::Arc<stockade::sandbox::denials::audit::AuditSource>>,
)> {
    let abi = stockade::sandbox::probe::landlock_abi_in_use(sandbox.landlock_abi_cap);
    stockade::sandbox::denials::audit::prepare(sandbox.denial_audit, abi, true)
        .map_err(anyhow::Error::msg)
}

fn start_processes() -> anyhow::Result<(Zygote, tokio::runtime::Runtime)> {
    let zygote = Zygote::start().context("starting the zygote process")?;
    stockade::process::sys::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    Ok((zygote, runtime))
}
