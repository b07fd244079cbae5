//! Rendering a role's typed arguments back into the command line and environment of its
//! process.
//!
//! clap parses a command line into a struct; nothing in clap goes the other way. The plan holds
//! each role's arguments as the very struct the role parses ([`RoleCommand`]), so this module
//! walks clap's own description of that struct — every argument's id, long flag, default, and
//! environment variable — and the struct's serde form, keyed by the same ids:
//! - a value equal to the argument's default is left out (readable `ps` lines);
//! - `true` of a flag becomes `--flag`; a list becomes the flag once per element;
//! - an argument declared with `hide_env_values` (a URL that may hold a password, a key) goes
//!   into the child's environment, never its command line, which any local user can read;
//! - every other environment variable an argument could read is removed from the child's
//!   environment, so a role sees exactly what the plan says, whatever the shell that ran
//!   `strata up` had set.
//!
//! The plan's tests parse each rendered command back with clap and compare it with the
//! original, so a value whose `Display` and `FromStr` forms disagree cannot go unnoticed.

use clap::{ArgAction, Subcommand as _};
use serde_json::Value;

use crate::roles::RoleCommand;

/// How to start one role process: `strata <args…>` with `env` set and `env_remove` unset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    /// The subcommand and its flags (the program itself is not included).
    pub args: Vec<String>,
    /// Secret settings, by environment variable.
    pub env: Vec<(String, String)>,
    /// Variables the role would read that the plan did not set.
    pub env_remove: Vec<String>,
}

/// Why a command could not be rendered: a struct the renderer does not know how to write. A
/// programming error, caught by the plan's tests.
#[derive(Debug, thiserror::Error)]
pub enum ArgvError {
    #[error("cannot serialize the role's arguments: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("the role's arguments do not serialize as {{\"<subcommand>\": {{…}}}}")]
    Shape,
    #[error("no subcommand `{0}`")]
    NoSubcommand(String),
    #[error("argument `{0}` has no long flag: positional arguments are not rendered")]
    Positional(String),
    #[error("argument `{0}` holds a value that is neither a string, a number nor a flag")]
    Value(String),
}

/// Renders `command` as the `strata` process that runs it.
pub fn render(command: &RoleCommand) -> Result<Invocation, ArgvError> {
    let Value::Object(outer) = serde_json::to_value(command)? else {
        return Err(ArgvError::Shape);
    };
    let Some((name, Value::Object(fields))) = outer.into_iter().next() else {
        return Err(ArgvError::Shape);
    };
    let root = RoleCommand::augment_subcommands(clap::Command::new("strata"));
    let sub = root
        .find_subcommand(&name)
        .ok_or_else(|| ArgvError::NoSubcommand(name.clone()))?;
    let mut out = Invocation {
        args: vec![name.clone()],
        ..Invocation::default()
    };
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        let env = arg.get_env().and_then(|e| e.to_str()).map(str::to_string);
        let values = match fields.get(id) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| scalar(id, v))
                .collect::<Result<Vec<_>, _>>()?,
            Some(v) => vec![scalar(id, v)?],
        };
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let unset = values.is_empty()
            || (flag && values == ["false"])
            || (!flag && same_values(&values, &defaults));
        if unset {
            if let Some(env) = env {
                out.env_remove.push(env);
            }
            continue;
        }
        let long = arg
            .get_long()
            .ok_or_else(|| ArgvError::Positional(id.to_string()))?;
        match env {
            Some(env) if arg.is_hide_env_values_set() => {
                let delimiter = arg.get_value_delimiter().unwrap_or(',');
                out.env.push((env, values.join(&delimiter.to_string())));
            }
            env => {
                if let Some(env) = env {
                    out.env_remove.push(env);
                }
                if flag {
                    out.args.push(format!("--{long}"));
                } else {
                    for v in values {
                        out.args.push(format!("--{long}"));
                        out.args.push(v);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Whether rendered values equal clap's defaults, as text or as numbers (`0.0` and `0`).
fn same_values(values: &[String], defaults: &[String]) -> bool {
    !defaults.is_empty()
        && values.len() == defaults.len()
        && values.iter().zip(defaults).all(|(v, d)| {
            v == d || matches!((v.parse::<f64>(), d.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
        })
}

fn scalar(id: &str, v: &Value) -> Result<String, ArgvError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ArgvError::Value(id.to_string())),
    }
}

/// Parses an [`Invocation`] back into the command it came from, as the role would, with the
/// secrets put back on the command line (tests cannot set a process's environment safely).
#[cfg(test)]
pub fn parse_back(invocation: &Invocation) -> Result<RoleCommand, clap::Error> {
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        role: RoleCommand,
    }
    use clap::Parser as _;
    let root = RoleCommand::augment_subcommands(clap::Command::new("strata"));
    let mut args = vec!["strata".to_string()];
    args.extend(invocation.args.iter().cloned());
    if let Some(sub) = invocation
        .args
        .first()
        .and_then(|n| root.find_subcommand(n))
    {
        for (var, value) in &invocation.env {
            if let Some(arg) = sub
                .get_arguments()
                .find(|a| a.get_env().and_then(|e| e.to_str()) == Some(var.as_str()))
                && let Some(long) = arg.get_long()
            {
                args.push(format!("--{long}"));
                args.push(value.clone());
            }
        }
    }
    Cli::try_parse_from(args).map(|c| c.role)
}
