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
    /// `[[partners]]` entries, in file order (environment overrides by index).
    partners: Vec<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
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
        raw.fill_partner_defaults(&mut problems);
        for key in schema::KEYS {
            let slot = (key.section.to_owned(), key.name.to_owned());
            if raw.values.contains_key(&slot) {
                continue;
            }
            match key.default.value() {
                Some(default) => {
                    raw.values.insert(slot, default);
                }
                None => require(format!("{}.{}", key.section, key.name), &mut problems),
            }
        }
        (raw, problems)
    }

    /// The number of `[[partners]]` entries.
    pub fn n_partners(&self) -> usize {
        self.partners.len()
    }

    /// A string key of partner `index` (empty when absent).
    pub fn partner_string(&self, index: usize, name: &str) -> String {
        match self.partners.get(index).and_then(|entry| entry.get(name)) {
            Some(Value::String(text)) => text.clone(),
            _ => String::new(),
        }
    }

    /// A string-list key of partner `index` (empty when absent).
    pub fn partner_strings(&self, index: usize, name: &str) -> Vec<String> {
        match self.partners.get(index).and_then(|entry| entry.get(name)) {
            Some(Value::StringList(values)) => values.clone(),
            _ => Vec::new(),
        }
    }

    fn fill_partner_defaults(&mut self, problems: &mut Vec<Problem>) {
        for (index, entry) in self.partners.iter_mut().enumerate() {
            for key in schema::PARTNER_KEYS {
                if entry.contains_key(key.name) {
                    continue;
                }
                match key.default.value() {
                    Some(default) => {
                        entry.insert(key.name.to_owned(), default);
                    }
                    None => require(format!("partners[{index}].{}", key.name), problems),
                }
            }
        }
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
            if section == schema::PARTNERS {
                self.take_partners(content, problems);
                continue;
            }
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
                let Some(typed) = typed_value(key.kind, value, &path, problems) else { continue };
                self.values.insert((section.clone(), name), typed);
            }
        }
    }

    fn take_partners(&mut self, content: toml::Value, problems: &mut Vec<Problem>) {
        let toml::Value::Array(entries) = content else {
            problems.push(Problem {
                key: schema::PARTNERS.to_owned(),
                message: "must be an array of tables: write [[partners]] for each partner".to_owned(),
            });
            return;
        };
        for (index, entry) in entries.into_iter().enumerate() {
            let toml::Value::Table(keys) = entry else {
                problems.push(Problem { key: format!("partners[{index}]"), message: "must be a table".to_owned() });
                continue;
            };
            let mut values = BTreeMap::new();
            for (name, value) in keys {
                let path = format!("partners[{index}].{name}");
                let Some(key) = schema::find_partner_key(&name) else {
                    problems.push(Problem { key: path, message: "unknown key".to_owned() });
                    continue;
                };
                if let Some(typed) = typed_value(key.kind, value, &path, problems) {
                    values.insert(name, typed);
                }
            }
            self.partners.push(values);
        }
    }

    /// `HIE_EDGE__PARTNERS__<N>__<KEY>`: a key of partner N (0-based); N may be one past the last
    /// partner of the file, which adds one.
    fn take_partner_env(&mut self, variable: &str, rest: &str, value: String, problems: &mut Vec<Problem>) {
        let mut parts = rest.splitn(2, "__");
        let (index, name) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let index = match index.parse::<usize>() {
            Ok(index) if index <= self.partners.len() => index,
            _ => {
                problems.push(Problem {
                    key: format!("partners (from {variable})"),
                    message: format!(
                        "write HIE_EDGE__PARTNERS__<N>__<KEY> with N from 0 to {} (the file has {} partner(s))",
                        self.partners.len(),
                        self.partners.len()
                    ),
                });
                return;
            }
        };
        let Some(key) = schema::find_partner_key(name) else {
            problems.push(Problem {
                key: format!("partners[{index}].{name} (from {variable})"),
                message: "unknown key".to_owned(),
            });
            return;
        };
        let Some(typed) = env_value(key.kind, &value) else {
            problems.push(Problem {
                key: format!("partners[{index}].{name} (from {variable})"),
                message: format!("expected {}, found {value:?}", kind_name(key.kind)),
            });
            return;
        };
        if index == self.partners.len() {
            self.partners.push(BTreeMap::new());
        }
        self.partners[index].insert(name.to_owned(), typed);
    }

    fn take_env(&mut self, variable: &str, path: &str, value: String, problems: &mut Vec<Problem>) {
        let lowered = path.to_ascii_lowercase();
        let mut parts = lowered.splitn(2, "__");
        let (section, name) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        if section == schema::PARTNERS {
            self.take_partner_env(variable, name, value, problems);
            return;
        }
        let Some(key) = schema::find(section, name) else {
            problems.push(Problem {
                key: format!("{section}.{name} (from {variable})"),
                message: "unknown key; write HIE_EDGE__<SECTION>__<KEY> for a key of the configuration".to_owned(),
            });
            return;
        };
        match env_value(key.kind, &value) {
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

/// A TOML value of the kind a key takes; a problem (at `path`) otherwise.
fn typed_value(kind: Kind, value: toml::Value, path: &str, problems: &mut Vec<Problem>) -> Option<Value> {
    match (kind, value) {
        (Kind::String, toml::Value::String(text)) => Some(Value::String(text)),
        (Kind::Integer, toml::Value::Integer(number)) => Some(Value::Integer(number)),
        (Kind::Boolean, toml::Value::Boolean(flag)) => Some(Value::Boolean(flag)),
        (Kind::StringList, toml::Value::Array(values))
            if values.iter().all(|value| matches!(value, toml::Value::String(_))) =>
        {
            Some(Value::StringList(values.into_iter().filter_map(|value| value.as_str().map(str::to_owned)).collect()))
        }
        (kind, other) => {
            let message = format!("expected {}, found {}", kind_name(kind), other.type_str());
            problems.push(Problem { key: path.to_owned(), message });
            None
        }
    }
}

/// An environment variable's text as the kind a key takes (lists comma-separated).
fn env_value(kind: Kind, value: &str) -> Option<Value> {
    match kind {
        Kind::String => Some(Value::String(value.to_owned())),
        Kind::Integer => value.trim().parse().ok().map(Value::Integer),
        Kind::Boolean => match value.trim() {
            "true" => Some(Value::Boolean(true)),
            "false" => Some(Value::Boolean(false)),
            _ => None,
        },
        Kind::StringList => Some(Value::StringList(
            value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect(),
        )),
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

/// Reports a required key as missing, unless a problem with it (a wrong type, say) was reported
/// already: one key, one message.
fn require(path: String, problems: &mut Vec<Problem>) {
    if !problems.iter().any(|problem| problem.key.starts_with(&path)) {
        problems.push(Problem { key: path, message: "is required".to_owned() });
    }
}
