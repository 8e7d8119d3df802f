//! `#[traced]`: makes functions traceable by nodetrace.
//!
//! Put it on a `fn`, an `async fn`, an `impl` block (every method) or an
//! inline `mod` (every function, methods included). Each function gets a
//! `static` callsite in the agent's link-time registry and a guard around its
//! body; see `nodetrace_agent` for what that costs. Options:
//! `#[traced(skip(arg, ...))]` leaves arguments out of call events, and
//! `#[traced(skip_all)]` leaves out all of them.
//!
//! The body runs inside a closure so that every way out of it, `return` and
//! `?` included, passes its value to the return event. A function that
//! returns a borrow while it takes a `&mut` cannot lend through a closure;
//! its return events carry the elapsed time without the value.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    Block, FnArg, Ident, ImplItem, ImplItemFn, Item, ItemFn, ItemImpl, ItemMod, Pat, ReturnType,
    Signature, Token, Type, parse_macro_input, parse_quote,
};

/// Makes a function, every method of an `impl` block, or every function of
/// an inline `mod` traceable. See the crate docs.
#[proc_macro_attribute]
pub fn traced(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr as Options);
    let item = parse_macro_input!(item as Item);
    match expand_item(item, &options, true) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

#[derive(Default, Clone)]
struct Options {
    skip: Vec<Ident>,
    skip_all: bool,
}

impl Parse for Options {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut options = Options::default();
        let metas = Punctuated::<syn::Meta, Token![,]>::parse_terminated(input)?;
        for meta in metas {
            match &meta {
                syn::Meta::Path(p) if p.is_ident("skip_all") => options.skip_all = true,
                syn::Meta::List(list) if list.path.is_ident("skip") => {
                    let names =
                        list.parse_args_with(Punctuated::<Ident, Token![,]>::parse_terminated)?;
                    options.skip.extend(names);
                }
                _ => {
                    return Err(syn::Error::new(
                        meta.span(),
                        "unknown #[traced] option: expected `skip(arg, ...)` or `skip_all`",
                    ));
                }
            }
        }
        Ok(options)
    }
}

fn expand_item(item: Item, options: &Options, direct: bool) -> syn::Result<TokenStream2> {
    match item {
        Item::Fn(f) => expand_fn(f, options, direct),
        Item::Impl(i) => Ok(expand_impl(i, options)),
        Item::Mod(m) => expand_mod(m, options),
        other if direct => Err(syn::Error::new(
            other.span(),
            "#[traced] goes on a fn, an impl block or an inline mod",
        )),
        other => Ok(quote!(#other)),
    }
}

/// Whether an item carries its own `#[traced]`, which then expands it.
fn has_own_attr(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "traced")
    })
}

fn expand_fn(f: ItemFn, options: &Options, direct: bool) -> syn::Result<TokenStream2> {
    if f.sig.constness.is_some() {
        if direct {
            return Err(syn::Error::new(
                f.sig.span(),
                "#[traced] cannot trace a const fn",
            ));
        }
        return Ok(quote!(#f));
    }
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = f;
    let body = instrument(&sig, &block, options)?;
    Ok(quote! { #(#attrs)* #vis #sig { #body } })
}

fn expand_impl(mut imp: ItemImpl, options: &Options) -> TokenStream2 {
    let mut errors = TokenStream2::new();
    for item in &mut imp.items {
        if let ImplItem::Fn(method) = item {
            if method.sig.constness.is_some() || has_own_attr(&method.attrs) {
                continue;
            }
            let ImplItemFn { sig, block, .. } = &*method;
            match instrument(sig, block, options) {
                Ok(body) => method.block = parse_quote!({ #body }),
                Err(err) => errors.extend(err.to_compile_error()),
            }
        }
    }
    quote!(#imp #errors)
}

fn expand_mod(mut module: ItemMod, options: &Options) -> syn::Result<TokenStream2> {
    let Some((brace, items)) = module.content.take() else {
        return Err(syn::Error::new(
            module.span(),
            "#[traced] on a mod needs its items inline: `#[traced] mod m { ... }`",
        ));
    };
    let mut expanded = Vec::with_capacity(items.len());
    for item in items {
        let own = match &item {
            Item::Fn(f) => has_own_attr(&f.attrs),
            Item::Impl(i) => has_own_attr(&i.attrs),
            Item::Mod(m) => has_own_attr(&m.attrs),
            _ => true,
        };
        if own {
            expanded.push(item);
        } else {
            let tokens = expand_item(item, options, false)?;
            expanded.push(syn::parse2(tokens)?);
        }
    }
    module.content = Some((brace, expanded));
    Ok(quote!(#module))
}

/// The return type as written, unless it cannot be named in a `let`.
fn nameable_output(sig: &Signature) -> Option<TokenStream2> {
    match &sig.output {
        ReturnType::Default => Some(quote!(())),
        ReturnType::Type(_, ty) if !contains_impl(ty) => Some(quote!(#ty)),
        ReturnType::Type(..) => None,
    }
}

fn contains_impl(ty: &Type) -> bool {
    quote!(#ty)
        .to_string()
        .split_whitespace()
        .any(|t| t == "impl")
}

/// A sync fn that returns a borrow and takes a `&mut` cannot run its body in
/// a closure: the borrow could not leave it.
fn lends_from_mut(sig: &Signature) -> bool {
    let output = match &sig.output {
        ReturnType::Default => return false,
        ReturnType::Type(_, ty) => quote!(#ty).to_string(),
    };
    let borrows = output.contains('&') || output.contains('\'');
    let takes_mut = sig.inputs.iter().any(|arg| {
        let text = match arg {
            FnArg::Receiver(r) => quote!(#r).to_string(),
            FnArg::Typed(t) => {
                let ty = &t.ty;
                quote!(#ty).to_string()
            }
        };
        text.contains("& mut") || text.contains("&mut")
    });
    borrows && takes_mut
}

fn arg_writers(sig: &Signature, options: &Options) -> TokenStream2 {
    let w = format_ident!("__nt_w");
    let mut out = TokenStream2::new();
    for arg in &sig.inputs {
        let line = match arg {
            FnArg::Receiver(r) => {
                let value = if r.reference.is_none() && r.colon_token.is_none() {
                    quote!(&self)
                } else {
                    quote!(&*self)
                };
                quote_spanned!(r.span()=> (&::nodetrace_agent::__private::SelfArg(#value)).nt_fmt(#w);)
            }
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(p) if !options.skip_all && !options.skip.contains(&p.ident) => {
                    let name = &p.ident;
                    quote_spanned!(t.span()=> (&::nodetrace_agent::__private::Arg(&#name)).nt_fmt(#w);)
                }
                _ => quote!(#w.skipped();),
            },
        };
        out.extend(line);
    }
    out
}

/// `let a = a;` for each named argument: the switched-on branch then takes
/// the address of its own copies, and the switched-off branch keeps the
/// arguments in registers.
fn rebind_args(sig: &Signature) -> TokenStream2 {
    let mut out = TokenStream2::new();
    for arg in &sig.inputs {
        if let FnArg::Typed(t) = arg
            && let Pat::Ident(p) = &*t.pat
            && p.by_ref.is_none()
            && p.subpat.is_none()
        {
            let (name, mutability) = (&p.ident, &p.mutability);
            out.extend(quote!(#[allow(unused_mut)] let #mutability #name = #name;));
        }
    }
    out
}

/// Whether a body holds items (or statement macros that may expand to
/// them): such a body is not written twice, since its items would be too.
fn defines_items(block: &Block) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_item(&mut self, _: &'ast Item) {
            self.0 = true;
        }
        fn visit_stmt_macro(&mut self, _: &'ast syn::StmtMacro) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_block(block);
    finder.0
}

fn instrument(sig: &Signature, block: &Block, options: &Options) -> syn::Result<TokenStream2> {
    let arity = u8::try_from(sig.inputs.len()).map_err(|_| {
        syn::Error::new(
            sig.inputs.span(),
            "#[traced] supports at most 255 parameters",
        )
    })?;
    let name = sig.ident.to_string();
    let is_async = sig.asyncness.is_some();
    let cs = Ident::new("__NODETRACE_CALLSITE", Span::mixed_site());
    let args = arg_writers(sig, options);
    let uses = quote! {
        #[allow(unused_imports)]
        use ::nodetrace_agent::__private::{FmtDebug as _, FmtOpaque as _, FmtSelfPid as _, FmtSelfProcess as _};
    };
    let callsite = quote! {
        #[::nodetrace_agent::__private::linkme::distributed_slice(::nodetrace_agent::__private::CALLSITES)]
        #[linkme(crate = ::nodetrace_agent::__private::linkme)]
        static #cs: ::nodetrace_agent::Callsite = ::nodetrace_agent::Callsite::new(::nodetrace_agent::Metadata {
            module_path: ::core::module_path!(),
            name: #name,
            arity: #arity,
            file: ::core::file!(),
            line: ::core::line!(),
            is_async: #is_async,
        });
    };
    let output = nameable_output(sig);
    // Switched off, the body runs as written; switched on, a second copy runs
    // under the recording guard. A body with items is written once, and pays
    // for the guard's checks when off.
    let twice = !defines_items(block);
    let on = if is_async {
        let (body, ret) = match &output {
            Some(ty) => (
                quote!(::nodetrace_agent::__private::typed::<#ty, _>(async move #block)),
                quote!(|__nt_w: &mut ::nodetrace_agent::__private::ArgWriter, __nt_r: &#ty| {
                    #uses
                    (&::nodetrace_agent::__private::Arg(__nt_r)).nt_fmt(__nt_w);
                }),
            ),
            None => (
                quote!(async move #block),
                quote!(
                    |__nt_w: &mut ::nodetrace_agent::__private::ArgWriter, _: &_| __nt_w.skipped()
                ),
            ),
        };
        quote!({
            ::nodetrace_agent::__private::instrument(
                ::nodetrace_agent::__private::start_call(&#cs, __nt_flags, |__nt_w| { #uses #args }),
                #body,
                #ret,
            ).await
        })
    } else {
        let rebind = rebind_args(sig);
        let guard = quote! {
            #rebind
            let __nt_guard = ::nodetrace_agent::__private::CallGuard::enter(&#cs, __nt_flags, |__nt_w| { #uses #args });
        };
        if lends_from_mut(sig) {
            quote!({ #guard #block })
        } else if twice {
            quote!({
                #rebind
                ::nodetrace_agent::__private::run(
                    ::nodetrace_agent::__private::CallGuard::enter(&#cs, __nt_flags, |__nt_w| { #uses #args }),
                    || #block,
                    |__nt_w, __nt_r| {
                        #uses
                        (&::nodetrace_agent::__private::Arg(__nt_r)).nt_fmt(__nt_w);
                    },
                )
            })
        } else {
            let annotation = output.map(|ty| quote!(: #ty));
            quote!({
                #guard
                #[allow(clippy::redundant_closure_call)]
                let __nt_ret #annotation = (|| #block)();
                __nt_guard.exit(|__nt_w| {
                    #uses
                    (&::nodetrace_agent::__private::Arg(&__nt_ret)).nt_fmt(__nt_w);
                });
                __nt_ret
            })
        }
    };
    let off = if is_async {
        quote!(__nt_flags == 0 || ::nodetrace_agent::__private::only_counted(&#cs, __nt_flags))
    } else {
        quote!(__nt_flags == 0)
    };
    let flags = quote!(let __nt_flags = ::nodetrace_agent::__private::flags(&#cs););
    Ok(if twice {
        quote! {
            #callsite
            #flags
            if #off #block else {
                ::core::hint::cold_path();
                #on
            }
        }
    } else {
        quote! { #callsite #flags #on }
    })
}
