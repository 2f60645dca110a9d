//! Unit tests of the extractors that need no routing (routing ones: `tests/layer/keys.rs`).

use http::request::Parts;
use http::{Method, StatusCode};

use super::*;

fn head(method: Method, uri: &str, headers: &[(&str, &[u8])]) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, http::HeaderValue::from_bytes(value).unwrap());
    }
    builder.body(()).unwrap().into_parts().0
}

fn status(result: Result<Option<String>, KeyError>) -> StatusCode {
    result.expect_err("an error").status()
}

#[test]
fn ready_made_extractors() {
    let get = head(Method::GET, "/orders/42?x=1", &[("x-tenant", b"acme")]);
    assert_eq!(path().extract(&get), Ok(Some("/orders/42".into())));
    assert_eq!(constant("all").extract(&get), Ok(Some("all".into())));
    assert_eq!(header("X-Tenant").extract(&get), Ok(Some("acme".into())));
    let p = path().with_prefix("p:");
    assert_eq!(p.extract(&get), Ok(Some("p:/orders/42".into())));
    assert_eq!(mutating(path()).extract(&get), Ok(None));
    let post = head(Method::POST, "/a", &[]);
    assert_eq!(mutating(path()).extract(&post), Ok(Some("/a".into())));
    assert_eq!(path().for_methods(&[Method::GET]).extract(&post), Ok(None));
}

#[test]
fn path_is_decoded_and_normalised() {
    let key = |uri: &str| path().extract(&head(Method::GET, uri, &[]));
    assert_eq!(key("/p/42"), Ok(Some("/p/42".into())));
    assert_eq!(key("/p/%34%32"), key("/p/42"));
    assert_eq!(key("//p/./x/../42/?q=1"), key("/p/42"));
    assert_eq!(key("/p/a%2Fb"), Ok(Some("/p/a%2Fb".into())));
    assert_ne!(key("/p/a%2Fb"), key("/p/a/b"));
    for bad in ["/p/%ZZ", "/p/%FF", "/p/%00", "/p/%0A"] {
        assert_eq!(status(key(bad)), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[test]
fn missing_header_is_400_unless_optional() {
    let none = head(Method::GET, "/", &[]);
    let empty = head(Method::GET, "/", &[("x-tenant", b"")]);
    for parts in [&none, &empty] {
        let error = header("x-tenant").extract(parts).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(error.message().contains("x-tenant"), "{error}");
        assert_eq!(header("x-tenant").optional().extract(parts), Ok(None));
    }
    let set = head(Method::GET, "/", &[("x-tenant", b"acme")]);
    assert_eq!(
        header("x-tenant").optional().extract(&set),
        Ok(Some("acme".into()))
    );
}

#[test]
fn bad_headers_are_400() {
    let bad = head(Method::GET, "/", &[("x-tenant", b"\xff\xfe")]);
    assert_eq!(
        status(header("x-tenant").extract(&bad)),
        StatusCode::BAD_REQUEST
    );
    let twice = head(Method::GET, "/", &[("x-tenant", b"a"), ("x-tenant", b"b")]);
    assert_eq!(
        status(header("x-tenant").optional().extract(&twice)),
        StatusCode::BAD_REQUEST
    );
    let tab = head(Method::GET, "/", &[("x-tenant", b"a\tb")]);
    assert_eq!(
        status(header("x-tenant").extract(&tab)),
        StatusCode::BAD_REQUEST
    );
    let utf8 = head(Method::GET, "/", &[("x-tenant", "ключ".as_bytes())]);
    assert_eq!(header("x-tenant").extract(&utf8), Ok(Some("ключ".into())));
}

#[test]
fn invalid_header_name_is_an_error_not_a_panic() {
    assert!(try_header("x tenant").is_err());
    assert!(try_header("x-tenant").is_ok());
    assert!(try_header(http::header::AUTHORIZATION).is_ok());
    let parts = head(Method::GET, "/", &[("x-tenant", b"acme")]);
    for name in ["x tenant", "", "x\ntenant"] {
        let error = header(name).extract(&parts).unwrap_err();
        assert_eq!(
            error.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{name:?}"
        );
    }
}

#[test]
fn pointless_configurations_are_500() {
    let parts = head(Method::POST, "/a", &[]);
    assert_eq!(
        status(constant("").extract(&parts)),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        status(methods(&[], path()).extract(&parts)),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[test]
fn targets_without_a_path_pass_path_extractors() {
    let connect = head(Method::CONNECT, "example.com:443", &[("x-tenant", b"acme")]);
    assert_eq!(connect.uri.path(), "");
    let star = head(Method::OPTIONS, "*", &[]);
    for parts in [&connect, &star] {
        assert_eq!(path().extract(parts), Ok(None), "{}", parts.uri);
        #[cfg(feature = "axum")]
        {
            assert_eq!(route().extract(parts), Ok(None), "{}", parts.uri);
            assert_eq!(param("id").extract(parts), Ok(None), "{}", parts.uri);
            assert_eq!(param_as::<u64>("id").extract(parts), Ok(None));
        }
    }
    // The header does not depend on the path: still locked.
    assert_eq!(
        header("x-tenant").extract(&connect),
        Ok(Some("acme".into()))
    );
}

#[test]
fn closures() {
    let get = head(Method::GET, "/x", &[]);
    let f = from_fn(|parts| Some(parts.uri.path().to_uppercase()));
    assert_eq!(f.extract(&get), Ok(Some("/X".into())));
    let t = try_fn(|_: &Parts| Err::<Option<String>, _>("nope"));
    assert_eq!(t.extract(&get), Err(KeyError::new("nope")));
}
