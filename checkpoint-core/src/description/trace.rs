//! Tracing a state type's description: the derive names the persisted
//! fields; the serde format of each plain field's type is found by
//! deserializing a value of it from a tracer that records what the type
//! asks for (`tracer.rs`; serde-reflection's idea, without its samples:
//! postcard types are read in order, so the order of requests is the
//! layout). Descriptions are cached per type.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;

use super::check::DescriptionError;
use super::tracer::Tracer;
use super::{FieldKind, Format, Shape, StateDescription, StateField};
use crate::checkpoint::Checkpoint;

/// Collects a state type's fields for its [`StateDescription`]; what
/// [`Checkpoint::describe`] is given.
///
/// The derive calls one method per persisted field; a hand-written
/// `Checkpoint` can do the same.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, Describer, FieldKind, Shape};
///
/// #[derive(Checkpoint, Default)]
/// struct Totals {
///     seen: u64,
///     names: Vec<String>,
/// }
///
/// let mut describer = Describer::new();
/// let Some(Shape::Struct { fields }) = Totals::describe(&mut describer) else { panic!("described") };
/// assert_eq!(fields[1].name, "names");
/// assert!(matches!(&fields[1].kind, FieldKind::Plain { type_text, .. } if type_text == "Vec<String>"));
/// ```
#[derive(Debug, Default)]
pub struct Describer {
    tracer: Tracer,
    error: Option<String>,
}

impl Describer {
    /// A describer with no containers traced yet.
    pub fn new() -> Self {
        Describer::default()
    }

    /// A field saved with serde: its type's format is traced.
    pub fn plain<T: DeserializeOwned>(&mut self, name: &str, type_text: &str) -> StateField {
        let format = match self.tracer.trace::<T>() {
            Ok(format) => format,
            Err(e) => {
                self.fail(format!("field `{name}` ({type_text}): {e}"));
                Format::Unit
            }
        };
        StateField {
            name: name.to_owned(),
            kind: FieldKind::Plain {
                type_text: type_text.to_owned(),
                format,
            },
        }
    }

    /// A byte buffer saved as serde bytes (`Vec<u8>`, `Box<[u8]>`).
    pub fn bytes(&mut self, name: &str, type_text: &str) -> StateField {
        StateField {
            name: name.to_owned(),
            kind: FieldKind::Plain {
                type_text: type_text.to_owned(),
                format: Format::Bytes,
            },
        }
    }

    /// A `#[checkpoint(nested)]` field of type `T`.
    pub fn nested<T: Checkpoint>(&mut self, name: &str) -> StateField {
        let shape = T::describe(self).unwrap_or_else(|| {
            self.fail(format!(
                "field `{name}`: `{}` does not describe its layout",
                T::TYPE_NAME
            ));
            Shape::Stateless
        });
        StateField {
            name: name.to_owned(),
            kind: FieldKind::Nested {
                state: Box::new(StateDescription {
                    type_name: T::TYPE_NAME.to_owned(),
                    version: T::VERSION,
                    fingerprint: T::FINGERPRINT,
                    shape,
                    types: BTreeMap::new(),
                }),
            },
        }
    }

    /// A `#[checkpoint(keyed)]` field: a `KeyedMap<K, V>`.
    pub fn keyed<K: DeserializeOwned, V: DeserializeOwned>(&mut self, name: &str, type_text: &str) -> StateField {
        let key = self.tracer.trace::<K>();
        let key = self.or_fail(key, || format!("field `{name}` ({type_text}), its keys"));
        let value = self.tracer.trace::<V>();
        let value = self.or_fail(value, || format!("field `{name}` ({type_text}), its values"));
        StateField {
            name: name.to_owned(),
            kind: FieldKind::Keyed {
                type_text: type_text.to_owned(),
                key,
                value,
            },
        }
    }

    fn or_fail(&mut self, traced: Result<Format, String>, what: impl FnOnce() -> String) -> Format {
        traced.unwrap_or_else(|e| {
            self.fail(format!("{}: {e}", what()));
            Format::Unit
        })
    }

    /// Records that the description cannot be made; the first reason is
    /// kept.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.error.get_or_insert_with(|| reason.into());
    }
}

/// `T`'s description, traced now.
pub(super) fn trace<T: Checkpoint>() -> Result<StateDescription, DescriptionError> {
    let mut describer = Describer::new();
    let shape = T::describe(&mut describer).ok_or(DescriptionError::NotDescribed {
        type_name: T::TYPE_NAME.to_owned(),
    })?;
    if let Some(reason) = describer.error {
        return Err(DescriptionError::Untraceable {
            type_name: T::TYPE_NAME.to_owned(),
            reason,
        });
    }
    let types = describer
        .tracer
        .finish()
        .map_err(|reason| DescriptionError::Untraceable {
            type_name: T::TYPE_NAME.to_owned(),
            reason,
        })?;
    Ok(StateDescription {
        type_name: T::TYPE_NAME.to_owned(),
        version: T::VERSION,
        fingerprint: T::FINGERPRINT,
        shape,
        types,
    })
}

// Keyed by `TypeId` (through `typeid`, which needs no `'static` bound), not
// by `type_name`: two types declared in two blocks of one function share a
// name, and the second must not be given the first one's description.
type Cache = Mutex<HashMap<std::any::TypeId, Result<Arc<StateDescription>, DescriptionError>>>;

fn cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Cache::default)
}

/// `T`'s description, traced once per process and shared.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, description_of};
///
/// #[derive(Checkpoint, Default)]
/// struct Sum {
///     total: i64,
/// }
///
/// let first = description_of::<Sum>()?;
/// let again = description_of::<Sum>()?;
/// assert!(std::sync::Arc::ptr_eq(&first, &again));
/// # Ok::<(), checkpoint_core::DescriptionError>(())
/// ```
pub fn description_of<T: Checkpoint>() -> Result<Arc<StateDescription>, DescriptionError> {
    let id = typeid::of::<T>();
    if let Some(done) = cache().lock().unwrap_or_else(PoisonError::into_inner).get(&id) {
        return done.clone();
    }
    // Traced without the lock: a nested type's description may be asked
    // for by another thread meanwhile, and tracing is deterministic, so two
    // threads tracing at once give equal results.
    let traced = trace::<T>().map(Arc::new);
    cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id)
        .or_insert(traced)
        .clone()
}

/// `T`'s description as the JSON snapshots carry, made once per process;
/// `None` for a type that does not describe itself.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, StateDescription, description_json_of};
///
/// #[derive(Checkpoint, Default)]
/// struct Sum {
///     total: i64,
/// }
///
/// let json = description_json_of::<Sum>().expect("derived");
/// assert_eq!(StateDescription::from_json(&json)?.type_name, "Sum");
/// assert!(description_json_of::<u64>().is_none(), "implemented by hand, not described");
/// # Ok::<(), checkpoint_core::DescriptionError>(())
/// ```
pub fn description_json_of<T: Checkpoint>() -> Option<Arc<str>> {
    type JsonCache = Mutex<HashMap<std::any::TypeId, Option<Arc<str>>>>;
    static JSON: std::sync::OnceLock<JsonCache> = std::sync::OnceLock::new();
    let json = JSON.get_or_init(JsonCache::default);
    let id = typeid::of::<T>();
    if let Some(done) = json.lock().unwrap_or_else(PoisonError::into_inner).get(&id) {
        return done.clone();
    }
    // One too large to carry is left out (the snapshot is written without
    // it), never a reason for a checkpoint to fail.
    let made = description_of::<T>()
        .ok()
        .map(|d| d.to_json())
        .filter(|json| json.len() <= crate::snapshot::MAX_DESCRIPTION_LEN)
        .map(Arc::from);
    json.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id)
        .or_insert(made)
        .clone()
}
