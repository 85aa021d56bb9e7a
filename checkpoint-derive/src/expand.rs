//! Code generation: parse -> validate -> expand, or the placeholder impl
//! when the input has mistakes.
//!
//! Generated code names everything by its full path (`::core::...`,
//! `<T as krate::Checkpoint>::...`), prefixes its locals with `__`, and is
//! wrapped in `const _: () = { ... };`, so the user's own `Result`, `Option`
//! or `Default` never stand in for ours. Trait obligations that come from a
//! field (`Serialize`, `Default`, `Checkpoint`) are spanned on the field's
//! type, so an unmet one is reported on that field.

use proc_macro2::{Literal, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{DeriveInput, Index, Member, Type};

use crate::ast::{Data, Enum, Field, Input, Struct, Style, Variant};
use crate::attr::compact;
use crate::ctxt::Ctxt;
use crate::fingerprint;
use crate::generics::{InferredBounds, ParamsInScope};
use crate::{fallback, valid};

/// The derive's entry point.
pub(crate) fn derive(node: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let input = Input::from_syn(&cx, node);
    valid::check(&cx, &input);
    let krate = crate_path(&input);
    match cx.check() {
        Ok(()) => impl_checkpoint(&input, &krate),
        Err(error) => fallback::expand(node, &krate, error),
    }
}

/// `crate = path`, or `::checkpoint_core`.
fn crate_path(input: &Input<'_>) -> TokenStream {
    match &input.attrs.crate_path {
        Some(crate_path) => crate_path.path.to_token_stream(),
        None => quote!(::checkpoint_core),
    }
}

fn impl_checkpoint(input: &Input<'_>, krate: &TokenStream) -> TokenStream {
    let ident = input.ident();
    let generics = &input.original.generics;
    let (impl_generics, ty_generics, _) = generics.split_for_impl();
    let where_clause = bounds(input, krate).augment_where_clause(generics);
    let type_name = ident.unraw().to_string();

    let version_const = input.attrs.version.as_ref().map(|version| {
        let value = Literal::u32_suffixed(version.value);
        quote!(const VERSION: u32 = #value;)
    });
    let stateless_const = input.is_stateless().then(|| {
        quote!(
            const STATELESS: bool = true;
        )
    });
    let keyed_only = keyed_only(input, krate);
    let fingerprint = fingerprint::expr(input, krate);
    let (encode, decode) = match &input.data {
        Some(Data::Struct(data)) => (encode_struct(input, data, krate), decode_struct(input, data, krate)),
        Some(Data::Enum(data)) => (encode_enum(input, data, krate), decode_enum(input, data, krate)),
        // Unions are rejected before expansion.
        None => (TokenStream::new(), TokenStream::new()),
    };
    let describe = describe(input, krate);
    let (decode_versioned, version_check) = previous(input, krate);
    let (config, config_check) = config_methods(input, krate);

    quote! {
        const _: () = {
            #[automatically_derived]
            #[allow(unused_qualifications)]
            impl #impl_generics #krate::Checkpoint for #ident #ty_generics #where_clause {
                const TYPE_NAME: &'static str = #type_name;
                #version_const
                #stateless_const
                const KEYED_ONLY: bool = #keyed_only;
                const FINGERPRINT: u64 = #fingerprint;

                fn encode_state<__W: ::std::io::Write>(
                    &self,
                    __out: &mut __W,
                ) -> ::core::result::Result<(), #krate::PayloadError> {
                    #encode
                }

                fn decode_state(__input: &mut &[u8]) -> ::core::result::Result<Self, #krate::PayloadError> {
                    #decode
                }

                fn describe(__d: &mut #krate::Describer) -> ::core::option::Option<#krate::Shape> {
                    #describe
                }

                #decode_versioned

                #config
            }

            #version_check
            #config_check
        };
    }
}

/// `describe`'s body: the shape, one describer call per persisted field.
fn describe(input: &Input<'_>, krate: &TokenStream) -> TokenStream {
    let shape = if input.is_stateless() {
        quote!(#krate::Shape::Stateless)
    } else {
        match &input.data {
            Some(Data::Struct(data)) => {
                let fields = describe_fields(input, &data.fields, krate);
                quote!(#krate::Shape::Struct { fields: #fields })
            }
            Some(Data::Enum(data)) => {
                let variants = data.variants.iter().map(|variant| {
                    let name = variant.original.ident.unraw().to_string();
                    let fields = describe_fields(input, &variant.fields, krate);
                    quote!(#krate::StateVariant {
                        name: <::std::string::String as ::core::convert::From<&str>>::from(#name),
                        fields: #fields,
                    })
                });
                quote!(#krate::Shape::Enum { variants: ::std::vec![#(#variants),*] })
            }
            None => quote!(#krate::Shape::Stateless),
        }
    };
    quote!(::core::option::Option::Some(#shape))
}

fn describe_fields(input: &Input<'_>, fields: &[Field<'_>], krate: &TokenStream) -> TokenStream {
    let described = fields.iter().filter(|field| field.is_persisted(input)).map(|field| {
        let ty = field.ty();
        let name = field.layout_name();
        let text = fingerprint::type_text(ty);
        match FieldKind::of(input, field) {
            FieldKind::Nested => quote_spanned! {ty.span()=>
                <#ty as #krate::__private::NestedField>::describe_nested(__d, #name)
            },
            FieldKind::Keyed => quote_spanned! {ty.span()=>
                <#ty as #krate::__private::KeyedField>::describe_keyed(__d, #name, #text)
            },
            FieldKind::Bytes(_) => quote!(__d.bytes(#name, #text)),
            _ => quote_spanned! {ty.span()=>
                <#ty as #krate::__private::RestoreField>::describe_field(__d, #name, #text)
            },
        }
    });
    quote!(::std::vec![#(#described),*])
}

/// `KEYED_ONLY`: a stateless type, or a struct whose every persisted field
/// is `keyed` (or `nested` in a type that is itself keyed only). An enum
/// is not: a variant change is not a key-group change.
fn keyed_only(input: &Input<'_>, krate: &TokenStream) -> TokenStream {
    if input.is_stateless() {
        return quote!(true);
    }
    let Some(Data::Struct(_)) = &input.data else {
        return quote!(false);
    };
    let terms =
        input
            .fields()
            .filter(|field| field.is_persisted(input))
            .map(|field| match FieldKind::of(input, field) {
                FieldKind::Keyed => quote!(true),
                FieldKind::Nested => {
                    let ty = field.ty();
                    quote!(<#ty as #krate::__private::NestedField>::NESTED_KEYED_ONLY)
                }
                _ => quote!(false),
            });
    quote!(true #(&& #terms)*)
}

/// The where clause's added bounds: the `bound = "..."` predicates if given,
/// otherwise one per field type that mentions a type parameter.
fn bounds(input: &Input<'_>, krate: &TokenStream) -> InferredBounds {
    let mut bounds = InferredBounds::default();
    if let Some(bound) = &input.attrs.bound {
        for predicate in &bound.predicates {
            bounds.insert_raw(predicate);
        }
        return bounds;
    }
    let generics = &input.original.generics;
    let scope = ParamsInScope::new(generics);
    for field in input.fields() {
        if !scope.intersects(field.ty()) {
            continue;
        }
        match FieldKind::of(input, field) {
            FieldKind::Nested => bounds.insert(field.ty(), quote!(#krate::Checkpoint)),
            FieldKind::Keyed => bounds.insert(field.ty(), quote!(#krate::__private::KeyedField)),
            FieldKind::Plain => bounds.insert(
                field.ty(),
                quote!(#krate::__private::serde::Serialize + #krate::__private::serde::de::DeserializeOwned),
            ),
            FieldKind::Bytes(_) | FieldKind::TransientWith(_) => {}
            FieldKind::Transient => bounds.insert(field.ty(), quote!(::core::default::Default)),
            FieldKind::Config => bounds.insert(
                field.ty(),
                quote!(::core::clone::Clone + ::core::default::Default + ::core::marker::Send + 'static),
            ),
        }
    }
    if let Some(previous) = &input.attrs.previous
        && scope.intersects(&previous.ty)
    {
        let old = &previous.ty;
        let ident = input.ident();
        let (_, ty_generics, _) = generics.split_for_impl();
        bounds.insert(old, quote!(#krate::Checkpoint));
        if let Ok(this) = syn::parse2::<Type>(quote!(#ident #ty_generics)) {
            bounds.insert(&this, quote!(::core::convert::From<#old>));
        }
    }
    bounds
}

/// How one field is saved and restored.
enum FieldKind<'f> {
    /// Through serde + postcard.
    Plain,
    /// A byte buffer, through serde's bytes path.
    Bytes(ByteBuffer),
    /// Through its own `Checkpoint` impl.
    Nested,
    /// A `KeyedMap`, group by group.
    Keyed,
    /// Not saved; `Default::default()` on restore.
    Transient,
    /// Not saved; `default = "path"` on restore.
    TransientWith(&'f syn::ExprPath),
    /// Not saved; `Default::default()` on decode, then this run's value.
    Config,
}

impl<'f> FieldKind<'f> {
    fn of(input: &Input<'_>, field: &'f Field<'_>) -> Self {
        if field.is_config() {
            FieldKind::Config
        } else if !field.is_persisted(input) {
            match &field.attrs.default {
                Some(default) => FieldKind::TransientWith(&default.path),
                None => FieldKind::Transient,
            }
        } else if field.attrs.nested.is_some() {
            FieldKind::Nested
        } else if field.attrs.keyed.is_some() {
            FieldKind::Keyed
        } else if let Some(buffer) = ByteBuffer::of(field.ty()) {
            FieldKind::Bytes(buffer)
        } else {
            FieldKind::Plain
        }
    }
}

/// A byte buffer the derive recognizes.
#[derive(Clone, Copy)]
enum ByteBuffer {
    /// `Vec<u8>`.
    Vec,
    /// `Box<[u8]>`.
    BoxedSlice,
}

impl ByteBuffer {
    /// Recognizes `Vec<u8>` and `Box<[u8]>` by their last path segment (the
    /// derive sees names, not types).
    fn of(ty: &Type) -> Option<Self> {
        match fingerprint::type_text(ty).as_str() {
            "Vec<u8>" => Some(ByteBuffer::Vec),
            "Box<[u8]>" => Some(ByteBuffer::BoxedSlice),
            _ => None,
        }
    }
}

/// Writes one persisted field, borrowed as `value` (a `&FieldType`).
fn encode_field(input: &Input<'_>, field: &Field<'_>, value: &TokenStream, krate: &TokenStream) -> TokenStream {
    let ty = field.ty();
    match FieldKind::of(input, field) {
        FieldKind::Plain => quote_spanned! {ty.span()=>
            <#ty as #krate::__private::SaveField>::save_field(#value, __out)?;
        },
        FieldKind::Bytes(_) => quote_spanned! {ty.span()=>
            #krate::payload::encode(#krate::__private::serde_bytes::Bytes::new(#value), __out)?;
        },
        FieldKind::Nested => quote_spanned! {ty.span()=>
            <#ty as #krate::__private::NestedField>::save_nested(#value, __out)?;
        },
        FieldKind::Keyed => quote_spanned! {ty.span()=>
            <#ty as #krate::__private::KeyedField>::save_keyed(#value, __out)?;
        },
        FieldKind::Transient | FieldKind::TransientWith(_) | FieldKind::Config => TokenStream::new(),
    }
}

/// The expression that restores one field (persisted or transient).
fn decode_field(input: &Input<'_>, field: &Field<'_>, krate: &TokenStream) -> TokenStream {
    let ty = field.ty();
    match FieldKind::of(input, field) {
        FieldKind::Plain => quote_spanned! {ty.span()=>
            <#ty as #krate::__private::RestoreField>::restore_field(__input)?
        },
        FieldKind::Bytes(buffer) => {
            let into = match buffer {
                ByteBuffer::Vec => TokenStream::new(),
                ByteBuffer::BoxedSlice => quote!(.into_boxed_slice()),
            };
            quote_spanned! {ty.span()=>
                #krate::payload::decode::<#krate::__private::serde_bytes::ByteBuf>(__input)?.into_vec()#into
            }
        }
        FieldKind::Nested => quote_spanned! {ty.span()=>
            <#ty as #krate::__private::NestedField>::restore_nested(__input)?
        },
        FieldKind::Keyed => quote_spanned! {ty.span()=>
            <#ty as #krate::__private::KeyedField>::restore_keyed(__input)?
        },
        FieldKind::Transient => quote_spanned! {ty.span()=>
            <#ty as #krate::__private::TransientField>::transient_default()
        },
        FieldKind::TransientWith(path) => quote_spanned! {path.span()=>
            #path()
        },
        FieldKind::Config => quote_spanned! {ty.span()=>
            <#ty as #krate::__private::ConfigPlaceholder>::config_placeholder()
        },
    }
}

fn binding(i: usize) -> syn::Ident {
    format_ident!("__field{}", i)
}

fn encode_struct(input: &Input<'_>, data: &Struct<'_>, krate: &TokenStream) -> TokenStream {
    let fields = data.fields.iter().map(|field| {
        let member = &field.member;
        encode_field(input, field, &quote!(&self.#member), krate)
    });
    quote! {
        #(#fields)*
        ::core::result::Result::Ok(())
    }
}

fn decode_struct(input: &Input<'_>, data: &Struct<'_>, krate: &TokenStream) -> TokenStream {
    let construct = construct(input, quote!(Self), data.style, &data.fields, krate);
    quote!(::core::result::Result::Ok(#construct))
}

/// Decodes `fields` in order into locals, then builds `path { ... }`.
fn construct(
    input: &Input<'_>,
    path: TokenStream,
    style: Style,
    fields: &[Field<'_>],
    krate: &TokenStream,
) -> TokenStream {
    let lets = fields.iter().enumerate().map(|(i, field)| {
        let local = binding(i);
        let ty = field.ty();
        let value = decode_field(input, field, krate);
        quote!(let #local: #ty = #value;)
    });
    let locals = (0..fields.len()).map(binding);
    let build = match style {
        Style::Named => {
            let members = fields.iter().map(|field| &field.member);
            quote!(#path { #(#members: #locals),* })
        }
        Style::Tuple => quote!(#path ( #(#locals),* )),
        Style::Unit => path,
    };
    quote!({
        #(#lets)*
        #build
    })
}

fn encode_enum(input: &Input<'_>, data: &Enum<'_>, krate: &TokenStream) -> TokenStream {
    if data.variants.is_empty() {
        return quote!(match *self {});
    }
    let arms = data.variants.iter().enumerate().map(|(index, variant)| {
        let index = Literal::u32_suffixed(index as u32);
        let pattern = variant_pattern(input, variant);
        let fields = variant
            .fields
            .iter()
            .enumerate()
            .map(|(i, field)| encode_field(input, field, &binding(i).into_token_stream(), krate));
        quote! {
            #pattern => {
                #krate::payload::encode(&#index, __out)?;
                #(#fields)*
            }
        }
    });
    quote! {
        match self {
            #(#arms)*
        }
        ::core::result::Result::Ok(())
    }
}

/// `Self::Variant { a: __field0, .. }`, binding the persisted fields only.
fn variant_pattern(input: &Input<'_>, variant: &Variant<'_>) -> TokenStream {
    let ident = &variant.original.ident;
    let bindings = variant.fields.iter().enumerate().map(|(i, field)| {
        let local = binding(i);
        match (&field.member, field.is_persisted(input)) {
            (Member::Named(name), true) => quote!(#name: #local),
            (Member::Named(name), false) => quote!(#name: _),
            (Member::Unnamed(_), true) => quote!(#local),
            (Member::Unnamed(_), false) => quote!(_),
        }
    });
    match variant.style {
        Style::Named => quote!(Self::#ident { #(#bindings),* }),
        Style::Tuple => quote!(Self::#ident ( #(#bindings),* )),
        Style::Unit => quote!(Self::#ident),
    }
}

fn decode_enum(input: &Input<'_>, data: &Enum<'_>, krate: &TokenStream) -> TokenStream {
    let type_name = input.ident().unraw().to_string();
    let count = data.variants.len();
    let arms = data.variants.iter().enumerate().map(|(index, variant)| {
        let index = Literal::u32_suffixed(index as u32);
        let ident = &variant.original.ident;
        let construct = construct(input, quote!(Self::#ident), variant.style, &variant.fields, krate);
        quote!(#index => ::core::result::Result::Ok(#construct),)
    });
    quote! {
        let __index: u32 = #krate::payload::decode(__input)?;
        match __index {
            #(#arms)*
            _ => ::core::result::Result::Err(#krate::PayloadError::custom(::core::format_args!(
                "{} has no variant with index {} (it has {} variants)",
                #type_name,
                __index,
                #count,
            ))),
        }
    }
}

/// For `previous = OldType`: the `decode_versioned` override and the check
/// that `OldType::VERSION` is lower than this type's.
fn previous(input: &Input<'_>, krate: &TokenStream) -> (TokenStream, TokenStream) {
    let Some(previous) = &input.attrs.previous else {
        return (TokenStream::new(), TokenStream::new());
    };
    let old = &previous.ty;
    let version = Literal::u32_suffixed(input.version());
    let message = format!(
        "`previous = {}` must name a type with a lower version than this type's `version = {}`: raise `version` \
         on `{}`, or point `previous` at the older type",
        compact(&old.to_token_stream()),
        input.version(),
        input.ident().unraw(),
    );
    let assertion = quote_spanned! {old.span()=>
        ::core::assert!(<#old as #krate::__private::PreviousState>::PREVIOUS_VERSION < #version, #message)
    };
    // A check that does not depend on the type parameters runs when the
    // crate is compiled; one that does, when `decode_versioned` is used.
    let generic = ParamsInScope::new(&input.original.generics).intersects(old);
    let (inline_check, item_check) = if generic {
        (quote!(const { #assertion };), TokenStream::new())
    } else {
        (TokenStream::new(), quote!(const _: () = #assertion;))
    };
    let convert = quote_spanned! {old.span()=>
        <Self as #krate::__private::UpgradeFrom<#old>>::upgrade_from(__old)
    };
    let decode_previous = quote_spanned! {old.span()=>
        <#old as #krate::__private::PreviousState>::decode_previous(__layout, __input)
    };
    let decode_versioned = quote! {
        fn decode_versioned(
            __layout: &#krate::StateLayout<'_>,
            __input: &mut &[u8],
        ) -> ::core::result::Result<Self, #krate::SnapshotError> {
            #inline_check
            if __layout.version == <Self as #krate::Checkpoint>::VERSION {
                __layout.check::<Self>()?;
                return <Self as #krate::Checkpoint>::decode_state(__input).map_err(|__source| {
                    #krate::SnapshotError::Payload {
                        type_name: <Self as #krate::Checkpoint>::TYPE_NAME,
                        source: __source,
                    }
                });
            }
            if __layout.version < <Self as #krate::Checkpoint>::VERSION {
                let __decoded = #decode_previous;
                return match __decoded {
                    ::core::result::Result::Ok(__old) => ::core::result::Result::Ok(#convert),
                    // Name the newest type of the chain, the one the caller asked for.
                    ::core::result::Result::Err(#krate::SnapshotError::UnknownStateVersion { .. }) => {
                        ::core::result::Result::Err(__layout.unknown_version::<Self>())
                    }
                    ::core::result::Result::Err(__error) => ::core::result::Result::Err(__error),
                };
            }
            ::core::result::Result::Err(__layout.unknown_version::<Self>())
        }
    };
    (decode_versioned, item_check)
}

/// `HAS_CONFIG`, `capture_config` and `restore_config` for a struct with
/// `config` or `nested` fields: the carrier is a tuple holding a clone of
/// each `config` field and each `nested` field's own carrier, in field
/// order. For an enum, a check that no `nested` field in a variant has
/// configuration (it could not be set: the restored variant may differ).
fn config_methods(input: &Input<'_>, krate: &TokenStream) -> (TokenStream, TokenStream) {
    let data = match &input.data {
        Some(Data::Struct(data)) => data,
        Some(Data::Enum(data)) => return (TokenStream::new(), enum_config_check(input, data, krate)),
        None => return (TokenStream::new(), TokenStream::new()),
    };
    let carried: Vec<(&Field<'_>, bool)> = data
        .fields
        .iter()
        .filter_map(|field| match FieldKind::of(input, field) {
            FieldKind::Config => Some((field, true)),
            FieldKind::Nested => Some((field, false)),
            _ => None,
        })
        .collect();
    if carried.is_empty() {
        return (TokenStream::new(), TokenStream::new());
    }
    let any = quote!(dyn ::core::any::Any + ::core::marker::Send);
    let mut has_config = Vec::new();
    let mut types = Vec::new();
    let mut captures = Vec::new();
    let mut restores = Vec::new();
    for (i, (field, is_config)) in carried.iter().enumerate() {
        let ty = field.ty();
        let member = &field.member;
        let index = Index::from(i);
        if *is_config {
            has_config.push(quote!(true));
            types.push(quote!(#ty));
            captures.push(quote_spanned! {ty.span()=>
                <#ty as #krate::__private::ConfigField>::clone_config(&self.#member)
            });
            restores.push(quote_spanned! {ty.span()=>
                self.#member = <#ty as #krate::__private::ConfigField>::clone_config(&__config.#index);
            });
        } else {
            has_config.push(quote_spanned! {ty.span()=>
                <#ty as #krate::__private::NestedField>::NESTED_HAS_CONFIG
            });
            types.push(quote!(::core::option::Option<::std::boxed::Box<#any>>));
            captures.push(quote_spanned! {ty.span()=>
                <#ty as #krate::__private::NestedField>::capture_nested_config(&self.#member)
            });
            restores.push(quote_spanned! {ty.span()=>
                if let ::core::option::Option::Some(__nested) = &__config.#index {
                    <#ty as #krate::__private::NestedField>::restore_nested_config(&mut self.#member, &**__nested);
                }
            });
        }
    }
    let methods = quote! {
        const HAS_CONFIG: bool = false #(|| #has_config)*;

        fn capture_config(&self) -> ::core::option::Option<::std::boxed::Box<#any>> {
            if !<Self as #krate::Checkpoint>::HAS_CONFIG {
                return ::core::option::Option::None;
            }
            let __config: (#(#types,)*) = (#(#captures,)*);
            ::core::option::Option::Some(::std::boxed::Box::new(__config))
        }

        fn restore_config(&mut self, __config: &(#any)) {
            if let ::core::option::Option::Some(__config) = __config.downcast_ref::<(#(#types,)*)>() {
                #(#restores)*
            }
        }
    };
    (methods, TokenStream::new())
}

/// An enum's `nested` fields must not hold configuration: checked at
/// compile time for field types that do not depend on a type parameter.
fn enum_config_check(input: &Input<'_>, data: &Enum<'_>, krate: &TokenStream) -> TokenStream {
    let scope = ParamsInScope::new(&input.original.generics);
    let checks = data
        .variants
        .iter()
        .flat_map(|variant| variant.fields.iter())
        .filter(|field| matches!(FieldKind::of(input, field), FieldKind::Nested) && !scope.intersects(field.ty()))
        .map(|field| {
            let ty = field.ty();
            let message = format!(
                "`{}` has `#[checkpoint(config)]` fields, which cannot be set inside an enum variant (the restored \
                 variant may differ from the value handed to the DAG): keep the configuration in a struct that \
                 holds the enum",
                compact(&ty.to_token_stream()),
            );
            quote_spanned! {ty.span()=>
                const _: () = ::core::assert!(!<#ty as #krate::__private::NestedField>::NESTED_HAS_CONFIG, #message);
            }
        });
    quote!(#(#checks)*)
}
