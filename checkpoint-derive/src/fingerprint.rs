//! The layout fingerprint's recipe. `docs/FINGERPRINT.md` and the derive's
//! documentation describe it; a change here changes every derived
//! fingerprint and makes existing snapshots unreadable.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, ReturnType, Type};

use crate::ast::{Data, Field, Input};
use crate::attr::compact;

/// Tag written before a plain (serde) field's type text.
const PLAIN: u64 = 0;
/// Tag written before a nested field's own fingerprint.
const NESTED: u64 = 1;
/// Tag written before a keyed field's type text.
const KEYED: u64 = 2;

/// The `const` expression of `input`'s fingerprint.
pub(crate) fn expr(input: &Input<'_>, krate: &TokenStream) -> TokenStream {
    let mut steps = Vec::new();
    if input.is_stateless() {
        steps.push(quote!(.write_str("stateless")));
    } else {
        match &input.data {
            Some(Data::Struct(data)) => {
                steps.push(quote!(.write_str("struct")));
                fields(input, &data.fields, krate, &mut steps);
            }
            Some(Data::Enum(data)) => {
                let count = data.variants.len() as u64;
                steps.push(quote!(.write_str("enum").write_u64(#count)));
                for variant in &data.variants {
                    let name = variant.original.ident.unraw().to_string();
                    steps.push(quote!(.write_str(#name)));
                    fields(input, &variant.fields, krate, &mut steps);
                }
            }
            None => {}
        }
    }
    let version = u64::from(input.version());
    quote! {
        #krate::LayoutHasher::new()
            #(#steps)*
            .write_u64(#version)
            .finish()
    }
}

fn fields(input: &Input<'_>, fields: &[Field<'_>], krate: &TokenStream, steps: &mut Vec<TokenStream>) {
    let persisted: Vec<&Field<'_>> = fields.iter().filter(|field| field.is_persisted(input)).collect();
    let count = persisted.len() as u64;
    steps.push(quote!(.write_u64(#count)));
    for field in persisted {
        let name = field.layout_name();
        let ty = field.ty();
        if field.attrs.nested.is_some() {
            steps.push(quote_spanned! {ty.span()=>
                .write_str(#name)
                .write_u64(#NESTED)
                .write_u64(<#ty as #krate::__private::NestedField>::NESTED_FINGERPRINT)
            });
        } else if field.attrs.keyed.is_some() {
            // The written type, as for a plain field: `KeyedMap<K, V>`'s own
            // fingerprint cannot see `K` and `V`.
            let text = type_text(ty);
            steps.push(quote!(.write_str(#name).write_u64(#KEYED).write_str(#text)));
        } else {
            let text = type_text(ty);
            steps.push(quote!(.write_str(#name).write_u64(#PLAIN).write_str(#text)));
        }
    }
}

/// The text a field type contributes: every path cut to its last segment
/// with its generic arguments (also normalized), lifetimes dropped, no
/// spaces except between two words. `std::collections::HashMap<u32,
/// my::Zone>` gives `HashMap<u32,Zone>`.
pub(crate) fn type_text(ty: &Type) -> String {
    let mut out = String::new();
    write_type(ty, &mut out);
    out
}

fn write_type(ty: &Type, out: &mut String) {
    match ty {
        Type::Path(path) => {
            if let Some(qself) = &path.qself {
                out.push('<');
                write_type(&qself.ty, out);
                out.push_str(">::");
            }
            if let Some(last) = path.path.segments.last() {
                out.push_str(&last.ident.unraw().to_string());
                write_arguments(&last.arguments, out);
            }
        }
        Type::Reference(reference) => {
            out.push('&');
            if reference.mutability.is_some() {
                out.push_str("mut ");
            }
            write_type(&reference.elem, out);
        }
        Type::Ptr(ptr) => {
            out.push_str(if ptr.mutability.is_some() { "*mut " } else { "*const " });
            write_type(&ptr.elem, out);
        }
        Type::Slice(slice) => {
            out.push('[');
            write_type(&slice.elem, out);
            out.push(']');
        }
        Type::Array(array) => {
            out.push('[');
            write_type(&array.elem, out);
            out.push(';');
            out.push_str(&compact(&array.len.to_token_stream()));
            out.push(']');
        }
        Type::Tuple(tuple) => {
            out.push('(');
            for (i, elem) in tuple.elems.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_type(elem, out);
            }
            if tuple.elems.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Type::Paren(paren) => write_type(&paren.elem, out),
        Type::Group(group) => write_type(&group.elem, out),
        Type::Never(_) => out.push('!'),
        other => out.push_str(&compact(&other.to_token_stream())),
    }
}

fn write_arguments(arguments: &PathArguments, out: &mut String) {
    match arguments {
        PathArguments::None => {}
        PathArguments::AngleBracketed(angle) => {
            let mut parts = Vec::new();
            for arg in &angle.args {
                let mut part = String::new();
                match arg {
                    GenericArgument::Lifetime(_) => continue,
                    GenericArgument::Type(ty) => write_type(ty, &mut part),
                    GenericArgument::AssocType(assoc) => {
                        part.push_str(&assoc.ident.unraw().to_string());
                        part.push('=');
                        write_type(&assoc.ty, &mut part);
                    }
                    other => part.push_str(&compact(&other.to_token_stream())),
                }
                parts.push(part);
            }
            if !parts.is_empty() {
                out.push('<');
                out.push_str(&parts.join(","));
                out.push('>');
            }
        }
        PathArguments::Parenthesized(paren) => {
            out.push('(');
            for (i, input) in paren.inputs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_type(input, out);
            }
            out.push(')');
            if let ReturnType::Type(_, ty) = &paren.output {
                out.push_str("->");
                write_type(ty, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ty: Type) -> String {
        type_text(&ty)
    }

    #[test]
    fn paths_keep_their_last_segment() {
        use syn::parse_quote as q;
        assert_eq!(text(q!(std::collections::HashMap<u32, my::Zone>)), "HashMap<u32,Zone>");
        assert_eq!(text(q!(HashMap<u32, Zone>)), "HashMap<u32,Zone>");
        assert_eq!(text(q!(::std::vec::Vec<u8>)), "Vec<u8>");
        assert_eq!(text(q!(Option<crate::window::WindowId>)), "Option<WindowId>");
        assert_eq!(text(q!(std::borrow::Cow<'static, str>)), "Cow<str>");
        assert_eq!(text(q!([u8; 4 * N])), "[u8;4*N]");
        assert_eq!(text(q!((u32, (String,), ()))), "(u32,(String,),())");
        assert_eq!(text(q!(Box<dyn std::any::Any + Send>)), "Box<dyn std::any::Any+Send>");
        assert_eq!(text(q!(<T as Tr>::Out)), "<T>::Out");
        assert_eq!(text(q!(r#type::r#Foo)), "Foo");
        assert_eq!(
            text(q!(PhantomData<fn(u8) -> u16>)),
            "PhantomData<fn(u8) -> u16>".replace(' ', "")
        );
    }
}
