//! Node URL parsing and redaction.

use super::*;

#[test]
fn redacts_passwords_in_every_shape() {
    assert_eq!(redact("redis://u:p@h:1/2"), "redis://u:***@h:1/2");
    assert_eq!(redact("redis://:p@h"), "redis://:***@h");
    assert_eq!(redact("redis://p@h"), "redis://***@h");
    assert_eq!(redact("redis://u:p:q@x@h/0"), "redis://u:***@h/0");
    assert_eq!(redact("garbage:pw@host"), "garbage:***@host");
    assert_eq!(redact("pw@host"), "***@host");
    assert_eq!(redact(":pw@127.0.0.1://"), ":***@127.0.0.1://");
    assert_eq!(redact("u:pw@h://x"), "u:***@h://x");
    assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    assert_eq!(redact("redis://u:pa/ss@h:1/0"), "redis://u:***@h:1/0");
    assert_eq!(redact("redis://u:p?a#s@h"), "redis://u:***@h");
    assert_eq!(redact("redis://h:1/0#x@y"), "redis://h:***@y");
    assert_eq!(
        redact("redis+unix:///run/r.sock?db=1&pass=hunter2&user=u"),
        "redis+unix:///run/r.sock?db=1&pass=***&user=u"
    );
    assert_eq!(
        redact("redis+sentinel://:pw@h:1,h:2/m?sentinel_password=hunter2"),
        "redis+sentinel://:***@h:1,h:2/m?sentinel_password=***"
    );
    assert_eq!(
        redact("unix:///s?password=hunter2"),
        "unix:///s?password=***"
    );
}

#[test]
fn parses_good_urls() {
    for (url, kind) in [
        ("redis://127.0.0.1:6379", NodeKind::Standalone),
        ("redis://localhost", NodeKind::Standalone),
        ("redis://user:pass@127.0.0.1:6380/3", NodeKind::Standalone),
        (" redis://127.0.0.1:6379/0 ", NodeKind::Standalone),
        ("redis+unix:///run/redis.sock", NodeKind::Standalone),
        ("unix:///run/redis.sock?db=2&pass=x", NodeKind::Standalone),
        ("redis+cluster://127.0.0.1:7000", NodeKind::Cluster),
        (
            "redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/",
            NodeKind::Cluster,
        ),
        (
            "redis+sentinel://127.0.0.1:26379/mymaster",
            NodeKind::Sentinel,
        ),
        (
            "redis+sentinel://u:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/2?sentinel_password=s",
            NodeKind::Sentinel,
        ),
    ] {
        let parsed = NodeUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(parsed.kind(), kind, "{url}");
    }
}

#[test]
fn multi_host_urls_keep_every_address_and_credential() {
    let url = NodeUrl::parse("redis+cluster://app:pw@10.0.0.1:7000,10.0.0.2:7001").unwrap();
    let Target::Cluster { seeds } = url.target() else {
        panic!("a cluster");
    };
    assert_eq!(seeds.len(), 2);
    assert!(
        seeds
            .iter()
            .all(|s| s.redis_settings().password() == Some("pw"))
    );
    assert!(
        seeds
            .iter()
            .all(|s| s.redis_settings().username() == Some("app"))
    );

    let url = NodeUrl::parse(
        "redis+sentinel://:data@10.0.0.1:26379,10.0.0.2:26379/orders/3?sentinel_password=sent",
    )
    .unwrap();
    let Target::Sentinel {
        sentinels,
        master,
        primary,
    } = url.target()
    else {
        panic!("a sentinel");
    };
    assert_eq!(master, "orders");
    assert_eq!(sentinels.len(), 2);
    assert!(
        sentinels
            .iter()
            .all(|s| s.redis_settings().password() == Some("sent"))
    );
    assert_eq!(primary.redis_settings().password(), Some("data"));
    assert_eq!(primary.redis_settings().db(), 3);
    assert!(!url.to_string().contains("sent&") && !url.to_string().contains("data"));
}

#[test]
fn one_node_given_twice_is_recognised() {
    let a = NodeUrl::parse("redis+cluster://h:1,h:2").unwrap();
    let b = NodeUrl::parse("redis+cluster://h:2,h:1").unwrap();
    assert_eq!(a.identity(), b.identity());
    let s = NodeUrl::parse("redis+sentinel://h:1/m").unwrap();
    let t = NodeUrl::parse("redis+sentinel://h:1/n").unwrap();
    assert_ne!(s.identity(), t.identity());
}

#[test]
fn rejects_bad_urls_without_echoing_secrets() {
    for url in [
        "",
        "127.0.0.1:6379",
        "http://127.0.0.1",
        "redis://",
        "redis://:6379",
        "redis://user:hunter2@127.0.0.1:notaport",
        "redis://user:hunter2@127.0.0.1:6379/notadb",
        "redis://user:hunter2@h:1,h:2",
        "redis+unix://",
        "redis+cluster://:hunter2@",
        "redis+cluster://:hunter2@h:1,,h:2",
        "redis+cluster://:hunter2@h:1/3",
        "redis+cluster://h:1?pass=hunter2",
        "redis+sentinel://:hunter2@h:1",
        "redis+sentinel://:hunter2@h:1/",
        "redis+sentinel://h:1/m?sentinel_password=hunter2&x=1",
        "redis+sentinel://:hunter2@h:1/m/notadb",
    ] {
        let err = NodeUrl::parse(url).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
