//! Rules that involve more than one attribute, or an attribute and the shape
//! of the type. Each broken rule is reported on the token that has to change.

use quote::ToTokens;
use syn::Type;

use crate::ast::{Data, Field, Input};
use crate::attr;
use crate::ctxt::Ctxt;
use crate::fingerprint;

/// Checks `input`, recording every broken rule in `cx`.
pub(crate) fn check(cx: &Ctxt, input: &Input<'_>) {
    check_container(cx, input);
    for field in input.fields() {
        check_field(cx, input, field);
    }
}

fn check_container(cx: &Ctxt, input: &Input<'_>) {
    let attrs = &input.attrs;
    if let Some(stateless) = &attrs.stateless {
        if let Some(version) = &attrs.version {
            cx.error_spanned_by(
                &version.key,
                "a `stateless` type saves nothing, so it has no layout to version: remove `version = ...` \
                 (or remove `stateless` if the type has state to save)",
            );
        }
        if let Some(previous) = &attrs.previous {
            cx.error_spanned_by(
                &previous.key,
                "a `stateless` type saves nothing, so there is no older snapshot to upgrade from: remove \
                 `previous = ...` (or remove `stateless` if the type has state to save)",
            );
        }
        if let Some(Data::Enum(_)) = &input.data {
            cx.error_spanned_by(
                stateless,
                "`stateless` needs a struct: a stateless enum could not pick a variant to restore; remove \
                 `stateless`, or keep the enum inside a stateless struct as a `#[checkpoint(transient)]` field",
            );
        }
    }
    if let Some(previous) = &attrs.previous {
        let current = match &attrs.version {
            Some(version) => format!("it is `version = {}`", version.value),
            None => "it has no `version`, so it is version 1".to_owned(),
        };
        if input.version() <= 1 {
            cx.error_spanned_by(
                &previous.key,
                format!(
                    "`previous = {}` names the type this one upgrades from, so this type's version must be 2 or \
                     higher ({current}): add `version = 2` (one more than the previous type's version)",
                    attr::compact(&previous.ty.to_token_stream()),
                ),
            );
        }
    }
}

fn check_field(cx: &Ctxt, input: &Input<'_>, field: &Field<'_>) {
    let attrs = &field.attrs;
    let stateless = input.is_stateless();
    if let Some(config) = &attrs.config {
        check_config(cx, input, field, config);
    }
    if let Some(default) = &attrs.default
        && attrs.transient.is_none()
        && attrs.config.is_none()
        && !stateless
    {
        cx.error_spanned_by(
            &default.key,
            "`default = ...` only applies to a transient field (a saved field is restored from the snapshot): \
             write `#[checkpoint(transient, default = \"...\")]`, or remove `default`",
        );
    }
    if let Some(nested) = &attrs.nested
        && attrs.config.is_none()
    {
        if attrs.transient.is_some() {
            cx.error_spanned_by(
                nested,
                "a field cannot be both `transient` (not saved) and `nested` (saved through its own `Checkpoint` \
                 impl): keep one of them",
            );
        } else if stateless {
            cx.error_spanned_by(
                nested,
                "`nested` has no effect in a `stateless` type, which saves no field: remove `nested`",
            );
        }
    }
    check_keyed(cx, input, field);
    if field.is_persisted(input)
        && let Some(reference) = find_reference(field.ty())
    {
        cx.error_spanned_by(
            reference,
            "a saved field cannot be a reference: a restored state owns all its data; use an owned type \
             (`String` for `&str`, `Vec<T>` for `&[T]`, `T` or `Box<T>` for `&T`), or mark the field \
             `#[checkpoint(transient)]`",
        );
    }
}

/// `config` excludes every other field option, and needs a struct.
fn check_config(cx: &Ctxt, input: &Input<'_>, field: &Field<'_>, config: &syn::Path) {
    let attrs = &field.attrs;
    if let Some(transient) = &attrs.transient {
        cx.error_spanned_by(
            transient,
            "a field cannot be both `config` (set from this run's operator value after a restore) and \
             `transient` (reset to its default after a restore): remove `transient` to keep this run's value, \
             or remove `config` to reset it",
        );
    }
    if let Some(default) = &attrs.default {
        cx.error_spanned_by(
            &default.key,
            "`default = ...` does not apply to a `config` field, which is set from the operator value handed to \
             the DAG in this run: remove `default` (a decoded snapshot holds `Default::default()` until then), \
             or write `#[checkpoint(transient, default = \"...\")]` instead of `config`",
        );
    }
    if let Some(nested) = &attrs.nested {
        cx.error_spanned_by(
            nested,
            "a field cannot be both `config` (not saved, copied from this run's operator value) and `nested` \
             (saved through its own `Checkpoint` impl): remove `nested` if the whole field is configuration, or \
             remove `config` and mark the configuration fields inside its type `#[checkpoint(config)]`",
        );
    }
    if let Some(Data::Enum(_)) = &input.data {
        cx.error_spanned_by(
            config,
            "`config` needs a struct field: a restored enum may be in another variant than the value handed to \
             the DAG, so there is no field to set; move the setting into a struct that holds the enum",
        );
    }
}

/// A reference the value of a field of type `ty` would hold directly (not
/// behind a type constructor such as `PhantomData<&T>`, which may own its
/// data).
fn find_reference(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Reference(_) => Some(ty),
        Type::Paren(inner) => find_reference(&inner.elem),
        Type::Group(inner) => find_reference(&inner.elem),
        Type::Array(array) => find_reference(&array.elem),
        Type::Tuple(tuple) => tuple.elems.iter().find_map(find_reference),
        _ => None,
    }
}

/// `keyed` goes on a `KeyedMap` field alone; a `KeyedMap` saved any other
/// way would lose its key groups.
fn check_keyed(cx: &Ctxt, input: &Input<'_>, field: &Field<'_>) {
    let attrs = &field.attrs;
    let text = fingerprint::type_text(field.ty());
    if let Some(keyed) = &attrs.keyed {
        let other = [
            (&attrs.transient, "transient", "not saved"),
            (&attrs.nested, "nested", "saved through its own `Checkpoint` impl"),
            (
                &attrs.config,
                "config",
                "not saved, copied from this run's operator value",
            ),
        ];
        if let Some((_, name, meaning)) = other.iter().find(|(attr, _, _)| attr.is_some()) {
            cx.error_spanned_by(
                keyed,
                format!(
                    "a field cannot be both `keyed` (a `KeyedMap` saved group by group) and `{name}` ({meaning}): \
                     keep one of them"
                ),
            );
        } else if input.is_stateless() {
            cx.error_spanned_by(
                keyed,
                "`keyed` has no effect in a `stateless` type, which saves no field: remove `keyed`, or remove \
                 `stateless` to save the map",
            );
        }
        return;
    }
    if !field.is_persisted(input) || attrs.nested.is_some() {
        return;
    }
    if text.starts_with("KeyedMap<") {
        cx.error_spanned_by(
            field.ty(),
            "a `KeyedMap` field is saved group by group: mark it `#[checkpoint(keyed)]` (or \
             `#[checkpoint(transient)]` if it is not state)",
        );
    } else if text.contains("KeyedMap<") {
        cx.error_spanned_by(
            field.ty(),
            "a `KeyedMap` can only be saved as a field of its own, marked `#[checkpoint(keyed)]`: it cannot sit \
             inside another type, whose serde encoding would not keep its key groups",
        );
    }
}
