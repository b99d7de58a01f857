//! The configuration file: TOML, one section per stage, under environment variables and flags
//! (flag > env > file > default).
//!
//! Every key is a flag, so there is one list of settings, not two: the section is the flag's help
//! heading (`Ingest` → `[ingest]`), the key its long name without the section's name in front,
//! `-` written `_` (`--flush-rows` → `[ingest] flush_rows`, `--compact-every` → `[compact]
//! every`). A file's values become the flags' defaults, so clap checks them as it checks a flag's
//! and a flag or variable still wins. One file serves every command: each takes the keys it has
//! and leaves the others; a key no command has is refused, naming the file, line and key.
//!
//! `[kafka.properties]` is a table of librdkafka properties, under `--kafka-properties`, the
//! `TESTLAKE_KAFKA_*` variables and `--kafka-property`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::builder::OsStr;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};
use toml_edit::{Item, Value};

/// The variable naming the configuration file (as `--config` does).
pub const CONFIG_ENV: &str = "TESTLAKE_CONFIG";

/// The hidden flag that carries `[kafka.properties]` into the command line's parser.
pub const FILE_PROPERTIES_FLAG: &str = "config-kafka-property";

/// Keys whose name the rule does not give: (long flag, key).
const RENAMED: [(&str, &str); 5] = [
    ("lake", "url"),
    ("probe-listen", "listen"),
    ("kafka-properties", "properties_file"),
    (FILE_PROPERTIES_FLAG, "properties"),
    ("allowed-host", "allowed_hosts"),
];

/// Flags with a heading and a variable that are not keys: set per run, never from a file.
const NOT_KEYS: [&str; 1] = ["kafka-property"];

/// Where an argument lives in the file: `[section] key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub section: String,
    pub key: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.section, self.key)
    }
}

/// The key of an argument, if it has one: a stage's setting, that is a flag under a heading,
/// with a `TESTLAKE_*` variable, not hidden (the file's Kafka properties aside). A command's own
/// flags (`testlake sql --max-rows`) have no variable.
pub fn key_of(arg: &Arg) -> Option<Key> {
    let section = arg.get_help_heading()?.to_lowercase();
    let long = arg.get_long()?;
    let setting = arg.get_env().is_some() && !arg.is_hide_set() && !NOT_KEYS.contains(&long);
    if !(setting || long == FILE_PROPERTIES_FLAG) {
        return None;
    }
    let key = match RENAMED.iter().find(|(flag, _)| *flag == long) {
        Some((_, key)) => (*key).to_owned(),
        None => long.strip_prefix(&format!("{section}-")).unwrap_or(long).replace('-', "_"),
    };
    Some(Key { section, key })
}

/// Every key of `cli` (its own arguments and its subcommands'), with the arguments that carry it
/// and the commands each belongs to (`""`: the top level).
pub fn keys(cli: &Command) -> BTreeMap<Key, Vec<(String, Arg)>> {
    let mut keys: BTreeMap<Key, Vec<(String, Arg)>> = BTreeMap::new();
    let mut visit = |command: &str, cmd: &Command| {
        for arg in cmd.get_arguments() {
            if let Some(key) = key_of(arg) {
                keys.entry(key).or_default().push((command.to_owned(), arg.clone()));
            }
        }
    };
    visit("", cli);
    for sub in cli.get_subcommands() {
        visit(sub.get_name(), sub);
    }
    keys
}

/// One value of the file, with the line it is on.
#[derive(Debug, Clone)]
pub struct Setting {
    pub key: Key,
    /// The value as flags would give it: one string per value (an array gives several).
    pub values: Vec<String>,
    pub line: usize,
}

/// A parsed configuration file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub settings: Vec<Setting>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading the configuration {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses `text` (read from `path`, named in errors): every key with its values and line;
    /// whether the keys exist is [`apply`]'s to say.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let at = |span: Option<std::ops::Range<usize>>| span.map_or(0, |s| text[..s.start].matches('\n').count() + 1);
        let document = toml_edit::Document::parse(text)
            .map_err(|e| anyhow!("{}:{}: not TOML: {}", path.display(), at(e.span()), e.message()))?;
        let mut settings = Vec::new();
        for (section, item) in document.as_table().iter() {
            let line = at(document.as_table().key(section).and_then(|k| k.span()));
            let Item::Table(table) = item else {
                bail!(
                    "{}:{line}: `{section}` is not a section: every key belongs to one, e.g. [ingest]",
                    path.display()
                );
            };
            for (name, item) in table.iter() {
                let key = Key { section: section.to_owned(), key: name.to_owned() };
                let line = at(table.key(name).and_then(|k| k.span()));
                let values = match (key.section.as_str(), key.key.as_str(), item) {
                    ("kafka", "properties", item) if item.is_table_like() => item
                        .as_table_like()
                        .expect("a table")
                        .iter()
                        .map(|(name, value)| match value.as_value().and_then(scalar) {
                            Some(value) => Ok(format!("{name}={value}")),
                            None => Err(anyhow!(
                                "{}:{}: `kafka.properties.{name}`: a librdkafka property is a string, number or boolean",
                                path.display(),
                                item.as_table_like()
                                    .and_then(|t| t.key(name))
                                    .and_then(|k| k.span())
                                    .map_or(line, |s| at(Some(s)))
                            )),
                        })
                        .collect::<Result<_>>()?,
                    (_, _, Item::Value(Value::Array(array))) => array
                        .iter()
                        .map(|v| scalar(v).ok_or_else(|| anyhow!("{}:{line}: `{key}`: arrays hold plain values", path.display())))
                        .collect::<Result<_>>()?,
                    (_, _, Item::Value(value)) => vec![
                        scalar(value)
                            .ok_or_else(|| anyhow!("{}:{line}: `{key}`: expected a plain value", path.display()))?,
                    ],
                    _ => bail!("{}:{line}: `{key}` is a table; sections are one level deep", path.display()),
                };
                settings.push(Setting { key, values, line });
            }
        }
        Ok(Self { path: path.to_owned(), settings })
    }

    /// The setting of `key`, if the file has one.
    pub fn get(&self, key: &Key) -> Option<&Setting> {
        self.settings.iter().find(|s| &s.key == key)
    }
}

/// A string, number, boolean or date as a flag would spell it.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.value().clone()),
        Value::Integer(i) => Some(i.value().to_string()),
        Value::Float(f) => Some(f.value().to_string()),
        Value::Boolean(b) => Some(b.value().to_string()),
        Value::Datetime(d) => Some(d.value().to_string()),
        Value::Array(_) | Value::InlineTable(_) => None,
    }
}

/// `cli` with the file's values as its arguments' defaults. Refuses a key no command has and a
/// value its argument does not take, naming the file, line and key.
pub fn apply(mut cli: Command, file: &ConfigFile) -> Result<Command> {
    let known = keys(&cli);
    for setting in &file.settings {
        let place = format!("{}:{}", file.path.display(), setting.line);
        let Some(args) = known.get(&setting.key) else {
            let sections: std::collections::BTreeSet<&str> = known.keys().map(|k| k.section.as_str()).collect();
            let hint = if sections.contains(setting.key.section.as_str()) {
                let in_section: Vec<&str> =
                    known.keys().filter(|k| k.section == setting.key.section).map(|k| k.key.as_str()).collect();
                format!("[{}] has {}", setting.key.section, in_section.join(", "))
            } else {
                format!("the sections are {}", sections.into_iter().collect::<Vec<_>>().join(", "))
            };
            bail!("{place}: unknown key `{}` ({hint})", setting.key);
        };
        let (_, arg) = &args[0];
        if !is_list(arg) && setting.values.len() != 1 {
            bail!("{place}: `{}` takes one value, not a list", setting.key);
        }
        for value in &setting.values {
            check(arg, value).map_err(|e| anyhow!("{place}: `{}`: {}", setting.key, clap_message(&e)))?;
        }
        let defaults: Vec<OsStr> = setting.values.iter().cloned().map(OsStr::from).collect();
        for (command, arg) in args {
            let set = |arg: Arg| arg.default_values(defaults.clone());
            cli = if command.is_empty() {
                cli.mut_arg(arg.get_id(), set)
            } else {
                cli.mut_subcommand(command, |sub| sub.mut_arg(arg.get_id(), set))
            };
        }
    }
    Ok(cli)
}

/// Whether `arg` takes `value`, as its flag would: parsed alone, so its checks are the flag's.
fn check(arg: &Arg, value: &str) -> Result<(), clap::Error> {
    let long = arg.get_long().unwrap_or_default();
    let alone = Arg::new(arg.get_id().clone())
        .long(long.to_owned())
        .action(arg.get_action().clone())
        .value_parser(arg.get_value_parser().clone())
        .num_args(1)
        .allow_negative_numbers(true);
    Command::new("testlake").arg(alone).try_get_matches_from(["testlake".to_owned(), format!("--{long}={value}")])?;
    Ok(())
}

/// A clap error's message without its "error: " and usage lines.
fn clap_message(error: &clap::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// The configuration file named by `--config FILE`, `--config=FILE` or [`CONFIG_ENV`], read from
/// the raw arguments: it has to be applied before they are parsed.
pub fn path_from_args(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()).map(PathBuf::from)
}

/// `testlake config show`: every key of the command `argv` runs (default `all`), its value and
/// where the value comes from, as TOML a file could hold; secrets masked.
pub fn show(cli: &Command, file: Option<&ConfigFile>, argv: &[String]) -> Result<String> {
    let argv: Vec<&str> = if argv.is_empty() { vec!["all"] } else { argv.iter().map(String::as_str).collect() };
    let matches = cli.clone().try_get_matches_from(std::iter::once("testlake").chain(argv.iter().copied()))?;
    let (name, sub) = matches.subcommand().ok_or_else(|| anyhow!("name a command, e.g. `all` or `ingest`"))?;
    let command = cli.find_subcommand(name).expect("a parsed subcommand");
    let mut lines: BTreeMap<Key, String> = BTreeMap::new();
    for (cmd, matches) in [(cli, &matches), (command, sub)] {
        for arg in cmd.get_arguments() {
            let Some(key) = key_of(arg) else { continue };
            lines.insert(key.clone(), describe(&key, arg, matches, file));
        }
    }
    // The command, not its arguments: a flag may carry a secret.
    let mut out = format!("# The effective configuration of `testlake {name}`.\n");
    let mut section = "";
    for (key, line) in &lines {
        if key.section != section {
            section = &key.section;
            let _ = write!(out, "\n[{section}]\n");
        }
        out.push_str(line);
    }
    Ok(out)
}

/// `key = value  # source`, masked when secret; commented out when unset.
fn describe(key: &Key, arg: &Arg, matches: &ArgMatches, file: Option<&ConfigFile>) -> String {
    let id = arg.get_id().as_str();
    let values: Vec<String> = matches
        .get_raw(id)
        .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let source = match matches.value_source(id) {
        Some(ValueSource::CommandLine) => "flag".to_owned(),
        Some(ValueSource::EnvVariable) => {
            format!("env {}", arg.get_env().map(|e| e.to_string_lossy()).unwrap_or_default())
        }
        Some(ValueSource::DefaultValue) => match file.and_then(|f| f.get(key).map(|s| (f, s))) {
            Some((file, setting)) => format!("file {}:{}", file.path.display(), setting.line),
            None => "default".to_owned(),
        },
        _ => "unset".to_owned(),
    };
    let secret = |name: &str| arg.is_hide_env_values_set() || testlake_ingest::kafka::is_secret(name);
    if key.section == "kafka" && key.key == "properties" {
        let items: Vec<String> = values
            .iter()
            .filter_map(|v| v.split_once('='))
            .map(|(name, value)| {
                format!("{} = {}", toml_string(name), toml_value(if secret(name) { "***" } else { value }))
            })
            .collect();
        let mut out = format!("properties = {{ {} }}  # {source}\n", items.join(", "));
        // The other sources, each over the file's table: variables, then flags.
        let env = testlake_ingest::kafka::Properties::from_env(std::env::vars_os()).unwrap_or_default();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let flags: Vec<(String, String)> = matches
            .try_get_raw("kafka_property")
            .ok()
            .flatten()
            .into_iter()
            .flatten()
            .filter_map(|v| v.to_string_lossy().split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        for (from, set) in [("TESTLAKE_KAFKA_* variables", env), ("--kafka-property", flags)] {
            if !set.is_empty() {
                let shown: Vec<String> = set
                    .iter()
                    .map(|(name, value)| format!("{name}={}", if secret(name) { "***" } else { value }))
                    .collect();
                let _ = writeln!(out, "# and from {from}, over it: {}", shown.join(", "));
            }
        }
        return out;
    }
    let shown: Vec<String> =
        values.iter().map(|v| toml_value(if secret(&key.key) && !v.is_empty() { "***" } else { v })).collect();
    match shown.as_slice() {
        [] if is_list(arg) => format!("{} = []  # {source}\n", key.key),
        [] => format!("# {} is not set\n", key.key),
        [one] if !is_list(arg) => format!("{} = {one}  # {source}\n", key.key),
        many => format!("{} = [{}]  # {source}\n", key.key, many.join(", ")),
    }
}

/// Whether an argument takes several values (a file gives them as an array).
fn is_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), clap::ArgAction::Append)
}

/// A value as TOML: numbers and booleans bare, anything else a string.
fn toml_value(value: &str) -> String {
    let bare = value.parse::<i64>().is_ok()
        || (value.parse::<f64>().is_ok_and(f64::is_finite) && value.contains('.'))
        || value == "true"
        || value == "false";
    if bare { value.to_owned() } else { toml_string(value) }
}

fn toml_string(value: &str) -> String {
    Value::from(value).to_string().trim().to_owned()
}

/// `testlake config reference`: every key as a Markdown table, from the flags themselves.
pub fn reference(cli: &Command) -> String {
    let mut out =
        String::from("| key | flag | variable | default | commands | what it does |\n|---|---|---|---|---|---|\n");
    for (key, args) in keys(cli) {
        let (_, arg) = &args[0];
        let commands: Vec<&str> =
            args.iter().map(|(command, _)| if command.is_empty() { "every" } else { command.as_str() }).collect();
        let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        let flag =
            if arg.is_hide_set() { String::new() } else { format!("`--{}`", arg.get_long().unwrap_or_default()) };
        let env = arg.get_env().map(|e| format!("`{}`", e.to_string_lossy())).unwrap_or_default();
        let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "| `[{}] {}` | {flag} | {env} | {} | {} | {} |",
            key.section,
            key.key,
            if defaults.is_empty() { String::new() } else { format!("`{}`", defaults.join(",")) },
            commands.join(", "),
            help.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod tests;
