//! Rules that involve more than one attribute, or an attribute and the shape
//! of the type. Each broken rule is reported on the token that has to change.

use quote::ToTokens;
use syn::Type;

use crate::ast::{Data, Field, Input};
use crate::attr;
use crate::ctxt::Ctxt;

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
    if let Some(default) = &attrs.default
        && attrs.transient.is_none()
        && !stateless
    {
        cx.error_spanned_by(
            &default.key,
            "`default = ...` only applies to a transient field (a saved field is restored from the snapshot): \
             write `#[checkpoint(transient, default = \"...\")]`, or remove `default`",
        );
    }
    if let Some(nested) = &attrs.nested {
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
