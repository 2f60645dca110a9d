//! Extractors that read axum's routing: [`route()`], [`param`], [`param_as`].
//!
//! What the layer sees depends on where it is applied:
//!
//! | applied with | a request to | routing data |
//! |---|---|---|
//! | `Router::route_layer`, `MethodRouter::layer` | a route | matched route + parameters |
//! | `Router::layer` | a route | matched route + parameters |
//! | `Router::layer` | the fallback (no route matched) | parameters, no matched route |
//! | `Router::layer` | a target without a path (`CONNECT host:443`, `OPTIONS *`) | none |
//! | a whole `Router` wrapped as a service | anything | none |

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams};
use futures_util::FutureExt;
use http::request::Parts;

use super::text::{LogOnce, names_no_path, normalize_path, refuse_control};
use super::{KeyError, KeyExtractor};

/// The matched axum route and its path parameters: `/orders/{id}/pay?id=42`. Values are
/// percent-decoded (by axum), then `%` and `&` in them are escaped, so that different
/// parameters never give the same key. The method is not part of the key.
///
/// **The key is the text; two spellings of one resource are two keys**: `/orders/42/pay`
/// and `/orders/042/pay` are `?id=42` and `?id=042`. Use [`param_as`] for ids. What axum
/// normalises (percent-decoding of parameters) is normalised; `//`, `.`/`..` segments and
/// trailing slashes are decided by routing (axum matches none of them to a `{param}`).
///
/// Missing value: requests routed to the fallback (no route matched), and targets without a
/// path (`CONNECT host:443`, `OPTIONS *`), pass through unlocked to the router's own
/// `404`/`405`. Wrapping a whole `Router` as a service gives no routing data: the key is
/// then the normalised request path, as with [`path()`](super::path). A parameter with a
/// control character, or not UTF-8 once decoded, is a `400`.
pub fn route() -> Route {
    Route(())
}

/// See [`route()`].
#[derive(Debug, Clone, Copy)]
pub struct Route(());

impl KeyExtractor for Route {
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        if names_no_path(parts) {
            return Ok(None);
        }
        let (matched, params) = match routing(parts)? {
            Routing::Outside => return normalize_path(parts.uri.path()).map(Some),
            Routing::Fallback => return Ok(None),
            Routing::Matched(matched, params) => (matched, params),
        };
        let mut key = matched.as_str().to_owned();
        for (i, (name, value)) in params.iter().enumerate() {
            refuse_control(value, || format!("the path parameter `{name}`"))?;
            key.push(if i == 0 { '?' } else { '&' });
            key.push_str(name);
            key.push('=');
            for c in value.chars() {
                match c {
                    '%' => key.push_str("%25"),
                    '&' => key.push_str("%26"),
                    c => key.push(c),
                }
            }
        }
        Ok(Some(key))
    }
}

/// The percent-decoded value of the path parameter `name` (`{name}` in the route), as text.
///
/// **The key is the text; two spellings of one resource are two keys**: with a `Path<u64>`
/// handler, `/orders/42`, `/orders/042` and `/orders/+42` are one order but three keys, and
/// would run at once. For ids, use [`param_as`], which keys on the parsed value.
///
/// Needs routing data: apply the layer with `Router::layer`, `Router::route_layer` or
/// `MethodRouter::layer`. Missing value, fail closed by default:
/// - a matched route without `{name}` (e.g. a typo: `{order_id}` vs `param("id")`) is a
///   misconfiguration: `500`, logged once per extractor. [`Param::optional`] lets such
///   routes through unlocked instead, for `Router::layer` over routes of which only some
///   have the parameter;
/// - no routing data at all (a whole `Router` wrapped as a service) is a `500` too,
///   `optional` or not;
/// - the fallback (no route matched) and targets without a path (`CONNECT host:443`)
///   pass through unlocked to the router's own `404`/`405`.
///
/// A value with a control character, or not UTF-8 once decoded, is a `400`.
pub fn param(name: impl Into<String>) -> Param {
    Param {
        name: name.into(),
        optional: false,
        log: LogOnce::default(),
    }
}

/// See [`param`].
#[derive(Debug, Clone)]
pub struct Param {
    name: String,
    optional: bool,
    log: LogOnce,
}

impl Param {
    /// Lets matched routes without the parameter through **unlocked** instead of refusing
    /// them with a `500`: for `Router::layer` over routes of which only some have it.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

impl KeyExtractor for Param {
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        if names_no_path(parts) {
            return Ok(None);
        }
        let (matched, params) = match routing(parts)? {
            Routing::Outside => {
                return Err(self.log.misconfigured(KeyError::misconfigured(format!(
                    "key::param(\"{}\") found no routing information: apply RedlockLayer \
                     with Router::layer, Router::route_layer or MethodRouter::layer",
                    self.name
                ))));
            }
            Routing::Fallback => return Ok(None),
            Routing::Matched(matched, params) => (matched, params),
        };
        let Some((_, value)) = params.iter().find(|(name, _)| *name == self.name) else {
            if self.optional {
                return Ok(None);
            }
            return Err(self.log.misconfigured(KeyError::misconfigured(format!(
                "key::param(\"{}\"): the route `{}` has no such parameter (use \
                 key::param(..).optional() to let such routes through unlocked)",
                self.name,
                matched.as_str()
            ))));
        };
        refuse_control(value, || format!("the path parameter `{}`", self.name))?;
        Ok(Some(value.to_owned()))
    }
}

/// The path parameter `name` parsed as a `T`; the key is its `Display` form. With
/// `T = u64`, `/orders/42`, `/orders/042` and `/orders/+42` all give `42`: one resource,
/// one key (what a `Path<u64>` handler sees).
///
/// ```
/// use tower_redlock::layer::key;
///
/// let per_order = key::prefixed("order:", key::param_as::<u64>("id"));
/// # let _ = per_order;
/// ```
///
/// A value that does not parse is a `400` (whose body does not echo the value). Otherwise
/// as [`param`], including [`ParamAs::optional`]. `T`'s `Display` must give one text per
/// value (true of integers, `Uuid`, ...; not of a type that keeps the input's spelling).
pub fn param_as<T>(name: impl Into<String>) -> ParamAs<T>
where
    T: FromStr + fmt::Display,
{
    ParamAs {
        param: param(name),
        value: PhantomData,
    }
}

/// See [`param_as`].
pub struct ParamAs<T> {
    param: Param,
    value: PhantomData<fn() -> T>,
}

impl<T> ParamAs<T> {
    /// As [`Param::optional`].
    pub fn optional(self) -> Self {
        ParamAs {
            param: self.param.optional(),
            value: PhantomData,
        }
    }
}

impl<T> Clone for ParamAs<T> {
    fn clone(&self) -> Self {
        ParamAs {
            param: self.param.clone(),
            value: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ParamAs<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParamAs")
            .field("name", &self.param.name)
            .field("type", &std::any::type_name::<T>())
            .field("optional", &self.param.optional)
            .finish()
    }
}

impl<T> KeyExtractor for ParamAs<T>
where
    T: FromStr + fmt::Display,
{
    fn extract(&self, parts: &Parts) -> Result<Option<String>, KeyError> {
        let Some(text) = self.param.extract(parts)? else {
            return Ok(None);
        };
        match text.parse::<T>() {
            Ok(value) => Ok(Some(value.to_string())),
            Err(_) => Err(KeyError::new(format!(
                "the path parameter `{}` is not valid",
                self.param.name
            ))),
        }
    }
}

/// Where the request stands in axum's routing.
enum Routing {
    /// No routing data: the layer is outside any `Router`.
    Outside,
    /// Routed to a fallback: no route matched.
    Fallback,
    /// A route matched.
    Matched(MatchedPath, RawPathParams),
}

fn routing(parts: &Parts) -> Result<Routing, KeyError> {
    let Some(params) = path_params(parts)? else {
        return Ok(Routing::Outside);
    };
    Ok(match parts.extensions.get::<MatchedPath>() {
        Some(matched) => Routing::Matched(matched.clone(), params),
        None => Routing::Fallback,
    })
}

/// The path parameters axum stored in the extensions; `None` outside routing.
fn path_params(parts: &Parts) -> Result<Option<RawPathParams>, KeyError> {
    // `RawPathParams` is the only public reader of the params and wants `&mut Parts`.
    let mut head = http::Request::new(()).into_parts().0;
    head.extensions = parts.extensions.clone();
    match RawPathParams::from_request_parts(&mut head, &()).now_or_never() {
        Some(Ok(params)) => Ok(Some(params)),
        Some(Err(axum::extract::rejection::RawPathParamsRejection::InvalidUtf8InPathParam(_))) => {
            Err(KeyError::new("a path parameter is not valid UTF-8"))
        }
        _ => Ok(None),
    }
}
