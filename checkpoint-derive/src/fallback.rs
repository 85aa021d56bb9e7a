//! The placeholder impl emitted beside the errors of a rejected input
//! (thiserror's `fallback.rs`), so the rest of the crate still sees a
//! `Checkpoint` impl and the user gets no second wave of "trait not
//! implemented" errors.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;
use syn::ext::IdentExt;

pub(crate) fn expand(node: &DeriveInput, krate: &TokenStream, error: syn::Error) -> TokenStream {
    let ident = &node.ident;
    let (impl_generics, ty_generics, where_clause) = node.generics.split_for_impl();
    let type_name = ident.unraw().to_string();
    let error = error.to_compile_error();
    quote! {
        #error

        const _: () = {
            #[automatically_derived]
            #[allow(unused_qualifications)]
            impl #impl_generics #krate::Checkpoint for #ident #ty_generics #where_clause {
                const TYPE_NAME: &'static str = #type_name;
                const FINGERPRINT: u64 = 0;

                fn encode_state<__W: ::std::io::Write>(
                    &self,
                    __out: &mut __W,
                ) -> ::core::result::Result<(), #krate::PayloadError> {
                    ::core::unreachable!("`#[derive(Checkpoint)]` failed to compile")
                }

                fn decode_state(__input: &mut &[u8]) -> ::core::result::Result<Self, #krate::PayloadError> {
                    ::core::unreachable!("`#[derive(Checkpoint)]` failed to compile")
                }
            }
        };
    }
}
