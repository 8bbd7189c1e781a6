//! Slots that plug in: a target slot the engine never names. Such a slot says everything the
//! engine needs of it through [`Slot`], and is listed once, in [`crate::targets::PLUGGED`]:
//! its key in `targets { }`, the settings block of each implementation, the resources each
//! tenant gets, and the target that makes them. Its kinds and their facts are registered in
//! its own folder (`inventory::submit!` beside its `KindFacts`). The engine then compiles,
//! refreshes, diffs, applies, exports and purges them as it does any other kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::model::attrs::Attrs;
use crate::model::resource::{Key, Kind, Resource};
use crate::model::tenant::{Effective, TenantSpec};
use crate::repo::hcl_file::{self, Spans};
use crate::targets::provider::Provider;

/// A slot that plugs in.
pub trait Slot: Sync {
    /// Its key in `targets { }`: `quotas`.
    fn key(&self) -> &'static str;
    /// That key as a person finds it in the config: `targets.quotas`.
    fn setting(&self) -> &'static str;
    /// The kinds its targets serve, each with a rank after the bucket's and before rendered
    /// files' (71 to 99), so they are applied after a tenant's slice and bucket and before its
    /// files. `PLUGGED` lists the slots in that order (a test holds it to it).
    fn kinds(&self) -> &'static [Kind];
    /// What it may be set to besides `none`, the default: `["redis"]`. The settings of each
    /// are a block of its name (`redis { … }`).
    fn implementations(&self) -> &'static [&'static str];
    /// The JSON schema of `implementation`'s settings block, for `schema config`.
    fn settings_schema(&self, implementation: &str) -> serde_json::Value;
    /// Reads a block the slot is not set to, reporting only what does not read (a value of
    /// the wrong type, a key it does not have): its checks wait until it is used, as the
    /// older slots' blocks' do.
    fn read_unused(
        &self,
        implementation: &str,
        block: hcl::Value,
        spans: &Spans,
    ) -> Vec<Diagnostic>;
    /// Reads the settings of `implementation` from its block (`None` when the file has
    /// none) and checks them, reporting every problem where it is written
    /// (`hcl_file::read_block`).
    fn configure(
        &self,
        implementation: &str,
        block: Option<hcl::Value>,
        spans: &Spans,
    ) -> Result<Arc<dyn Plugged>, Vec<Diagnostic>>;
}

/// A slot as the config set it up.
pub trait Plugged: Send + Sync + std::fmt::Debug {
    /// The slot's key in `targets { }`.
    fn slot(&self) -> &'static str;
    /// The keys every tenant gets from it, known from the repo alone (refresh starts before
    /// compiling).
    fn keys(&self) -> Vec<Key>;
    /// What is wrong with the names the tenants would get (one too long, two the same), so
    /// `validate` finds it before any call.
    fn check_tenants(&self, tenants: &[TenantSpec]) -> Vec<Diagnostic>;
    /// Requests its target has sent so far, for benchmarks.
    fn calls(&self) -> usize {
        0
    }
    /// A tenant's resources, in `keys`' order.
    fn desired(&self, tenant: &TenantInputs<'_>) -> Vec<Resource>;
    /// Its target. Made once, when the config is read; it connects on first use.
    fn target(&self) -> Arc<dyn Provider>;
    /// The tenant's login on its target, as `credentials` prints it (a URL holding the
    /// password `password` derives for the login's name), if the tenant has one there.
    fn login(
        &self,
        _recorded: &BTreeMap<Key, Attrs>,
        _password: &dyn Fn(&str) -> String,
    ) -> Option<String> {
        None
    }
}

/// What a plugged slot compiles a tenant's resources from.
pub struct TenantInputs<'a> {
    pub tenant: &'a Effective,
    /// The password a login called by the given name gets (derived from the master key, the
    /// tenant's id and its credentials version), when those are known: a plan's desired
    /// attributes then carry its fingerprint, as a role's do.
    pub password: Option<&'a dyn Fn(&str) -> String>,
}

impl TenantInputs<'_> {
    /// The fingerprint of the password the login `login` gets, when it is known: what a
    /// plan compares, the password itself never being shown or kept.
    pub fn fingerprint(&self, login: &str) -> Option<String> {
        let password = self.password?;
        Some(crate::credentials::fingerprint(&password(login)))
    }
}

/// Takes every plugged slot's setting out of the config's `targets` block, and every block
/// of its implementations out of the config, and sets up the slots that are not `none`.
/// What is left is read as the rest of the config.
pub fn plug(value: &mut hcl::Value, spans: &Spans) -> (Vec<Arc<dyn Plugged>>, Vec<Diagnostic>) {
    let mut plugged = Vec::new();
    let mut problems = Vec::new();
    let hcl::Value::Object(config) = value else {
        return (plugged, problems);
    };
    for slot in crate::targets::PLUGGED {
        let field = slot.setting();
        let chosen = match config.get_mut("targets") {
            Some(hcl::Value::Object(targets)) => targets.shift_remove(slot.key()),
            _ => None,
        };
        let blocks: Vec<(&str, hcl::Value)> = slot
            .implementations()
            .iter()
            .filter_map(|name| Some((*name, config.shift_remove(*name)?)))
            .collect();
        let chosen = match chosen {
            None => None,
            Some(hcl::Value::String(s)) if s == "none" => None,
            Some(hcl::Value::String(s)) if slot.implementations().contains(&s.as_str()) => Some(s),
            Some(other) => {
                let known = ["none"]
                    .iter()
                    .chain(slot.implementations())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ");
                problems.push(
                    spans
                        .problem(field, format!("unknown target {}", quoted(&other)))
                        .hint(format!("{field} can be: {known}")),
                );
                None
            }
        };
        // A block is read whether or not the slot is set to it: a value that does not read
        // is a mistake even while the block waits to be used.
        let mut chosen_block = None;
        for (name, block) in blocks {
            if chosen.as_deref() == Some(name) {
                chosen_block = Some(block);
            } else {
                problems.extend(slot.read_unused(name, block, spans));
            }
        }
        let Some(chosen) = chosen else {
            continue;
        };
        match slot.configure(&chosen, chosen_block, spans) {
            Ok(p) => plugged.push(p),
            Err(p) => problems.extend(p),
        }
    }
    (plugged, problems)
}

/// A setting's value as it is written: `"memcached"`, or `3`.
fn quoted(value: &hcl::Value) -> String {
    match value {
        hcl::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Reads a block's settings into `T` (its defaults when the file has no block), every
/// problem named by its path under the block (`redis.url`) at its line.
fn read_settings<T: serde::de::DeserializeOwned + Default>(
    block_name: &str,
    block: Option<hcl::Value>,
    spans: &Spans,
) -> Result<T, Vec<Diagnostic>> {
    let Some(block) = block else {
        return Ok(T::default());
    };
    match hcl_file::read_block(block_name, block, spans) {
        (Some(t), problems) if problems.is_empty() => Ok(t),
        (_, problems) => Err(problems),
    }
}

/// Adds every plugged slot's setting and settings blocks to the config's JSON schema.
pub fn add_to_schema(schema: &mut serde_json::Value) {
    for slot in crate::targets::PLUGGED {
        let choices: Vec<&str> = ["none"]
            .into_iter()
            .chain(slot.implementations().iter().copied())
            .collect();
        // `targets` is a reference to its definition, which is where its keys are listed.
        let pointer = match schema["properties"]["targets"]["$ref"].as_str() {
            Some(reference) => reference.trim_start_matches('#').to_string(),
            None => "/properties/targets".into(),
        };
        let Some(at) = schema.pointer_mut(&pointer) else {
            continue;
        };
        at["properties"][slot.key()] = serde_json::json!({
            "description": format!("Each tenant's {}: `none`, or {}.", slot.key(), slot.implementations().join(", ")),
            "type": "string",
            "enum": choices,
            "default": "none",
        });
        for implementation in slot.implementations() {
            let mut block = slot.settings_schema(implementation);
            if let Some(block) = block.as_object_mut() {
                block.remove("$schema");
            }
            schema["properties"][*implementation] = block;
        }
    }
}

/// A slot of one implementation serving one kind, said by its own parts only: its settings,
/// their checks, its target, and what a tenant gets. [`OneTarget`] makes it a [`Slot`], and
/// what it configures a [`Plugged`], so the reading of its block, the schema, the `none`
/// case and the plumbing are written once for every such slot.
pub trait Single: Send + Sync + 'static {
    /// Its key in `targets { }` (`dns`), and that key's path in the file (`targets.dns`).
    const KEY: &'static str;
    const SETTING: &'static str;
    /// What it may be set to besides `none`, which is also its settings block's name.
    const IMPLEMENTATION: &'static str;
    /// The kind a tenant gets one resource of.
    const KIND: Kind;
    /// Whether a block the slot is not set to gets the settings' checks too, not only a
    /// reading of its values (the `rabbitmq` block always did).
    const CHECK_UNUSED: bool = false;

    type Settings: serde::de::DeserializeOwned
        + schemars::JsonSchema
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync;
    type Target: Provider;

    /// The settings' checks, each problem where it is written. A value may be put in the
    /// form the target takes first (a zone id as AWS prints it).
    fn check(spans: &Spans, settings: &mut Self::Settings) -> Vec<Diagnostic>;
    fn target(settings: &Self::Settings) -> Self::Target;
    /// Requests the target has sent so far, for benchmarks.
    fn calls(target: &Self::Target) -> usize;
    /// What is wrong with the names the tenants would get.
    fn check_tenants(settings: &Self::Settings, tenants: &[TenantSpec]) -> Vec<Diagnostic>;
    /// The attributes of a tenant's resource.
    fn attrs(settings: &Self::Settings, tenant: &TenantInputs<'_>) -> Attrs;
    /// The tenant's login, from its resource as recorded (`credentials`), if it has one.
    fn login(
        _settings: &Self::Settings,
        _target: &Self::Target,
        _recorded: &Attrs,
        _password: &dyn Fn(&str) -> String,
    ) -> Option<String> {
        None
    }
}

/// The [`Slot`] of a [`Single`]: `pub const SLOT: OneTarget<Route53> = OneTarget::new();`.
pub struct OneTarget<S>(std::marker::PhantomData<fn() -> S>);

impl<S> OneTarget<S> {
    pub const fn new() -> Self {
        OneTarget(std::marker::PhantomData)
    }
}

impl<S> Default for OneTarget<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Single> Slot for OneTarget<S> {
    fn key(&self) -> &'static str {
        S::KEY
    }

    fn setting(&self) -> &'static str {
        S::SETTING
    }

    fn kinds(&self) -> &'static [Kind] {
        const { &[S::KIND] }
    }

    fn implementations(&self) -> &'static [&'static str] {
        const { &[S::IMPLEMENTATION] }
    }

    fn settings_schema(&self, _implementation: &str) -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(S::Settings)).expect("a schema serializes")
    }

    fn read_unused(
        &self,
        _implementation: &str,
        block: hcl::Value,
        spans: &Spans,
    ) -> Vec<Diagnostic> {
        match read_settings::<S::Settings>(S::IMPLEMENTATION, Some(block), spans) {
            Ok(mut settings) if S::CHECK_UNUSED => S::check(spans, &mut settings),
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }

    fn configure(
        &self,
        _implementation: &str,
        block: Option<hcl::Value>,
        spans: &Spans,
    ) -> Result<Arc<dyn Plugged>, Vec<Diagnostic>> {
        let mut settings: S::Settings = read_settings(S::IMPLEMENTATION, block, spans)?;
        let problems = S::check(spans, &mut settings);
        if !problems.is_empty() {
            return Err(problems);
        }
        let target = Arc::new(S::target(&settings));
        Ok(Arc::new(Configured::<S> { settings, target }))
    }
}

/// A [`Single`] as the config set it up.
struct Configured<S: Single> {
    settings: S::Settings,
    target: Arc<S::Target>,
}

impl<S: Single> std::fmt::Debug for Configured<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(S::IMPLEMENTATION)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S: Single> Plugged for Configured<S> {
    fn slot(&self) -> &'static str {
        S::KEY
    }

    fn keys(&self) -> Vec<Key> {
        vec![Key::new(S::KIND)]
    }

    fn check_tenants(&self, tenants: &[TenantSpec]) -> Vec<Diagnostic> {
        S::check_tenants(&self.settings, tenants)
    }

    fn calls(&self) -> usize {
        S::calls(&self.target)
    }

    fn desired(&self, tenant: &TenantInputs<'_>) -> Vec<Resource> {
        vec![Resource {
            key: Key::new(S::KIND),
            attrs: S::attrs(&self.settings, tenant),
            content: None,
        }]
    }

    fn target(&self) -> Arc<dyn Provider> {
        self.target.clone()
    }

    fn login(
        &self,
        recorded: &BTreeMap<Key, Attrs>,
        password: &dyn Fn(&str) -> String,
    ) -> Option<String> {
        let resource = recorded.get(&Key::new(S::KIND))?;
        S::login(&self.settings, &self.target, resource, password)
    }
}
