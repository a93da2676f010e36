use super::*;
use crate::selectors::{label_key_errors, label_value_errors};
use serde_json::json;

fn labels(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn parses_every_operator() {
    let cases = [
        ("a=b", "a=b"),
        ("a==b", "a==b"),
        ("a!=b", "a!=b"),
        ("a in (x,y)", "a in (x,y)"),
        ("a notin (x)", "a notin (x)"),
        ("a", "a"),
        ("!a", "!a"),
        ("a>1", "a>1"),
        ("a<1", "a<1"),
        ("  a  =  b  ,  c  ", "a=b,c"),
        ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
        ("a in (c,b,a,b)", "a in (a,b,c)"),
        ("a=", "a="),
        ("a=,b", "a=,b"),
        ("a in (in,notin)", "a in (in,notin)"),
        ("z=1,a=2,m", "a=2,m,z=1"),
        ("example.com/app=web", "example.com/app=web"),
        ("a\tin\t(\tx\t)", "a in (x)"),
        ("", ""),
        ("   ", ""),
    ];
    for (input, printed) in cases {
        assert_eq!(sel(input).to_string(), printed, "{input}");
    }
    assert!(sel("").is_empty());
    assert!(!sel("a").is_empty());
}

#[test]
fn matches_labels() {
    let l = labels(json!({"app": "web", "tier": "front", "n": "5"}));
    let empty = Map::new();
    let yes = [
        "app=web",
        "app==web",
        "app!=db",
        "missing!=x",
        "app in (web,db)",
        "missing notin (x)",
        "app notin (db)",
        "app",
        "!missing",
        "n>4",
        "n<6",
        "app=web,tier=front",
        "",
    ];
    for s in yes {
        assert!(sel(s).matches(&l), "{s} should match");
    }
    let no = [
        "app=db",
        "app!=web",
        "app in (db)",
        "app notin (web)",
        "missing",
        "!app",
        "n>5",
        "n<5",
        "app>1",
        "missing>1",
        "app=web,tier=back",
    ];
    for s in no {
        assert!(!sel(s).matches(&l), "{s} should not match");
    }
    assert!(sel("a notin (x)").matches(&empty));
    assert!(sel("a!=x").matches(&empty));
    assert!(!sel("a in (x)").matches(&empty));
    assert!(sel("a in ()").matches(&labels(json!({"a": ""}))));
    assert!(sel("a=").matches(&labels(json!({"a": ""}))));
}

#[test]
fn parse_errors_read_like_upstream() {
    let cases = [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a=b,", "found '', expected: identifier after ','"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("=b", "found '=', expected: !, identifier, or 'end of string'"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in", "unable to parse requirement: found '' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("a in (b,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
        ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a>b", "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"),
        ("a==b=c", "found '=', expected: ',' or 'end of string'"),
    ];
    for (input, want) in cases {
        assert_eq!(LabelSelector::parse(input).unwrap_err(), want, "{input}");
    }
}

#[test]
fn key_and_value_syntax_is_checked() {
    let name_rule = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    assert_eq!(
        LabelSelector::parse("a@b=c").unwrap_err(),
        format!("unable to parse requirement: <nil>: Invalid value: \"a@b\": {name_rule}")
    );
    let value_rule = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    assert_eq!(
        LabelSelector::parse("a=-b").unwrap_err(),
        format!("unable to parse requirement: values[0][a]: Invalid value: \"-b\": {value_rule}")
    );
    let two = LabelSelector::parse("a in (-x,-y)").unwrap_err();
    assert!(two.starts_with("unable to parse requirement: [values[0][a]: Invalid value: \"-x\""), "{two}");
    assert!(two.contains(", values[1][a]: Invalid value: \"-y\""), "{two}");
    assert!(two.ends_with(']'));

    assert!(label_key_errors("app").is_empty());
    assert!(label_key_errors("example.com/app").is_empty());
    assert!(label_key_errors("app.kubernetes.io/name").is_empty());
    assert_eq!(label_key_errors("/a"), ["prefix part must be non-empty"]);
    assert_eq!(label_key_errors("Example.com/a").len(), 1);
    assert!(label_key_errors("Example.com/a")[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
    assert!(label_key_errors("Example.com/a")[0]
        .ends_with("regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"));
    assert_eq!(label_key_errors("").len(), 2);
    assert_eq!(label_key_errors(&"a".repeat(64)), ["name part must be no more than 63 characters"]);
    assert!(label_key_errors("a/b/c")[0].starts_with("a qualified name must consist of"));
    assert!(label_key_errors("a/b/c")[0]
        .ends_with("with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
    assert!(label_value_errors("").is_empty());
    assert!(label_value_errors("a.b_c-d").is_empty());
    assert_eq!(label_value_errors(&"a".repeat(64)), ["must be no more than 63 characters"]);
    assert_eq!(label_value_errors("a b").len(), 1);
}

#[test]
fn from_label_selector_objects() {
    let everything = LabelSelector::from_label_selector(&json!({})).unwrap();
    assert!(everything.is_empty());
    assert!(everything.matches(&Map::new()));
    let nothing = LabelSelector::from_label_selector(&Value::Null).unwrap();
    assert!(nothing.is_nothing() && !nothing.is_empty());
    assert!(!nothing.matches(&labels(json!({"a": "b"}))));
    assert_eq!(nothing.to_string(), "");
    assert!(LabelSelector::from_optional_label_selector(None).unwrap().is_nothing());
    assert!(LabelSelector::from_optional_label_selector(Some(&json!({}))).unwrap().is_empty());

    let s = LabelSelector::from_label_selector(&json!({
        "matchLabels": {"app": "web", "b": "x"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "app", "operator": "Exists"}
        ]
    }))
    .unwrap();
    assert_eq!(s.to_string(), "app=web,app,b=x,!canary,env notin (prod),tier in (back,front)");
    assert!(s.matches(&labels(json!({"app": "web", "b": "x", "tier": "back"}))));
    assert!(!s.matches(&labels(json!({"app": "web", "b": "x", "tier": "back", "canary": "1"}))));
    assert!(!s.matches(&labels(json!({"app": "web", "b": "x", "tier": "back", "env": "prod"}))));
    assert_eq!(s.requires_exact_match("app"), Some("web"));
    assert_eq!(s.requires_exact_match("tier"), None);

    let bad_op = LabelSelector::from_label_selector(
        &json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
    );
    assert_eq!(bad_op.unwrap_err(), "\"Gt\" is not a valid label selector operator");
    let empty_in = LabelSelector::from_label_selector(&json!({"matchExpressions": [{"key": "a", "operator": "In"}]}));
    assert_eq!(
        empty_in.unwrap_err(),
        "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
    );
    let exists_values = LabelSelector::from_label_selector(
        &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
    );
    assert_eq!(
        exists_values.unwrap_err(),
        "values: Invalid value: [\"x\"]: values set must be empty for exists and does not exist"
    );
    let bad_key = LabelSelector::from_label_selector(&json!({"matchLabels": {"a b": "c"}})).unwrap_err();
    assert!(bad_key.starts_with("key: Invalid value: \"a b\": name part must consist"), "{bad_key}");
}

#[test]
fn set_selectors_and_objects() {
    let s = LabelSelector::from_set(&labels(json!({"z": "1", "a": "2"})));
    assert_eq!(s.to_string(), "a=2,z=1");
    assert!(s.matches_object(&json!({"metadata": {"labels": {"a": "2", "z": "1", "q": "x"}}})));
    assert!(!s.matches_object(&json!({"metadata": {}})));
    assert!(LabelSelector::from_set(&Map::new()).matches_object(&json!({})));
    assert!(LabelSelector::everything().is_empty());
    assert!(!LabelSelector::nothing().matches_object(&json!({})));
}

#[test]
fn requirement_constructor_checks_counts() {
    assert!(Requirement::new("a", Operator::Equals, vec!["x".into(), "y".into()])
        .unwrap_err()
        .ends_with("exact-match compatibility requires one single value"));
    assert!(Requirement::new("a", Operator::GreaterThan, vec![])
        .unwrap_err()
        .ends_with("for 'Gt', 'Lt' operators, exactly one value is required"));
    assert!(Requirement::new("a", Operator::In, vec!["x".into()]).is_ok());
}
