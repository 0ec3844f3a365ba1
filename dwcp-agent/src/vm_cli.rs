//! `dwcp-agent vm ...`: the VM commands, talking to the local agent's control socket.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::{
    api::client::{ApiClient, ClientError},
    config::DEFAULT_CONTROL_SOCKET,
    vm::{VmSpec, spec::Network},
};

/// `dwcp-agent vm` arguments.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// The agent's control socket.
    #[arg(long, global = true, default_value = DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: VmCommand,
}

/// The VM subcommands.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Define a VM (it starts in state `creating`; then `start` it).
    Create(CreateArgs),
    /// Launch a VM's QEMU; returns when the guest runs.
    Start(NameArg),
    /// Stop a running VM's vCPUs.
    Pause(NameArg),
    /// Continue a paused VM.
    Resume(NameArg),
    /// Power a VM down (ACPI power button; quit, then kill, if the guest ignores it).
    Stop(NameArg),
    /// Remove a VM that is not running, with its directory.
    Delete(NameArg),
    /// Show one VM (JSON).
    Status(NameArg),
    /// Move a running VM to another agent (progress bar, then a summary).
    Migrate(crate::vm_migrate_cli::MigrateArgs),
    /// Show the progress of a VM's migration, or its last one (JSON).
    Migration(NameArg),
    /// List VMs.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A VM name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// VM name.
    pub name: String,
}

/// `vm create`: a spec from flags or from a JSON file.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// VM name (a-z, 0-9, '-').
    #[arg(required_unless_present = "spec")]
    pub name: Option<String>,
    /// Read the whole spec from this JSON file instead of the flags.
    #[arg(long, conflicts_with_all = ["name", "disk", "kernel", "initrd", "append"])]
    pub spec: Option<PathBuf>,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// Memory in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory_mib: u64,
    /// Disk image (virtio).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Networking: none or user.
    #[arg(long, default_value = "none", value_parser = parse_network)]
    pub network: Network,
    /// Kernel for direct boot.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for direct boot.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    pub append: Option<String>,
}

fn parse_network(value: &str) -> Result<Network, String> {
    match value {
        "none" => Ok(Network::None),
        "user" => Ok(Network::User),
        other => Err(format!("{other:?} is not a network mode (none or user)")),
    }
}

/// Errors of the VM commands.
#[derive(Debug, thiserror::Error)]
pub enum VmCliError {
    /// The spec file could not be read.
    #[error("Cannot read spec file {path}")]
    SpecFile {
        /// File.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A path could not be made absolute.
    #[error("Cannot resolve path {0}")]
    Path(String),
    /// The call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The migration failed or was refused.
    #[error(transparent)]
    Migrate(#[from] crate::vm_migrate_cli::MigrateCliError),
}

/// Runs a `vm` subcommand, printing the answer on stdout.
pub fn run(args: &VmArgs) -> Result<(), VmCliError> {
    let client = ApiClient::new(&args.socket);
    let post = |name: &str, action: &str| {
        client.call("POST", &format!("/v1/vms/{}/{action}", encode(name)), None)
    };
    let answer = match &args.command {
        VmCommand::Create(create) => {
            let body = spec_body(create)?;
            client.call("POST", "/v1/vms", Some(&body))?
        }
        VmCommand::Start(n) => post(&n.name, "start")?,
        VmCommand::Pause(n) => post(&n.name, "pause")?,
        VmCommand::Resume(n) => post(&n.name, "resume")?,
        VmCommand::Stop(n) => post(&n.name, "stop")?,
        VmCommand::Delete(n) => {
            client.call("DELETE", &format!("/v1/vms/{}", encode(&n.name)), None)?
        }
        VmCommand::Migrate(migrate) => {
            return crate::vm_migrate_cli::run(&args.socket, migrate).map_err(VmCliError::from);
        }
        VmCommand::Migration(n) => client.call(
            "GET",
            &format!("/v1/vms/{}/migration", encode(&n.name)),
            None,
        )?,
        VmCommand::Status(n) => {
            client.call("GET", &format!("/v1/vms/{}", encode(&n.name)), None)?
        }
        VmCommand::List { json } => {
            let list = client.call("GET", "/v1/vms", None)?;
            if !*json {
                print!("{}", table(&list));
                return Ok(());
            }
            list
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string())
    );
    Ok(())
}

/// The JSON spec to send: the file as written, or one built from the flags.
fn spec_body(args: &CreateArgs) -> Result<String, VmCliError> {
    if let Some(file) = &args.spec {
        return std::fs::read_to_string(file).map_err(|source| VmCliError::SpecFile {
            path: file.display().to_string(),
            source,
        });
    }
    let absolute = |p: &Option<PathBuf>| -> Result<Option<PathBuf>, VmCliError> {
        p.as_deref()
            .map(|p| std::path::absolute(p).map_err(|_| VmCliError::Path(p.display().to_string())))
            .transpose()
    };
    let spec = VmSpec {
        name: args.name.clone().unwrap_or_default(),
        vcpus: args.vcpus,
        memory_mib: args.memory_mib,
        disk: absolute(&args.disk)?,
        network: args.network,
        kernel: absolute(&args.kernel)?,
        initrd: absolute(&args.initrd)?,
        append: args.append.clone(),
    };
    Ok(serde_json::to_string(&spec).unwrap_or_default())
}

/// `NAME STATE ACCEL PID` lines.
fn table(list: &Value) -> String {
    let mut out = format!(
        "{:<24} {:<10} {:<6} {:<8} {}\n",
        "NAME", "STATE", "ACCEL", "PID", "REASON"
    );
    for vm in list.as_array().into_iter().flatten() {
        let text = |v: &Value| v.as_str().map_or_else(|| "-".to_owned(), str::to_owned);
        out.push_str(&format!(
            "{:<24} {:<10} {:<6} {:<8} {}\n",
            text(&vm["spec"]["name"]),
            text(&vm["state"]),
            text(&vm["accel"]),
            vm["pid"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |p| p.to_string()),
            vm["reason"].as_str().unwrap_or(""),
        ));
    }
    out
}

/// Percent-encodes a name for a URL path (valid names need none; invalid ones reach
/// the agent intact and are refused there with a clear message).
fn encode(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
