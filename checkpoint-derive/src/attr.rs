//! Parsing of `#[checkpoint(...)]` attributes, one attribute at a time.
//!
//! Every mistake is recorded in the [`Ctxt`] and parsing goes on with the next
//! key, so a user sees all of them in one compile. Errors are spanned on the
//! key or the value that is wrong (`meta.path`, the literal), never on the
//! whole derive.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::punctuated::Punctuated;
use syn::{Attribute, ExprPath, LitInt, LitStr, Meta, Path, Token, Type, WherePredicate};

use crate::ctxt::Ctxt;

/// The attribute name this derive reads.
const ATTR: &str = "checkpoint";

/// Keys that go on the type, in the order the messages list them.
const CONTAINER_KEYS: &[&str] = &["stateless", "version", "previous", "crate", "bound"];
const CONTAINER_KEYS_HELP: &str =
    "`stateless`, `version = N`, `previous = OldType`, `crate = path` or `bound = \"T: Trait\"`";

/// Keys that go on a field.
const FIELD_KEYS: &[&str] = &["transient", "default", "nested", "keyed", "config"];
const FIELD_KEYS_HELP: &str = "`transient`, `transient, default = \"path::to::fn\"`, `nested`, `keyed` or `config`";

/// `#[checkpoint(...)]` on the type.
#[derive(Default)]
pub(crate) struct Container {
    /// `stateless` (its key, for spans).
    pub(crate) stateless: Option<Path>,
    /// `version = N`.
    pub(crate) version: Option<Version>,
    /// `previous = OldType`.
    pub(crate) previous: Option<Previous>,
    /// `crate = path`.
    pub(crate) crate_path: Option<CratePath>,
    /// `bound = "..."`.
    pub(crate) bound: Option<Bound>,
}

/// `version = N`, with `N >= 1`.
pub(crate) struct Version {
    pub(crate) key: Path,
    pub(crate) value: u32,
}

/// `previous = OldType`.
pub(crate) struct Previous {
    pub(crate) key: Path,
    pub(crate) ty: Type,
}

/// `crate = path`.
pub(crate) struct CratePath {
    pub(crate) path: Path,
}

/// `bound = "T: Trait, ..."`.
pub(crate) struct Bound {
    pub(crate) predicates: Vec<WherePredicate>,
}

/// `#[checkpoint(...)]` on a field.
#[derive(Default)]
pub(crate) struct Field {
    /// `transient` (its key, for spans).
    pub(crate) transient: Option<Path>,
    /// `default = "path::to::fn"`.
    pub(crate) default: Option<DefaultFn>,
    /// `nested` (its key, for spans).
    pub(crate) nested: Option<Path>,
    /// `keyed` (its key, for spans).
    pub(crate) keyed: Option<Path>,
    /// `config` (its key, for spans).
    pub(crate) config: Option<Path>,
}

/// `default = "path::to::fn"`: the function's path, spanned on the literal.
pub(crate) struct DefaultFn {
    pub(crate) key: Path,
    pub(crate) path: ExprPath,
}

/// Parses the type's `#[checkpoint(...)]` attributes.
pub(crate) fn container(cx: &Ctxt, attrs: &[Attribute]) -> Container {
    let mut out = Container::default();
    for attr in checkpoint_attrs(cx, attrs, "version = 2, previous = OldType") {
        let result = attr.parse_nested_meta(|meta| {
            let key = meta.path.clone();
            if key.is_ident("stateless") {
                no_value(cx, &meta, "stateless")?;
                set_once(cx, &mut out.stateless, &key, key.clone(), "type");
            } else if key.is_ident("version") {
                if let Some(value) = version_value(cx, &meta)? {
                    let version = Version {
                        key: key.clone(),
                        value,
                    };
                    set_once(cx, &mut out.version, &key, version, "type");
                }
            } else if key.is_ident("previous") {
                if let Some(ty) = previous_value(cx, &meta)? {
                    let previous = Previous { key: key.clone(), ty };
                    set_once(cx, &mut out.previous, &key, previous, "type");
                }
            } else if key.is_ident("crate") {
                if let Some(path) = crate_value(cx, &meta)? {
                    set_once(cx, &mut out.crate_path, &key, CratePath { path }, "type");
                }
            } else if key.is_ident("bound") {
                if let Some(predicates) = bound_value(cx, &meta)? {
                    set_once(cx, &mut out.bound, &key, Bound { predicates }, "type");
                }
            } else {
                unknown_key(cx, &meta, Place::Container)?;
            }
            Ok(())
        });
        if let Err(error) = result {
            cx.push(error);
        }
    }
    out
}

/// Parses a field's `#[checkpoint(...)]` attributes.
pub(crate) fn field(cx: &Ctxt, attrs: &[Attribute]) -> Field {
    let mut out = Field::default();
    for attr in checkpoint_attrs(cx, attrs, "transient") {
        let result = attr.parse_nested_meta(|meta| {
            let key = meta.path.clone();
            if key.is_ident("transient") {
                no_value(cx, &meta, "transient")?;
                set_once(cx, &mut out.transient, &key, key.clone(), "field");
            } else if key.is_ident("nested") {
                no_value(cx, &meta, "nested")?;
                set_once(cx, &mut out.nested, &key, key.clone(), "field");
            } else if key.is_ident("keyed") {
                no_value(cx, &meta, "keyed")?;
                set_once(cx, &mut out.keyed, &key, key.clone(), "field");
            } else if key.is_ident("config") {
                no_value(cx, &meta, "config")?;
                set_once(cx, &mut out.config, &key, key.clone(), "field");
            } else if key.is_ident("default") {
                if let Some(path) = default_value(cx, &meta)? {
                    let default = DefaultFn { key: key.clone(), path };
                    set_once(cx, &mut out.default, &key, default, "field");
                }
            } else {
                unknown_key(cx, &meta, Place::Field)?;
            }
            Ok(())
        });
        if let Err(error) = result {
            cx.push(error);
        }
    }
    out
}

/// Enum variants take no options: each `#[checkpoint(...)]` on one is an
/// error.
pub(crate) fn variant(cx: &Ctxt, attrs: &[Attribute]) {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident(ATTR)) {
        cx.error_spanned_by(
            attr,
            "`#[checkpoint(...)]` has no options for an enum variant; put `#[checkpoint(transient)]` or \
             `#[checkpoint(nested)]` on the variant's fields, and type options on the enum",
        );
    }
}

/// The `#[checkpoint(...)]` attributes among `attrs`, after reporting the
/// ones not written as a list (`#[checkpoint]`, `#[checkpoint = "x"]`).
fn checkpoint_attrs<'a>(cx: &Ctxt, attrs: &'a [Attribute], example: &str) -> Vec<&'a Attribute> {
    let mut lists = Vec::new();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident(ATTR)) {
        match &attr.meta {
            Meta::List(_) => lists.push(attr),
            Meta::Path(path) => cx.error_spanned_by(
                path,
                format!("`#[checkpoint]` needs its options in parentheses, e.g. `#[checkpoint({example})]`"),
            ),
            Meta::NameValue(name_value) => cx.error_spanned_by(
                {
                    let (eq, value) = (&name_value.eq_token, &name_value.value);
                    quote::quote!(#eq #value)
                },
                format!(
                    "`#[checkpoint = ...]` is not a form this derive reads: write the options in parentheses, \
                     e.g. `#[checkpoint({example})]`"
                ),
            ),
        }
    }
    lists
}

/// Stores `value` in `slot`, or reports a duplicate key.
fn set_once<T>(cx: &Ctxt, slot: &mut Option<T>, key: &Path, value: T, place: &str) {
    if slot.is_some() {
        cx.error_spanned_by(
            key,
            format!(
                "duplicate `{}`: it is already set for this {place}; remove this one",
                path_string(key)
            ),
        );
    } else {
        *slot = Some(value);
    }
}

/// A flag key must not have a value (`transient = true`, `nested(...)`).
fn no_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>, name: &str) -> syn::Result<()> {
    if meta.input.peek(Token![=]) || meta.input.peek(syn::token::Paren) {
        skip_value(meta.input)?;
        cx.error_spanned_by(
            &meta.path,
            format!("`{name}` is a flag and takes no value: write `#[checkpoint({name})]`"),
        );
    }
    Ok(())
}

/// Consumes `= value` (up to the next comma) or `(...)` after a key whose
/// value could not be used, so parsing can go on with the next key.
fn skip_value(input: ParseStream<'_>) -> syn::Result<TokenStream> {
    if input.peek(syn::token::Paren) {
        let tree: TokenTree = input.parse()?;
        return Ok(tree.into_token_stream());
    }
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
    }
    let mut tokens = TokenStream::new();
    while !input.is_empty() && !input.peek(Token![,]) {
        let tree: TokenTree = input.parse()?;
        tokens.extend([tree]);
    }
    Ok(tokens)
}

/// The `=` of a `key = value` pair, or `None` (reported) if it is missing.
fn expect_eq(cx: &Ctxt, meta: &ParseNestedMeta<'_>, example: &str) -> syn::Result<bool> {
    if meta.input.peek(Token![=]) {
        meta.input.parse::<Token![=]>()?;
        Ok(true)
    } else {
        skip_value(meta.input)?;
        cx.error_spanned_by(
            &meta.path,
            format!("`{}` needs a value: write `{example}`", path_string(&meta.path)),
        );
        Ok(false)
    }
}

fn version_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<u32>> {
    if !expect_eq(cx, meta, "version = 2")? {
        return Ok(None);
    }
    let input = meta.input;
    if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        return Ok(match lit.base10_parse::<u32>() {
            Ok(0) => {
                cx.error_spanned_by(
                    &lit,
                    "versions start at 1: write `version = 1` (the default, which can be left out), or a higher \
                     number once the layout changes",
                );
                None
            }
            Ok(value) => Some(value),
            Err(_) => {
                cx.error_spanned_by(
                    &lit,
                    "`version` must fit in a `u32`: write a number from 1 to 4294967295",
                );
                None
            }
        });
    }
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let text = lit.value();
        let example = match text.trim().parse::<u32>() {
            Ok(n) if n >= 1 => format!("version = {n}"),
            _ => "version = 2".to_owned(),
        };
        cx.error_spanned_by(
            &lit,
            format!("`version` takes an integer literal, not a string: write `{example}`"),
        );
        return Ok(None);
    }
    let tokens = skip_value(input)?;
    let message = "`version` takes an integer literal of 1 or more, e.g. `version = 2`";
    if tokens.is_empty() {
        cx.error_spanned_by(&meta.path, message);
    } else {
        cx.error_spanned_by(tokens, message);
    }
    Ok(None)
}

fn previous_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<Type>> {
    if !expect_eq(cx, meta, "previous = OldType")? {
        return Ok(None);
    }
    let input = meta.input;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        cx.error_spanned_by(
            &lit,
            format!(
                "`previous` takes a type, not a string: write `previous = {}`",
                lit.value().trim()
            ),
        );
        // Keep the type for the placeholder impl if the string holds one.
        return Ok(lit.parse::<Type>().ok());
    }
    input.parse().map(Some)
}

fn crate_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<Path>> {
    if !expect_eq(cx, meta, "crate = checkpoint_core")? {
        return Ok(None);
    }
    let input = meta.input;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let text = lit.value();
        let example = if lit.parse_with(Path::parse_mod_style).is_ok() {
            text.trim().to_owned()
        } else {
            "checkpoint_core".to_owned()
        };
        cx.error_spanned_by(
            &lit,
            format!("`crate` takes a path, not a string: write `crate = {example}`"),
        );
        // Keep the path for the placeholder impl if the string holds one.
        return Ok(lit.parse_with(Path::parse_mod_style).ok());
    }
    input.call(Path::parse_mod_style).map(Some)
}

fn bound_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<Vec<WherePredicate>>> {
    if !expect_eq(cx, meta, "bound = \"T: Trait\"")? {
        return Ok(None);
    }
    let input = meta.input;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        return Ok(
            match lit.parse_with(Punctuated::<WherePredicate, Token![,]>::parse_terminated) {
                Ok(predicates) => Some(predicates.into_iter().collect()),
                Err(error) => {
                    cx.error_spanned_by(
                        &lit,
                        format!(
                            "`bound` takes where-clause predicates, e.g. `bound = \"T: Clone, U: Default\"`: {error}"
                        ),
                    );
                    None
                }
            },
        );
    }
    let tokens = skip_value(input)?;
    cx.error_spanned_by(
        if tokens.is_empty() {
            meta.path.to_token_stream()
        } else {
            tokens.clone()
        },
        format!(
            "`bound` takes its where-clause predicates in a string: write `bound = \"{}\"`",
            if tokens.is_empty() {
                "T: Trait".to_owned()
            } else {
                spaced(&compact(&tokens))
            }
        ),
    );
    Ok(None)
}

fn default_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Option<ExprPath>> {
    if !expect_eq(cx, meta, "default = \"path::to::fn\"")? {
        return Ok(None);
    }
    let input = meta.input;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        return Ok(match lit.parse::<ExprPath>() {
            Ok(path) => Some(path),
            Err(_) => {
                cx.error_spanned_by(
                    &lit,
                    "`default` takes the path of a function with no arguments, e.g. `default = \"open_log\"` or \
                     `default = \"Self::empty\"`",
                );
                None
            }
        });
    }
    let tokens = skip_value(input)?;
    let example = if syn::parse2::<ExprPath>(tokens.clone()).is_ok() {
        compact(&tokens)
    } else {
        "path::to::fn".to_owned()
    };
    cx.error_spanned_by(
        if tokens.is_empty() {
            meta.path.to_token_stream()
        } else {
            tokens
        },
        format!("`default` takes the function's path as a string: write `default = \"{example}\"`"),
    );
    Ok(None)
}

#[derive(Clone, Copy)]
enum Place {
    Container,
    Field,
}

/// Reports a key this derive does not know, suggesting a near miss, and
/// skips its value so parsing can go on.
fn unknown_key(cx: &Ctxt, meta: &ParseNestedMeta<'_>, place: Place) -> syn::Result<()> {
    let name = path_string(&meta.path);
    let (own, other, what, help) = match place {
        Place::Container => (CONTAINER_KEYS, FIELD_KEYS, "type", CONTAINER_KEYS_HELP),
        Place::Field => (FIELD_KEYS, CONTAINER_KEYS, "field", FIELD_KEYS_HELP),
    };
    let message = if other.contains(&name.as_str()) {
        let example = key_example(&name);
        match place {
            Place::Container => format!(
                "`{name}` goes on a field, not on the type: write `#[checkpoint({example})]` above the field; \
                 options for the type are {CONTAINER_KEYS_HELP}"
            ),
            Place::Field => format!(
                "`{name}` goes on the type, not on a field: write `#[checkpoint({example})]` above the `struct` \
                 or `enum`; options for a field are {FIELD_KEYS_HELP}"
            ),
        }
    } else if let Some(suggestion) = near_miss(&name, own).or_else(|| synonym(&name, own)) {
        format!("unknown {what} option `{name}`; did you mean `{suggestion}`?")
    } else {
        format!("unknown {what} option `{name}`; expected {help}")
    };
    // `meta.error` spans the key and what was parsed after it: report first.
    cx.push(meta.error(message));
    skip_value(meta.input)?;
    Ok(())
}

/// The key meant by a word people write for it that is too far from it to
/// be a typo (`configuration` for `config`).
fn synonym(name: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let meant = match name {
        "configuration" | "setting" | "settings" | "param" | "parameter" => "config",
        _ => return None,
    };
    candidates.iter().copied().find(|candidate| *candidate == meant)
}

/// How a known key is written, for messages.
fn key_example(name: &str) -> &'static str {
    match name {
        "stateless" => "stateless",
        "version" => "version = 2",
        "previous" => "previous = OldType",
        "crate" => "crate = checkpoint_core",
        "bound" => "bound = \"T: Trait\"",
        "transient" => "transient",
        "default" => "transient, default = \"path::to::fn\"",
        "nested" => "nested",
        "keyed" => "keyed",
        "config" => "config",
        _ => "...",
    }
}

/// The candidate closest to `name` if it is a plausible typo of it
/// (optimal string alignment distance of at most a third of its length).
fn near_miss(name: &str, candidates: &[&'static str]) -> Option<&'static str> {
    candidates
        .iter()
        .map(|candidate| (distance(name, candidate), *candidate))
        .filter(|(d, candidate)| *d <= (candidate.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance (Levenshtein plus transpositions).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// `a::b` for a path, without spaces.
pub(crate) fn path_string(path: &Path) -> String {
    compact(&path.to_token_stream())
}

/// The text of `tokens` with spaces only where two words would otherwise
/// run together: `std :: vec :: Vec < u8 >` becomes `std::vec::Vec<u8>`,
/// `dyn Trait` stays `dyn Trait`. The result does not depend on how the
/// compiler spaces token streams.
pub(crate) fn compact(tokens: &TokenStream) -> String {
    let text = tokens.to_string();
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && out.chars().next_back().is_some_and(is_word_char) && is_word_char(c) {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// `compact` text made readable for a message: a space after `,` and after
/// a single `:`, and around `+` (`T:Clone+Send` becomes `T: Clone + Send`).
fn spaced(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        match c {
            '+' => out.push_str(" + "),
            ',' => out.push_str(", "),
            ':' if prev != Some(':') && next != Some(':') => out.push_str(": "),
            _ => out.push(c),
        }
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses() {
        assert_eq!(near_miss("transiant", FIELD_KEYS), Some("transient"));
        assert_eq!(near_miss("nestd", FIELD_KEYS), Some("nested"));
        assert_eq!(near_miss("defualt", FIELD_KEYS), Some("default"));
        assert_eq!(near_miss("confg", FIELD_KEYS), Some("config"));
        assert_eq!(near_miss("cofnig", FIELD_KEYS), Some("config"));
        assert_eq!(near_miss("verison", CONTAINER_KEYS), Some("version"));
        assert_eq!(near_miss("bounds", CONTAINER_KEYS), Some("bound"));
        assert_eq!(near_miss("skip", FIELD_KEYS), None);
        assert_eq!(synonym("configuration", FIELD_KEYS), Some("config"));
        assert_eq!(synonym("skip", FIELD_KEYS), None);
        assert_eq!(synonym("configuration", CONTAINER_KEYS), None);
        assert_eq!(near_miss("crate", FIELD_KEYS), None);
    }

    #[test]
    fn spaced_text() {
        assert_eq!(
            spaced("T:Clone+Send,U:std::fmt::Debug"),
            "T: Clone + Send, U: std::fmt::Debug"
        );
    }

    #[test]
    fn compact_text() {
        let tokens: TokenStream = syn::parse_quote!(std::collections::HashMap<u32, Box<dyn Send + 'static>>);
        assert_eq!(compact(&tokens), "std::collections::HashMap<u32,Box<dyn Send+'static>>");
    }
}
