//! `hearth train`'s run settings as flags, built from hearth-core's settings schema
//! (`hearth_core::train::settings::SCHEMA`): one flag per setting, `--kebab-case` of its
//! name, with its help text, its default and its range. A value is parsed by its kind here
//! and checked against its range by `RunSettings::validate`, which names the setting.

use clap::builder::PossibleValuesParser;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use hearth_core::train::settings::{describe, Kind, RunSettings, Setting, SCHEMA};
use serde_json::Value;

/// Every run setting (`hearth train`).
#[derive(Clone, Debug)]
pub struct SettingsArgs(pub RunSettings);

/// The settings of the "data" group only (`hearth eval`: the template, the max sequence
/// length, loss on the prompt); the others keep their defaults.
#[derive(Clone, Debug)]
pub struct DataSettingsArgs(pub RunSettings);

fn all(_: &Setting) -> bool {
    true
}

fn data_only(s: &Setting) -> bool {
    s.group == "data"
}

/// The flag of a setting: `max_seq_len` → `max-seq-len`.
pub fn flag(setting: &str) -> String {
    setting.replace('_', "-")
}

/// One flag per setting that `keep` selects.
fn augment(cmd: Command, keep: fn(&Setting) -> bool) -> Command {
    let defaults = RunSettings::default().to_json();
    SCHEMA.iter().filter(|s| keep(s)).fold(cmd, |cmd, s| {
        let default = match &defaults[s.name] {
            Value::String(t) if t.is_empty() => String::new(),
            Value::String(t) => format!(" [default: {t}]"),
            Value::Bool(_) => String::new(),
            other => format!(" [default: {other}]"),
        };
        let range = match s.kind {
            Kind::Int { min } if min > 0 => format!(" ({})", describe(s.kind)),
            Kind::Float { .. } => format!(" ({})", describe(s.kind)),
            _ => String::new(),
        };
        let arg = Arg::new(s.name).long(flag(s.name)).help(format!("{}{range}{default}", s.help));
        let arg = if s.kind == Kind::Bool { arg } else { arg.value_name(s.name.to_uppercase()) };
        cmd.arg(match s.kind {
            Kind::Bool => arg.action(ArgAction::SetTrue),
            Kind::Int { .. } => arg.value_parser(clap::value_parser!(u64)),
            Kind::Float { .. } => arg.value_parser(clap::value_parser!(f64)).allow_negative_numbers(true),
            Kind::Choice(options) => arg.value_parser(PossibleValuesParser::new(options.iter().copied())),
            Kind::Text => arg,
        })
    })
}

/// The settings the flags selected by `keep` gave, the defaults for the rest.
fn from_matches(m: &ArgMatches, keep: fn(&Setting) -> bool) -> Result<RunSettings, clap::Error> {
    let mut v = RunSettings::default().to_json();
    for s in SCHEMA.iter().filter(|s| keep(s)) {
        let given = match s.kind {
            Kind::Bool => m.get_flag(s.name).then_some(Value::Bool(true)),
            Kind::Int { .. } => m.get_one::<u64>(s.name).map(|&x| x.into()),
            Kind::Float { .. } => m.get_one::<f64>(s.name).map(|&x| x.into()),
            Kind::Choice(_) | Kind::Text => m.get_one::<String>(s.name).map(|x| x.clone().into()),
        };
        if let Some(x) = given {
            v[s.name] = x;
        }
    }
    RunSettings::from_value(v).map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))
}

/// `Args` for a wrapper of RunSettings whose flags `keep` selects.
macro_rules! settings_args {
    ($name:ident, $keep:ident) => {
        impl Args for $name {
            fn augment_args(cmd: Command) -> Command {
                augment(cmd, $keep)
            }

            fn augment_args_for_update(cmd: Command) -> Command {
                augment(cmd, $keep)
            }
        }

        impl FromArgMatches for $name {
            fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
                from_matches(m, $keep).map($name)
            }

            fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
                *self = Self::from_arg_matches(m)?;
                Ok(())
            }
        }
    };
}

settings_args!(SettingsArgs, all);
settings_args!(DataSettingsArgs, data_only);
