//! Where-clause bounds for generic types: only for the fields that mention a
//! type parameter (thiserror's `generics.rs`).

use std::collections::BTreeSet;

use proc_macro2::TokenStream;
use quote::{ToTokens, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, Generics, Ident, PathArguments, ReturnType, Type, TypeParamBound, WhereClause};

/// The type parameters of the derive input.
pub(crate) struct ParamsInScope<'a> {
    names: BTreeSet<&'a Ident>,
}

impl<'a> ParamsInScope<'a> {
    pub(crate) fn new(generics: &'a Generics) -> Self {
        ParamsInScope {
            names: generics.type_params().map(|param| &param.ident).collect(),
        }
    }

    /// Whether `ty` mentions one of the type parameters anywhere.
    pub(crate) fn intersects(&self, ty: &Type) -> bool {
        !self.names.is_empty() && self.crawl(ty)
    }

    fn crawl(&self, ty: &Type) -> bool {
        match ty {
            Type::Path(path) => {
                if let Some(qself) = &path.qself
                    && self.crawl(&qself.ty)
                {
                    return true;
                }
                if path.qself.is_none()
                    && let Some(first) = path.path.segments.first()
                    && self.names.contains(&first.ident)
                {
                    return true;
                }
                path.path
                    .segments
                    .iter()
                    .any(|segment| self.crawl_arguments(&segment.arguments))
            }
            Type::Reference(inner) => self.crawl(&inner.elem),
            Type::Ptr(inner) => self.crawl(&inner.elem),
            Type::Slice(inner) => self.crawl(&inner.elem),
            Type::Array(inner) => self.crawl(&inner.elem),
            Type::Paren(inner) => self.crawl(&inner.elem),
            Type::Group(inner) => self.crawl(&inner.elem),
            Type::Tuple(tuple) => tuple.elems.iter().any(|elem| self.crawl(elem)),
            Type::BareFn(function) => {
                function.inputs.iter().any(|arg| self.crawl(&arg.ty))
                    || matches!(&function.output, ReturnType::Type(_, ty) if self.crawl(ty))
            }
            Type::TraitObject(object) => self.crawl_bounds(object.bounds.iter()),
            Type::ImplTrait(object) => self.crawl_bounds(object.bounds.iter()),
            // A macro's expansion is unknown: assume it may use a parameter.
            Type::Macro(_) | Type::Verbatim(_) => true,
            _ => false,
        }
    }

    fn crawl_arguments(&self, arguments: &PathArguments) -> bool {
        match arguments {
            PathArguments::None => false,
            PathArguments::AngleBracketed(angle) => angle.args.iter().any(|arg| match arg {
                GenericArgument::Type(ty) => self.crawl(ty),
                GenericArgument::AssocType(assoc) => self.crawl(&assoc.ty),
                _ => false,
            }),
            PathArguments::Parenthesized(paren) => {
                paren.inputs.iter().any(|ty| self.crawl(ty))
                    || matches!(&paren.output, ReturnType::Type(_, ty) if self.crawl(ty))
            }
        }
    }

    fn crawl_bounds<'b>(&self, mut bounds: impl Iterator<Item = &'b TypeParamBound>) -> bool {
        bounds.any(|bound| match bound {
            TypeParamBound::Trait(trait_bound) => trait_bound
                .path
                .segments
                .iter()
                .any(|segment| self.crawl_arguments(&segment.arguments)),
            _ => false,
        })
    }
}

/// Bounds collected for the impl's where clause, without duplicates, in
/// the order they were first added.
#[derive(Default)]
pub(crate) struct InferredBounds {
    predicates: Vec<TokenStream>,
    seen: BTreeSet<String>,
}

impl InferredBounds {
    /// Adds `ty: bound`, spanned on `ty` so an unmet bound is reported on
    /// the field it comes from.
    pub(crate) fn insert(&mut self, ty: &Type, bound: TokenStream) {
        let predicate = quote_spanned!(ty.span()=> #ty: #bound);
        if self.seen.insert(predicate.to_string()) {
            self.predicates.push(predicate);
        }
    }

    /// Adds a predicate as written (`bound = "..."`).
    pub(crate) fn insert_raw(&mut self, predicate: impl ToTokens) {
        let predicate = predicate.into_token_stream();
        if self.seen.insert(predicate.to_string()) {
            self.predicates.push(predicate);
        }
    }

    /// The input's where clause with these bounds added.
    pub(crate) fn augment_where_clause(&self, generics: &Generics) -> Option<WhereClause> {
        let mut generics = generics.clone();
        if !self.predicates.is_empty() {
            let where_clause = generics.make_where_clause();
            for predicate in &self.predicates {
                match syn::parse2(predicate.clone()) {
                    Ok(predicate) => where_clause.predicates.push(predicate),
                    // Every predicate is built from a parsed type and a
                    // trait path; keep going if one somehow is not valid.
                    Err(_) => continue,
                }
            }
        }
        generics.where_clause
    }
}
