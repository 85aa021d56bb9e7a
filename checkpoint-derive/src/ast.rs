//! The typed model of a derive input: the type, its variants and fields with
//! their parsed attributes, each keeping the syntax it came from for spans.

use syn::ext::IdentExt;
use syn::{Data as SynData, DeriveInput, Fields, Ident, Index, Member, Type};

use crate::attr;
use crate::ctxt::Ctxt;

/// A `#[derive(Checkpoint)]` input.
pub(crate) struct Input<'a> {
    pub(crate) original: &'a DeriveInput,
    pub(crate) attrs: attr::Container,
    /// `None` for a union (reported as an error).
    pub(crate) data: Option<Data<'a>>,
}

/// What the input is.
pub(crate) enum Data<'a> {
    Struct(Struct<'a>),
    Enum(Enum<'a>),
}

/// A struct: named, tuple or unit.
pub(crate) struct Struct<'a> {
    pub(crate) style: Style,
    pub(crate) fields: Vec<Field<'a>>,
}

/// An enum.
pub(crate) struct Enum<'a> {
    pub(crate) variants: Vec<Variant<'a>>,
}

/// One enum variant.
pub(crate) struct Variant<'a> {
    pub(crate) original: &'a syn::Variant,
    pub(crate) style: Style,
    pub(crate) fields: Vec<Field<'a>>,
}

/// How a struct or variant lists its fields.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Named,
    Tuple,
    Unit,
}

/// One field of a struct or variant.
pub(crate) struct Field<'a> {
    pub(crate) original: &'a syn::Field,
    pub(crate) attrs: attr::Field,
    /// `self.<member>`: a name or a tuple index.
    pub(crate) member: Member,
}

impl<'a> Input<'a> {
    /// Builds the model, recording every attribute mistake in `cx`.
    pub(crate) fn from_syn(cx: &Ctxt, node: &'a DeriveInput) -> Self {
        let attrs = attr::container(cx, &node.attrs);
        let data = match &node.data {
            SynData::Struct(data) => Some(Data::Struct(Struct {
                style: Style::of(&data.fields),
                fields: Field::multiple(cx, &data.fields),
            })),
            SynData::Enum(data) => Some(Data::Enum(Enum {
                variants: data
                    .variants
                    .iter()
                    .map(|variant| {
                        attr::variant(cx, &variant.attrs);
                        Variant {
                            original: variant,
                            style: Style::of(&variant.fields),
                            fields: Field::multiple(cx, &variant.fields),
                        }
                    })
                    .collect(),
            })),
            SynData::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "`#[derive(Checkpoint)]` does not support unions: a union does not record which field holds \
                     its value, so it cannot be saved safely; use a struct or an enum",
                );
                None
            }
        };
        Input {
            original: node,
            attrs,
            data,
        }
    }

    pub(crate) fn ident(&self) -> &'a Ident {
        &self.original.ident
    }

    /// Every field, of the struct or of all variants.
    pub(crate) fn fields(&self) -> Box<dyn Iterator<Item = &Field<'a>> + '_> {
        match &self.data {
            Some(Data::Struct(data)) => Box::new(data.fields.iter()),
            Some(Data::Enum(data)) => Box::new(data.variants.iter().flat_map(|variant| variant.fields.iter())),
            None => Box::new(std::iter::empty()),
        }
    }

    /// The version: `version = N`, or 1.
    pub(crate) fn version(&self) -> u32 {
        self.attrs.version.as_ref().map_or(1, |version| version.value)
    }

    pub(crate) fn is_stateless(&self) -> bool {
        self.attrs.stateless.is_some()
    }
}

impl Style {
    fn of(fields: &Fields) -> Self {
        match fields {
            Fields::Named(_) => Style::Named,
            Fields::Unnamed(_) => Style::Tuple,
            Fields::Unit => Style::Unit,
        }
    }
}

impl<'a> Field<'a> {
    fn multiple(cx: &Ctxt, fields: &'a Fields) -> Vec<Self> {
        fields
            .iter()
            .enumerate()
            .map(|(i, field)| Field {
                original: field,
                attrs: attr::field(cx, &field.attrs),
                member: match &field.ident {
                    Some(ident) => Member::Named(ident.clone()),
                    None => Member::Unnamed(Index::from(i)),
                },
            })
            .collect()
    }

    /// The field's type, as written.
    pub(crate) fn ty(&self) -> &'a Type {
        &self.original.ty
    }

    /// Whether the field is saved (not `transient`, not `config`; in a
    /// stateless type no field is saved).
    pub(crate) fn is_persisted(&self, input: &Input<'_>) -> bool {
        self.attrs.transient.is_none() && self.attrs.config.is_none() && !input.is_stateless()
    }

    /// Whether the field is configuration: taken from this run's operator
    /// value after every restore.
    pub(crate) fn is_config(&self) -> bool {
        self.attrs.config.is_some()
    }

    /// The name the fingerprint records: the field's name without `r#`, or
    /// its index in a tuple struct or variant.
    pub(crate) fn layout_name(&self) -> String {
        match &self.member {
            Member::Named(ident) => ident.unraw().to_string(),
            Member::Unnamed(index) => index.index.to_string(),
        }
    }
}
