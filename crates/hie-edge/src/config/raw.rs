//! Phase one of configuration: the shape. The TOML file and the `HIE_EDGE__<SECTION>__<KEY>`
//! environment overrides are checked against [`super::schema`]: unknown sections and keys,
//! wrong types and missing required keys are all reported, each with its key path.

use std::collections::BTreeMap;

use super::Problem;
use super::schema::{self, Kind};

/// The prefix of environment overrides; sections and keys follow, separated by `__`.
pub const ENV_PREFIX: &str = "HIE_EDGE__";

/// Every key with a value of the right type (defaults filled in).
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    values: BTreeMap<(String, String), Value>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    String(String),
    Integer(i64),
    Boolean(bool),
    StringList(Vec<String>),
}

impl RawConfig {
    /// Parses TOML text, then applies overrides from `env` (pairs of variable name and value;
    /// other variables are ignored).
    pub fn parse(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<RawConfig, Vec<Problem>> {
        let (raw, problems) = RawConfig::parse_lenient(text, env);
        if problems.is_empty() { Ok(raw) } else { Err(problems) }
    }

    /// Like [`RawConfig::parse`], but also returns what could be read despite the problems
    /// (defaults standing in for bad or missing keys), so phase two can report its own problems
    /// in the same run: a user fixes every mistake at once.
    pub fn parse_lenient(text: &str, env: impl IntoIterator<Item = (String, String)>) -> (RawConfig, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut raw = RawConfig::default();
        match text.parse::<toml::Table>() {
            Ok(table) => raw.take_file(table, &mut problems),
            Err(error) => {
                problems.push(Problem { key: "(file)".to_owned(), message: format!("not valid TOML: {error}") })
            }
        }
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                raw.take_env(&name, path, value, &mut problems);
            }
        }
        for key in schema::KEYS {
            let slot = (key.section.to_owned(), key.name.to_owned());
            if raw.values.contains_key(&slot) {
                continue;
            }
            let default = match key.default {
                schema::DefaultValue::Required => {
                    let path = format!("{}.{}", key.section, key.name);
                    // A key given with the wrong type was reported already; don't add "required".
                    if !problems.iter().any(|problem| problem.key.starts_with(&path)) {
                        problems.push(Problem { key: path, message: "is required".to_owned() });
                    }
                    continue;
                }
                schema::DefaultValue::String(text) => Value::String(text.to_owned()),
                schema::DefaultValue::Integer(number) => Value::Integer(number),
                schema::DefaultValue::Boolean(flag) => Value::Boolean(flag),
                schema::DefaultValue::EmptyList => Value::StringList(Vec::new()),
            };
            raw.values.insert(slot, default);
        }
        (raw, problems)
    }

    /// A string key's value (empty when absent, which phase one rules out for known keys).
    pub fn string(&self, section: &str, name: &str) -> String {
        match self.values.get(&(section.to_owned(), name.to_owned())) {
            Some(Value::String(text)) => text.clone(),
            _ => String::new(),
        }
    }

    pub fn integer(&self, section: &str, name: &str) -> i64 {
        match self.values.get(&(section.to_owned(), name.to_owned())) {
            Some(Value::Integer(number)) => *number,
            _ => 0,
        }
    }

    /// A string-list key's values (empty when absent).
    pub fn strings(&self, section: &str, name: &str) -> Vec<String> {
        match self.values.get(&(section.to_owned(), name.to_owned())) {
            Some(Value::StringList(values)) => values.clone(),
            _ => Vec::new(),
        }
    }

    pub fn boolean(&self, section: &str, name: &str) -> bool {
        matches!(self.values.get(&(section.to_owned(), name.to_owned())), Some(Value::Boolean(true)))
    }

    fn take_file(&mut self, table: toml::Table, problems: &mut Vec<Problem>) {
        for (section, content) in table {
            let toml::Value::Table(keys) = content else {
                problems.push(Problem { key: section, message: "must be a [section] table".to_owned() });
                continue;
            };
            if !schema::sections().contains(&section.as_str()) {
                problems.push(Problem {
                    key: section.clone(),
                    message: format!("unknown section [{section}]; known: {}", schema::sections().join(", ")),
                });
                continue;
            }
            for (name, value) in keys {
                let path = format!("{section}.{name}");
                let Some(key) = schema::find(&section, &name) else {
                    problems.push(Problem { key: path, message: "unknown key".to_owned() });
                    continue;
                };
                let typed = match (key.kind, value) {
                    (Kind::String, toml::Value::String(text)) => Value::String(text),
                    (Kind::Integer, toml::Value::Integer(number)) => Value::Integer(number),
                    (Kind::Boolean, toml::Value::Boolean(flag)) => Value::Boolean(flag),
                    (Kind::StringList, toml::Value::Array(values))
                        if values.iter().all(|value| matches!(value, toml::Value::String(_))) =>
                    {
                        Value::StringList(
                            values.into_iter().filter_map(|value| value.as_str().map(str::to_owned)).collect(),
                        )
                    }
                    (kind, other) => {
                        let message = format!("expected {}, found {}", kind_name(kind), other.type_str());
                        problems.push(Problem { key: path, message });
                        continue;
                    }
                };
                self.values.insert((section.clone(), name), typed);
            }
        }
    }

    fn take_env(&mut self, variable: &str, path: &str, value: String, problems: &mut Vec<Problem>) {
        let lowered = path.to_ascii_lowercase();
        let mut parts = lowered.splitn(2, "__");
        let (section, name) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let Some(key) = schema::find(section, name) else {
            problems.push(Problem {
                key: format!("{section}.{name} (from {variable})"),
                message: "unknown key; write HIE_EDGE__<SECTION>__<KEY> for a key of the configuration".to_owned(),
            });
            return;
        };
        let typed = match key.kind {
            Kind::String => Some(Value::String(value.clone())),
            Kind::Integer => value.trim().parse().ok().map(Value::Integer),
            Kind::Boolean => match value.trim() {
                "true" => Some(Value::Boolean(true)),
                "false" => Some(Value::Boolean(false)),
                _ => None,
            },
            Kind::StringList => Some(Value::StringList(
                value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect(),
            )),
        };
        match typed {
            Some(typed) => {
                self.values.insert((section.to_owned(), name.to_owned()), typed);
            }
            None => problems.push(Problem {
                key: format!("{section}.{name} (from {variable})"),
                message: format!("expected {}, found {value:?}", kind_name(key.kind)),
            }),
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "a string",
        Kind::Integer => "an integer",
        Kind::Boolean => "true or false",
        Kind::StringList => "an array of strings",
    }
}
