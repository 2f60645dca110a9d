//! Passwords out of URL-like text, whatever its shape.

/// Query parameters whose values are passwords.
const SECRET_PARAMS: [&str; 3] = ["pass", "password", "sentinel_password"];

/// Replaces the passwords of a URL-like string with `***`, even when the URL is malformed:
/// the user info's and the query's (`pass=`, `password=`, `sentinel_password=`).
///
/// Everything between `://` and the **last** `@` counts as user info — even if it holds a
/// `/`, `?` or `#` that a strict parser would not accept there — so a password is hidden in
/// every shape; its part after the first `:` is the password. Without `://`, an `@` still
/// hides everything before it.
pub(crate) fn redact(url: &str) -> String {
    let url = redact_userinfo(url);
    let Some((head, query)) = url.split_once('?') else {
        return url;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.contains(&name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

fn redact_userinfo(url: &str) -> String {
    // Only a real scheme (letters, digits, `+`, `-`, `.`) before `://` counts: in
    // `:pw@host://` the `://` comes after the user info.
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r))
            if s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            (Some(s), r)
        }
        _ => (None, url),
    };
    let Some((userinfo, host_and_tail)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let hidden = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{hidden}@{host_and_tail}"),
        None => format!("{hidden}@{host_and_tail}"),
    }
}
