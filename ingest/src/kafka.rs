//! One Kafka client configuration for every client testlake opens — the ingest's consumer, the
//! landed-notice publisher and follower, the admin client, the producers of `testlake produce`
//! and `testlake junit`: the bootstrap servers and the librdkafka properties (security,
//! timeouts), merged here from their sources with no I/O.
//!
//! Sources, later over earlier: a properties file ([`Properties::parse_file`]), `TESTLAKE_KAFKA_*`
//! environment variables ([`Properties::from_env`]), `--kafka-property` flags
//! ([`Properties::parse_flags`]). Each client sets its own properties first (the ingest's
//! prefetch bound, a producer's linger), then these, so a user's property overrides a client's
//! own ([`KafkaConfig::client`]).
//!
//! Secret values ([`is_secret`]) are never shown: `Debug` and `Display` print them as
//! `[hidden]`, the errors here never quote a line or a value, and client creation's errors are
//! masked too ([`KafkaConfig::create`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult};

/// Environment variables of this prefix are librdkafka properties: `TESTLAKE_KAFKA_SASL_PASSWORD`
/// is `sasl.password` (lower case, `_` for `.`, `__` for `_`).
pub const ENV_PREFIX: &str = "TESTLAKE_KAFKA_";
/// The one `TESTLAKE_KAFKA_*` variable that is not a property: the properties file.
pub const PROPERTIES_FILE_ENV: &str = "TESTLAKE_KAFKA_PROPERTIES";
/// Where no source names bootstrap servers.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// What a secret value prints as.
pub const HIDDEN: &str = "[hidden]";

/// Whether a property's value is a secret: passwords and passphrases, client secrets, private
/// keys, JAAS configurations (they hold passwords) and OAUTHBEARER tokens.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passphrase", "secret", "sasl.jaas", "key.pem", "ssl_key", "oauthbearer.config"]
        .iter()
        .any(|s| key.contains(s))
        || (key.contains("token") && !key.contains("endpoint"))
}

/// A problem with a source of properties. The messages name the source and line, never the
/// text: it may hold a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PropertyError {
    #[error("{origin}: expected KEY=VALUE (not shown: it may hold a secret)")]
    Malformed { origin: String },
    #[error("{variable} is not valid UTF-8")]
    NotUtf8 { variable: String },
    #[error("{origin}: {key} is set by testlake for each client ({instead})")]
    Reserved { origin: String, key: String, instead: &'static str },
    #[error(
        "sasl.jaas.config: only PlainLoginModule and ScramLoginModule with username and password are \
         understood; set librdkafka's sasl.username and sasl.password (or sasl.oauthbearer.*) instead"
    )]
    Jaas,
}

/// Properties each client sets itself; a source that sets one is refused, saying what to use.
const RESERVED: &[(&str, &str)] =
    &[("group.id", "the ingest's group is --group; the notice follower takes a private group of its own")];

/// librdkafka properties by name. `Debug` and `Display` hide secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every property of `over` replaces the same one here.
    pub fn overlay(mut self, over: Properties) -> Self {
        self.0.extend(over.0);
        self
    }

    /// A librdkafka (or Java client) properties file: `key=value` lines, `#` or `!` comments,
    /// blank lines; whitespace around keys and values is dropped; no escapes or continuation
    /// lines. A later line wins. `origin` (the file's name) prefixes errors.
    pub fn parse_file(text: &str, origin: &str) -> Result<Self, PropertyError> {
        let mut properties = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (key, value) =
                split(line).ok_or_else(|| PropertyError::Malformed { origin: format!("{origin}:{}", n + 1) })?;
            properties.set(key, value);
        }
        Ok(properties)
    }

    /// `--kafka-property KEY=VALUE` flags, in order (a later one wins).
    pub fn parse_flags<S: AsRef<str>>(flags: &[S]) -> Result<Self, PropertyError> {
        let mut properties = Self::default();
        for flag in flags {
            let (key, value) =
                split(flag.as_ref()).ok_or_else(|| PropertyError::Malformed { origin: "--kafka-property".into() })?;
            properties.set(key, value);
        }
        Ok(properties)
    }

    /// The `TESTLAKE_KAFKA_*` variables among `vars` (the process's: `std::env::vars_os()`),
    /// except [`PROPERTIES_FILE_ENV`]: `TESTLAKE_KAFKA_SASL_PASSWORD` is `sasl.password`,
    /// `TESTLAKE_KAFKA_LOG__LEVEL` is `log_level`.
    pub fn from_env(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Self, PropertyError> {
        let mut properties = Self::default();
        for (name, value) in vars {
            let Some(name) = name.to_str() else { continue };
            let Some(property) = name.strip_prefix(ENV_PREFIX) else { continue };
            if name == PROPERTIES_FILE_ENV {
                continue;
            }
            if property.is_empty() {
                return Err(PropertyError::Malformed { origin: name.to_owned() });
            }
            let value = value.into_string().map_err(|_| PropertyError::NotUtf8 { variable: name.to_owned() })?;
            let key = property.to_ascii_lowercase().replace("__", "\0").replace('_', ".").replace('\0', "_");
            properties.set(key, value.trim());
        }
        Ok(properties)
    }
}

/// `key=value` with both sides trimmed and a non-empty key.
fn split(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.contains(char::is_whitespace)).then_some((key, value.trim()))
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter().map(|(k, v)| (k, shown(k, v)))).finish()
    }
}

/// `key=value` pairs separated by spaces, secrets hidden: what a log line shows.
impl fmt::Display for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, value)) in self.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{key}={}", shown(key, value))?;
        }
        Ok(())
    }
}

fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) { HIDDEN } else { value }
}

/// How every Kafka client of a process connects: bootstrap servers and librdkafka properties.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Every other property, applied after each client's own.
    pub properties: Properties,
}

impl KafkaConfig {
    /// A broker without security settings (a local broker, tests).
    pub fn new(brokers: impl Into<String>) -> Self {
        Self { brokers: brokers.into(), properties: Properties::default() }
    }

    /// The configuration of `sources`, later over earlier (file, environment, flags). Bootstrap
    /// servers: `brokers` (the `--brokers` flag or `TESTLAKE_BROKERS`) when given, else the
    /// sources' `bootstrap.servers`, else [`DEFAULT_BROKERS`]. A Java client's
    /// `sasl.jaas.config` for PLAIN or SCRAM becomes `sasl.username` and `sasl.password`
    /// (unless those are set).
    pub fn from_sources(
        brokers: Option<&str>,
        sources: impl IntoIterator<Item = (String, Properties)>,
    ) -> Result<Self, PropertyError> {
        let mut merged = Properties::default();
        for (origin, properties) in sources {
            if let Some((key, instead)) = RESERVED.iter().find(|(key, _)| properties.get(key).is_some()) {
                return Err(PropertyError::Reserved { origin, key: (*key).to_owned(), instead });
            }
            merged = merged.overlay(properties);
        }
        if let Some(jaas) = merged.remove("sasl.jaas.config") {
            let (username, password) = parse_jaas(&jaas).ok_or(PropertyError::Jaas)?;
            for (key, value) in [("sasl.username", username), ("sasl.password", password)] {
                if merged.get(key).is_none() {
                    merged.set(key, value);
                }
            }
        }
        let from_properties = merged.remove("bootstrap.servers");
        let brokers = brokers.map(str::to_owned).or(from_properties).unwrap_or_else(|| DEFAULT_BROKERS.to_owned());
        Ok(Self { brokers, properties: merged })
    }

    /// The configuration of one client: the bootstrap servers, the client's `own` properties,
    /// then the shared ones over them.
    pub fn client(&self, own: &[(&str, &str)]) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.brokers);
        for (key, value) in own {
            client.set(*key, *value);
        }
        for (key, value) in self.properties.iter() {
            client.set(key, value);
        }
        client
    }

    /// Creates a client of [`Self::client`]; an error of librdkafka's about a secret property
    /// has its value hidden.
    pub fn create<T: FromClientConfig>(&self, own: &[(&str, &str)]) -> KafkaResult<T> {
        self.client(own).create().map_err(masked)
    }

    /// [`Self::create`] with a context.
    pub fn create_with_context<C: ClientContext, T: FromClientConfigAndContext<C>>(
        &self,
        own: &[(&str, &str)],
        context: C,
    ) -> KafkaResult<T> {
        self.client(own).create_with_context(context).map_err(masked)
    }
}

impl Default for KafkaConfig {
    /// [`DEFAULT_BROKERS`], nothing else.
    fn default() -> Self {
        Self::new(DEFAULT_BROKERS)
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig").field("brokers", &self.brokers).field("properties", &self.properties).finish()
    }
}

/// A client-creation error with a secret property's value hidden: librdkafka's message quotes
/// an invalid value (`Invalid value "…" for configuration property "…"`).
pub fn masked(error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientConfig(code, description, key, value) if is_secret(&key) => {
            let description = if value.is_empty() { description } else { description.replace(&value, HIDDEN) };
            KafkaError::ClientConfig(code, description, key, HIDDEN.to_owned())
        }
        other => other,
    }
}

/// The username and password of a Java client's JAAS line for PLAIN or SCRAM:
/// `org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";`.
fn parse_jaas(jaas: &str) -> Option<(String, String)> {
    let jaas = jaas.trim().trim_end_matches(';');
    let (module, options) = jaas.split_once(char::is_whitespace)?;
    if !(module.ends_with(".PlainLoginModule") || module.ends_with(".ScramLoginModule")) {
        return None;
    }
    let mut rest = options.trim_start().strip_prefix("required")?;
    let (mut username, mut password) = (None, None);
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (name, after) = rest.split_once('=')?;
        let after = after.trim_start();
        // Values are quoted ("…" or '…') or bare words.
        let (value, tail) = match after.chars().next()? {
            quote @ ('"' | '\'') => after[1..].split_once(quote)?,
            _ => after.split_once(char::is_whitespace).unwrap_or((after, "")),
        };
        match name.trim() {
            "username" => username = Some(value.to_owned()),
            "password" => password = Some(value.to_owned()),
            _ => {}
        }
        rest = tail;
    }
    Some((username?, password?))
}

#[cfg(test)]
mod tests;
