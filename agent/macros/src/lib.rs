//! `#[traced]`: makes functions traceable by nodetrace.
//!
//! Put it on a `fn`, an `async fn`, an `impl` block (every method) or an
//! inline `mod` (every function, methods included). Each function gets a
//! `static` callsite in the agent's link-time registry; see
//! `nodetrace_agent` for what that costs. Options:
//!
//! - `skip(arg, ...)` leaves arguments out of call events (a name that is
//!   not a parameter is an error), `skip_all` leaves out all of them;
//! - `crate = path` names the agent when it is not `::nodetrace_agent`
//!   (a renamed dependency, or a facade crate that re-exports it).
//!
//! # How a function is rewritten
//!
//! The body is written once, as a `move` closure called at once (so that
//! `return` and `?` pass its value to the return event), with the declared
//! return type, so every coercion of the original still happens. It runs
//! once, switched on or off: before it, behind the callsite's flags test,
//! the call is recorded (the argument writer is made there, holding copies
//! of the arguments whose type is `Copy` by its spelling, so those keep
//! their registers in a switched-off call); after it, the return is
//! recorded, out of line, if the call was. One closure, one type: `impl
//! Trait` returns, closures and items in the body mean what they meant.
//! Parameters are moved into the closure and bound again in their order,
//! so they drop in the order they did. A parameter written as a pattern
//! (`Path(id): Path<u32>`) is received whole and destructured first thing,
//! so that call events show the whole value. A lone function's body is not
//! parsed: the expansion only moves its tokens.
//!
//! An `async fn` keeps its body in one `async move` block, awaited plain
//! when off and under the recording wrapper when on. A `#[track_caller]`
//! function runs its body inline (a closure would hide the caller's
//! location); its returns through `return` or `?` carry no value.
//!
//! Methods that a macro generates inside a traced `impl` block are not
//! traced: the attribute sees the macro call, not the methods it expands
//! to. Put `#[traced]` inside the macro's output instead.
//!
//! A method's callsite is named with its type
//! (`kv::store:Store::get/2`) when the attribute is on its `impl` block.
//! On a lone method it is named `kv::store:get/2`: Rust hands an attribute
//! only the item it is on, so the method's attribute never sees the type,
//! and its static callsite cannot name `Self`. Put `#[traced]` on the
//! `impl` block to have the type in `ls`, trace lines and profiles.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{
    Attribute, FnArg, GenericParam, Generics, Ident, ImplItem, ImplItemFn, Item, ItemFn, ItemImpl,
    ItemMod, Pat, PatType, Path, Receiver, ReturnType, Signature, Token, Type, TypeParamBound,
    WherePredicate, parse_macro_input, parse_quote,
};

/// Makes a function, every method of an `impl` block, or every function of
/// an inline `mod` traceable. See the crate docs.
#[proc_macro_attribute]
pub fn traced(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr as Options);
    // A lone function is read without parsing its body, which the
    // expansion only moves: most of a traced crate's build is in the bodies.
    if let Ok(f) = syn::parse::<FnTokens>(item.clone()) {
        return match expand_fn_tokens(f, &options, None) {
            Ok(tokens) => tokens.into(),
            Err(err) => err.to_compile_error().into(),
        };
    }
    let item = parse_macro_input!(item as Item);
    match expand_item(item, &options, None, true) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

#[derive(Clone)]
struct Options {
    skip: Vec<Ident>,
    skip_all: bool,
    krate: Path,
}

impl Parse for Options {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut options = Options {
            skip: Vec::new(),
            skip_all: false,
            krate: parse_quote!(::nodetrace_agent),
        };
        let metas = Punctuated::<syn::Meta, Token![,]>::parse_terminated(input)?;
        for meta in metas {
            match &meta {
                syn::Meta::Path(p) if p.is_ident("skip_all") => options.skip_all = true,
                syn::Meta::List(list) if list.path.is_ident("skip") => {
                    let names =
                        list.parse_args_with(Punctuated::<Ident, Token![,]>::parse_terminated)?;
                    options.skip.extend(names);
                }
                syn::Meta::NameValue(nv) if nv.path.is_ident("crate") => {
                    let syn::Expr::Path(p) = &nv.value else {
                        return Err(syn::Error::new(
                            nv.value.span(),
                            "`crate = ...` takes a path, e.g. `crate = my_facade::agent`",
                        ));
                    };
                    options.krate = p.path.clone();
                }
                _ => {
                    return Err(syn::Error::new(
                        meta.span(),
                        "unknown #[traced] option: expected `skip(arg, ...)`, `skip_all` or `crate = path`",
                    ));
                }
            }
        }
        Ok(options)
    }
}

/// The `impl` block a method is in: its type and trait as the callsite
/// names them, and its generics.
struct ImplCtx {
    self_type: String,
    trait_name: Option<String>,
    generics: Generics,
}

fn expand_item(
    item: Item,
    options: &Options,
    ctx: Option<&ImplCtx>,
    direct: bool,
) -> syn::Result<TokenStream2> {
    match item {
        Item::Fn(f) => expand_fn(f, options, ctx, direct),
        Item::Impl(i) => Ok(expand_impl(i, options)),
        Item::Mod(m) => expand_mod(m, options),
        Item::Trait(t) if direct => Err(syn::Error::new(
            t.trait_token.span(),
            "#[traced] cannot trace a trait declaration: put it on the trait's impl blocks, where the bodies are",
        )),
        other if direct => Err(syn::Error::new(
            other.span(),
            "#[traced] goes on a fn, an impl block or an inline mod",
        )),
        other => Ok(quote!(#other)),
    }
}

/// Whether an item carries its own `#[traced]`, which then expands it.
fn has_own_attr(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "traced")
    })
}

fn expand_fn(
    f: ItemFn,
    options: &Options,
    ctx: Option<&ImplCtx>,
    direct: bool,
) -> syn::Result<TokenStream2> {
    // A const fn of a traced module is left as it is; named directly, it
    // is refused by `expand_fn_tokens`.
    if f.sig.constness.is_some() && !direct {
        return Ok(quote!(#f));
    }
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = f;
    let stmts = &block.stmts;
    // syn keeps a body's `#![...]` with the function's attributes.
    let (inner, attrs) = attrs
        .into_iter()
        .partition(|a| matches!(a.style, syn::AttrStyle::Inner(_)));
    let f = FnTokens {
        attrs,
        inner,
        vis,
        sig,
        body: quote!(#(#stmts)*),
    };
    expand_fn_tokens(f, options, ctx)
}

/// A function with its body left as tokens.
struct FnTokens {
    attrs: Vec<Attribute>,
    /// `#![...]` at the top of the body.
    inner: Vec<Attribute>,
    vis: syn::Visibility,
    sig: Signature,
    body: TokenStream2,
}

impl Parse for FnTokens {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let content;
        syn::braced!(content in input);
        let inner = content.call(Attribute::parse_inner)?;
        let body = content.parse()?;
        Ok(FnTokens {
            attrs,
            inner,
            vis,
            sig,
            body,
        })
    }
}

fn expand_fn_tokens(
    f: FnTokens,
    options: &Options,
    ctx: Option<&ImplCtx>,
) -> syn::Result<TokenStream2> {
    let FnTokens {
        attrs,
        inner,
        vis,
        mut sig,
        body,
    } = f;
    if let Some(constness) = sig.constness {
        return Err(syn::Error::new(
            constness.span(),
            "#[traced] cannot trace a const fn: it may run at compile time, where nothing records",
        ));
    }
    let body = instrument(&mut sig, &attrs, body, options, ctx)?;
    Ok(quote! { #(#attrs)* #vis #sig { #(#inner)* #body } })
}

fn last_segment(path: &Path) -> String {
    path.segments
        .last()
        .map_or_else(String::new, |s| s.ident.to_string())
}

fn expand_impl(mut imp: ItemImpl, options: &Options) -> TokenStream2 {
    let self_type = match &*imp.self_ty {
        Type::Path(p) if p.qself.is_none() => last_segment(&p.path),
        other => other.to_token_stream().to_string(),
    };
    let ctx = ImplCtx {
        self_type,
        trait_name: imp.trait_.as_ref().map(|(_, path, _)| last_segment(path)),
        generics: imp.generics.clone(),
    };
    let mut errors = TokenStream2::new();
    for item in &mut imp.items {
        if let ImplItem::Fn(method) = item {
            if method.sig.constness.is_some() || has_own_attr(&method.attrs) {
                continue;
            }
            let ImplItemFn {
                sig, block, attrs, ..
            } = method;
            let stmts = &block.stmts;
            match instrument(sig, attrs, quote!(#(#stmts)*), options, Some(&ctx)) {
                // Handed back as tokens: parsing the expansion again
                // would cost more than writing it.
                Ok(body) => {
                    let expr = syn::Expr::Verbatim(body);
                    block.stmts = vec![syn::Stmt::Expr(expr, None)];
                }
                Err(err) => errors.extend(err.to_compile_error()),
            }
        }
    }
    quote!(#imp #errors)
}

fn expand_mod(mut module: ItemMod, options: &Options) -> syn::Result<TokenStream2> {
    let Some((brace, items)) = module.content.take() else {
        return Err(syn::Error::new(
            module
                .semi
                .map_or_else(|| module.ident.span(), |s| s.span()),
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
            let tokens = expand_item(item, options, None, false)?;
            expanded.push(syn::parse2(tokens)?);
        }
    }
    module.content = Some((brace, expanded));
    Ok(quote!(#module))
}

/// A name of ours that user code cannot see or clash with.
fn hidden(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The generic type parameters in scope, and those bounded by `Debug`.
struct Generic {
    all: Vec<String>,
    debug: Vec<String>,
}

impl Generic {
    fn of(sig: &Signature, ctx: Option<&ImplCtx>) -> Generic {
        let mut g = Generic {
            all: Vec::new(),
            debug: Vec::new(),
        };
        let impl_generic = ctx.is_some_and(|c| c.generics.type_params().next().is_some());
        for generics in ctx.map(|c| &c.generics).into_iter().chain([&sig.generics]) {
            g.collect(generics);
        }
        if impl_generic {
            g.all.push("Self".to_owned());
        }
        g
    }

    fn collect(&mut self, generics: &Generics) {
        let is_debug = |bounds: &Punctuated<TypeParamBound, Token![+]>| {
            bounds.iter().any(|b| {
                matches!(b, TypeParamBound::Trait(t)
                    if t.path.segments.last().is_some_and(|s| s.ident == "Debug"))
            })
        };
        for param in &generics.params {
            if let GenericParam::Type(t) = param {
                self.all.push(t.ident.to_string());
                if is_debug(&t.bounds) {
                    self.debug.push(t.ident.to_string());
                }
            }
        }
        for pred in generics.where_clause.iter().flat_map(|w| &w.predicates) {
            if let WherePredicate::Type(p) = pred
                && let Type::Path(tp) = &p.bounded_ty
                && let Some(id) = tp.path.get_ident()
                && is_debug(&p.bounds)
            {
                self.debug.push(id.to_string());
            }
        }
    }

    /// Whether a value of type `ty` can be shown with `Debug` through
    /// autoref specialization, which cannot see through a generic
    /// parameter without a `Debug` bound (nor an `impl Trait`).
    fn shows_debug(&self, ty: &Type) -> bool {
        self.shows(ty, false)
    }

    /// The same for a returned value: an `impl Trait` there is a concrete
    /// type that the value's writer sees, unless it may hold a generic.
    fn shows_debug_returned(&self, ty: &Type) -> bool {
        self.shows(ty, self.all.is_empty())
    }

    fn shows(&self, ty: &Type, impl_ok: bool) -> bool {
        struct Finder<'a>(&'a Generic, bool, bool);
        impl<'ast> Visit<'ast> for Finder<'_> {
            fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
                if self.2 {
                    syn::visit::visit_type_impl_trait(self, t);
                } else {
                    self.1 = false;
                }
            }
            fn visit_path(&mut self, p: &'ast Path) {
                if let Some(first) = p.segments.first() {
                    let name = first.ident.to_string();
                    if self.0.all.contains(&name) && !self.0.debug.contains(&name) {
                        self.1 = false;
                    }
                }
                syn::visit::visit_path(self, p);
            }
        }
        let mut finder = Finder(self, true, impl_ok);
        finder.visit_type(ty);
        finder.1
    }
}

/// `ty` with every `impl Trait` replaced by `_`, for a closure's return
/// type; `None` if nothing is left to annotate.
fn closure_return(ty: &Type) -> Option<Type> {
    struct Infer;
    impl VisitMut for Infer {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if matches!(ty, Type::ImplTrait(_)) {
                *ty = parse_quote!(_);
            } else {
                syn::visit_mut::visit_type_mut(self, ty);
            }
        }
    }
    let mut ty = ty.clone();
    Infer.visit_type_mut(&mut ty);
    (!matches!(ty, Type::Infer(_))).then_some(ty)
}

/// Attributes of a parameter that decide whether it exists.
fn cfg_attrs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg") || a.path().is_ident("cfg_attr"))
        .collect()
}

/// Every name a pattern binds.
fn bound_names(pat: &Pat) -> Vec<Ident> {
    struct Names(Vec<Ident>);
    impl<'ast> Visit<'ast> for Names {
        fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
            self.0.push(p.ident.clone());
            syn::visit::visit_pat_ident(self, p);
        }
    }
    let mut names = Names(Vec::new());
    names.visit_pat(pat);
    names.0
}

/// One parameter as the expansion handles it.
struct Param {
    /// `#[cfg]` attributes it carries.
    cfg: Vec<Attribute>,
    /// The name the whole value has in the function, and whether it was
    /// written `mut`.
    kind: ParamKind,
    /// Names it binds, for `skip`.
    names: Vec<Ident>,
    ty: Option<Type>,
}

enum ParamKind {
    Receiver(Receiver),
    /// `name: T` or `mut name: T`.
    Ident(Ident, Option<Token![mut]>),
    /// A pattern, now received whole as the hidden name and destructured.
    Pattern(Ident, Box<Pat>),
}

/// Reads the parameters, renaming those written as patterns so that the
/// whole value has a name.
fn params(sig: &mut Signature) -> Vec<Param> {
    let mut out = Vec::new();
    for (i, arg) in sig.inputs.iter_mut().enumerate() {
        match arg {
            FnArg::Receiver(r) => out.push(Param {
                cfg: cfg_attrs(&r.attrs).into_iter().cloned().collect(),
                kind: ParamKind::Receiver(r.clone()),
                names: Vec::new(),
                ty: None,
            }),
            FnArg::Typed(PatType { attrs, pat, ty, .. }) => {
                let cfg = cfg_attrs(attrs).into_iter().cloned().collect();
                let names = bound_names(pat);
                let kind = match &mut **pat {
                    // `mut` moves to the binding inside, where it acts.
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                        ParamKind::Ident(p.ident.clone(), p.mutability.take())
                    }
                    _ => {
                        let whole = hidden(&format!("__nt_arg{i}"));
                        let original = std::mem::replace(pat, parse_quote!(#whole));
                        ParamKind::Pattern(whole, original)
                    }
                };
                out.push(Param {
                    cfg,
                    kind,
                    names,
                    ty: Some((**ty).clone()),
                });
            }
        }
    }
    out
}

fn check_skips(params: &[Param], options: &Options) -> syn::Result<()> {
    for name in &options.skip {
        if !params.iter().any(|p| p.names.contains(name)) {
            let known: Vec<String> = params
                .iter()
                .flat_map(|p| &p.names)
                .map(Ident::to_string)
                .collect();
            return Err(syn::Error::new(
                name.span(),
                format!(
                    "`skip({name})`: no parameter is named `{name}` (the parameters are: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a value of type `ty` is `Copy` by its spelling (a primitive, a
/// shared reference, a raw pointer, or a tuple of them): the argument
/// writer then holds a copy, and the argument keeps its register. Not an
/// array, whose copy could be large and would sit in the traced frame. A
/// type of the user's named like a primitive (`struct u32(String)`) would
/// be moved by the copy: no code names its types so.
fn copied(ty: &Type) -> bool {
    const PRIMITIVES: &[&str] = &[
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
        "f32", "f64", "bool", "char",
    ];
    match ty {
        Type::Path(p) => {
            p.qself.is_none()
                && p.path
                    .get_ident()
                    .is_some_and(|id| PRIMITIVES.iter().any(|prim| id == prim))
        }
        Type::Reference(r) => r.mutability.is_none(),
        Type::Ptr(_) => true,
        Type::Tuple(t) => t.elems.iter().all(copied),
        Type::Paren(p) => copied(&p.elem),
        Type::Group(g) => copied(&g.elem),
        _ => false,
    }
}

/// The argument writer's captures and statements: for each argument, a
/// `let` run before the writer is made (a copy, a reference, or the type's
/// name), and the statement that writes it into `w`. The writer is a `move`
/// closure of those captures only, made where the call is recorded, so a
/// switched-off call takes the address of no argument that is `Copy` by
/// its spelling.
fn arg_writers(
    params: &[Param],
    options: &Options,
    generic: &Generic,
    k: &Path,
) -> (TokenStream2, TokenStream2) {
    let w = hidden("__nt_w");
    let (mut captures, mut writes) = (TokenStream2::new(), TokenStream2::new());
    for (i, p) in params.iter().enumerate() {
        let cfg = &p.cfg;
        let c = hidden(&format!("__nt_c{i}"));
        let skipped = options.skip_all || p.names.iter().any(|n| options.skip.contains(n));
        let (capture, write) = match &p.kind {
            ParamKind::Receiver(_) if generic.all.iter().any(|g| g == "Self") => {
                (None, quote!(#w.current_process();))
            }
            ParamKind::Receiver(r) => {
                let this = &r.self_token;
                let value = if r.reference.is_none() && r.colon_token.is_none() {
                    quote!(&#this)
                } else {
                    quote!(&*#this)
                };
                (
                    Some(quote!(let #c = #value;)),
                    quote_spanned!(r.span()=> (&#k::__private::SelfArg(#c)).nt_fmt(#w);),
                )
            }
            _ if skipped => (None, quote!(#w.skipped();)),
            ParamKind::Ident(name, _) | ParamKind::Pattern(name, _) => {
                let ty = p.ty.as_ref().expect("a typed parameter");
                if !generic.shows_debug(ty) {
                    (
                        Some(quote!(let #c = ::core::any::type_name_of_val(&#name);)),
                        quote!(#w.opaque(#c);),
                    )
                } else if let Type::Reference(_) = ty {
                    (
                        Some(quote!(let #c: &_ = &*#name;)),
                        quote!((&#k::__private::Arg(&#c)).nt_fmt(#w);),
                    )
                } else if copied(ty) {
                    (
                        Some(quote!(let #c = #name;)),
                        quote!((&#k::__private::Arg(&#c)).nt_fmt(#w);),
                    )
                } else {
                    (
                        Some(quote!(let #c = &#name;)),
                        quote!((&#k::__private::Arg(#c)).nt_fmt(#w);),
                    )
                }
            }
        };
        if let Some(capture) = capture {
            captures.extend(quote!(#(#cfg)* #capture));
        }
        writes.extend(quote!(#(#cfg)* #write));
    }
    (captures, writes)
}

/// `let a = a;` for each parameter, in order, and `let PAT = whole;` for
/// those written as patterns: inside the body's closure, they then drop in
/// the order they did.
fn rebind(params: &[Param]) -> TokenStream2 {
    let mut out = TokenStream2::new();
    for p in params {
        let cfg = &p.cfg;
        match &p.kind {
            ParamKind::Receiver(_) => {}
            ParamKind::Ident(name, mutability) => {
                out.extend(quote!(#(#cfg)* #[allow(unused_mut, unused_variables)] let #mutability #name = #name;));
            }
            // Moved in whole first: what the pattern leaves (a `_`) drops
            // with the other parameters, not after them.
            ParamKind::Pattern(whole, pat) if matches!(**pat, Pat::Wild(_)) => {
                out.extend(quote!(#(#cfg)* let #whole = #whole;));
            }
            ParamKind::Pattern(whole, pat) => {
                out.extend(quote!(
                    #(#cfg)* let #whole = #whole;
                    #(#cfg)* #[allow(unused_mut, unused_variables)] let #pat = #whole;
                ));
            }
        }
    }
    out
}

/// The arity as a constant: parameters that a `#[cfg]` removes do not count.
fn arity(params: &[Param]) -> syn::Result<TokenStream2> {
    if params.len() > usize::from(u8::MAX) {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[traced] supports at most 255 parameters",
        ));
    }
    let n = hidden("__nt_n");
    let counts = params.iter().map(|p| {
        let cfg = &p.cfg;
        quote!(#(#cfg)* { #n += 1; })
    });
    Ok(quote!({ let mut #n: u8 = 0; #(#counts)* #n }))
}

fn is_track_caller(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("track_caller"))
}

fn instrument(
    sig: &mut Signature,
    attrs: &[Attribute],
    stmts: TokenStream2,
    options: &Options,
    ctx: Option<&ImplCtx>,
) -> syn::Result<TokenStream2> {
    let k = &options.krate;
    let params = params(sig);
    check_skips(&params, options)?;
    let generic = Generic::of(sig, ctx);
    let arity = arity(&params)?;
    let name = sig.ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let is_async = sig.asyncness.is_some();
    let (cs, flags, call, body, w, r) = (
        hidden("__NODETRACE_CALLSITE"),
        hidden("__nt_flags"),
        hidden("__nt_call"),
        hidden("__nt_body"),
        hidden("__nt_w"),
        hidden("__nt_r"),
    );
    let some = |text: Option<&String>| match text {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    };
    let self_type = some(ctx.map(|c| &c.self_type));
    let trait_name = some(ctx.and_then(|c| c.trait_name.as_ref()));
    let callsite = quote! {
        #[#k::__private::linkme::distributed_slice(#k::__private::CALLSITES)]
        #[linkme(crate = #k::__private::linkme)]
        static #cs: #k::Callsite = #k::Callsite::new(#k::Metadata {
            module_path: ::core::module_path!(),
            self_type: #self_type,
            trait_name: #trait_name,
            name: #name,
            arity: #arity,
            file: ::core::file!(),
            line: ::core::line!(),
            is_async: #is_async,
        });
    };
    let uses = quote! {
        #[allow(unused_imports)]
        use #k::__private::{FmtDebug as _, FmtOpaque as _, FmtSelfPid as _, FmtSelfProcess as _};
    };
    let (captures, args) = arg_writers(&params, options, &generic, k);
    let rebinds = rebind(&params);
    let output: Type = match &sig.output {
        ReturnType::Default => parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let never = matches!(output, Type::Never(_));
    let write_ret = if never {
        quote!(let _ = (#w, #r);)
    } else if generic.shows_debug_returned(&output) {
        quote!(#uses (&#k::__private::Arg(#r)).nt_fmt(#w);)
    } else {
        quote!(#w.opaque(::core::any::type_name_of_val(#r));)
    };
    let annotation = closure_return(&output);
    let start = quote! {
        #callsite
        let #flags = #k::__private::flags(&#cs);
    };
    let expanded = if is_async {
        let pin = annotation
            .as_ref()
            .map(|ty| quote!(if false { return #k::__private::never::<#ty>(); }));
        quote! {
            #start
            let #call = if #flags != 0 {
                #captures
                #k::__private::start_call(&#cs, #flags, move |#w| { #uses #args })
            } else {
                ::core::option::Option::None
            };
            let #body = async move { #pin #rebinds #stmts };
            match #call {
                ::core::option::Option::None => #body.await,
                ::core::option::Option::Some(#call) => {
                    #k::__private::instrument(#call, #body, |#w, #r| { #write_ret }).await
                }
            }
        }
    } else {
        // The call is recorded behind the flags test, where the argument
        // writer is made; the body then runs once, switched on or off.
        let track_caller = is_track_caller(attrs);
        let enter = quote! {
            let #call = #k::__private::Call::new(if #flags != 0 {
                ::core::hint::cold_path();
                #captures
                #k::__private::enter(&#cs, #flags, &mut move |#w| { #uses #args })
            } else {
                0
            });
        };
        let (run, exit) = if track_caller {
            // A closure would hide the caller's location: the body runs
            // inline, and its `return`s and `?`s carry no value.
            let annotation = annotation.map(|ty| quote!(: #ty));
            (
                quote! {
                    #rebinds
                    #[allow(clippy::diverging_sub_expression)]
                    let #r #annotation = { #stmts };
                },
                quote!(#r),
            )
        } else {
            let annotation = annotation.map(|ty| quote!(-> #ty));
            (
                quote!(let #body = #k::__private::body(#[inline(always)] move || #annotation {
                    #rebinds
                    #stmts
                });),
                quote!(#body()),
            )
        };
        if never {
            quote!(#start #enter #run #exit)
        } else if track_caller {
            // A body that always panics leaves the exit unreachable: the
            // user's code did not write it, so it is not warned of.
            quote! {
                #start
                #enter
                #run
                #[allow(unreachable_code)]
                return #call.exit(#exit, |#w, #r| { #write_ret });
            }
        } else {
            quote! {
                #start
                #enter
                #run
                #call.exit(#exit, |#w, #r| { #write_ret })
            }
        }
    };
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impl_trait_becomes_inferred_in_a_closure_return() {
        let ty: Type = parse_quote!(Result<impl Iterator<Item = u32>, String>);
        let got = closure_return(&ty).unwrap();
        assert_eq!(quote!(#got).to_string(), "Result < _ , String >");
        let bare: Type = parse_quote!(impl Iterator<Item = u32>);
        assert!(closure_return(&bare).is_none());
    }

    #[test]
    fn generic_types_without_debug_are_shown_by_type_name() {
        let sig: Signature =
            parse_quote!(fn f<T: Default, U: std::fmt::Debug>(t: T, u: U) -> Vec<T>);
        let g = Generic::of(&sig, None);
        assert!(!g.shows_debug(&parse_quote!(Vec<T>)));
        assert!(g.shows_debug(&parse_quote!(Option<U>)));
        assert!(g.shows_debug(&parse_quote!(u32)));
        assert!(!g.shows_debug(&parse_quote!(impl std::fmt::Display)));
    }

    #[test]
    fn a_skip_of_no_parameter_is_an_error() {
        let mut sig: Signature = parse_quote!(fn login(user: &str, password: &str));
        let params = params(&mut sig);
        let options: Options = syn::parse_str("skip(pasword)").unwrap();
        let err = check_skips(&params, &options).unwrap_err().to_string();
        assert!(err.contains("no parameter is named `pasword`"), "{err}");
        assert!(err.contains("user, password"), "{err}");
    }

    #[test]
    fn pattern_parameters_are_received_whole() {
        let mut sig: Signature = parse_quote!(fn h(Path(id): Path<u32>, (a, b): (u8, u8), n: u8));
        let params = params(&mut sig);
        let names: Vec<Vec<String>> = params
            .iter()
            .map(|p| p.names.iter().map(Ident::to_string).collect())
            .collect();
        assert_eq!(names, [vec!["id"], vec!["a", "b"], vec!["n"]]);
        assert_eq!(
            sig.inputs.to_token_stream().to_string(),
            "__nt_arg0 : Path < u32 > , __nt_arg1 : (u8 , u8) , n : u8"
        );
    }
}
