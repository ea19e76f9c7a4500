//! JSON ⇄ protobuf by reflection, following the proto3 JSON mapping: both field spellings accepted on
//! input, proto (snake_case) names on output, 64-bit integers as strings out and strings or numbers
//! in, enums by name. Path variables and query parameters are folded into the same JSON object as the
//! body before one typed decode, so every type error names the field the client wrote.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{error::GatewayError, field_path, routes::BodyRule};

/// Builds the request message from path variables, query string and body.
pub fn request_message(
    input: &MessageDescriptor,
    body_rule: &BodyRule,
    path_vars: &[(Vec<String>, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, GatewayError> {
    let mut root = Map::new();
    match body_rule {
        BodyRule::None => {}
        BodyRule::Whole => {
            if let Some(value) = parse_body(body)? {
                match value {
                    Value::Object(map) => root = map,
                    _ => {
                        return Err(GatewayError::bad_json(
                            "the request body must be a JSON object",
                        ));
                    }
                }
            }
        }
        BodyRule::Field(field) => {
            if let Some(value) = parse_body(body)? {
                root.insert(field.clone(), value);
            }
        }
    }
    // the path names the resource; a query parameter naming the same field would override it
    // (`GET /v1/accounts/999?id=12` read account 12), so it is refused instead
    let bound: Vec<Vec<String>> = path_vars
        .iter()
        .filter_map(|(path, _)| proto_names(input, path))
        .collect();
    for (path, raw) in path_vars {
        let field = field_path::resolve(input, path).ok_or_else(|| {
            GatewayError::invalid_field(&path.join("."), "not a field of the request")
        })?;
        set_path(&mut root, path, scalar_json(&field, raw));
    }
    // Query parameters fill the fields the body does not carry (all of them unless `body: "*"`).
    if *body_rule != BodyRule::Whole
        && let Some(query) = query
    {
        for (key, raw) in form_urlencoded::parse(query.as_bytes()) {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            let field = field_path::resolve(input, &path)
                .ok_or_else(|| GatewayError::invalid_field(&key, "unknown query parameter"))?;
            if proto_names(input, &path).is_some_and(|names| bound.contains(&names)) {
                return Err(GatewayError::invalid_field(
                    &key,
                    "set by the path; a query parameter cannot name a path variable",
                ));
            }
            if matches!(&field.kind(), Kind::Message(m) if !is_scalar_like(m)) {
                return Err(GatewayError::invalid_field(
                    &key,
                    "a message field cannot be set from the query string",
                ));
            }
            let value = scalar_json(&field, &raw);
            if field.is_list() {
                push_path(&mut root, &path, value);
            } else {
                set_path(&mut root, &path, value);
            }
        }
    }
    let message = decode(input, Value::Object(root))?;
    reject_control_chars(&message, "")?;
    Ok(message)
}

/// The media types a request body may be sent as, checked before it is parsed (a body-less
/// request, or one whose route takes no body, has nothing to check):
/// - none: the body is JSON;
/// - `application/json` and any `application/<name>+json`, with no charset or `utf-8`;
/// - `application/x-www-form-urlencoded` only when the body parses as JSON: it is what
///   `curl -d` sends unless told otherwise, and the README's examples are written that way.
///
/// Anything else is 415: the gateway speaks JSON only and does not guess.
pub fn check_content_type(
    content_type: Option<&str>,
    body_rule: &BodyRule,
    body: &[u8],
) -> Result<(), GatewayError> {
    if *body_rule == BodyRule::None || body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let Some(content_type) = content_type else {
        return Ok(());
    };
    let mut parts = content_type.split(';').map(str::trim);
    let essence = parts.next().unwrap_or("").to_ascii_lowercase();
    let charset_ok = parts.all(|p| match p.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let value = value.trim().trim_matches('"');
            value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json") && sub.len() > "+json".len());
    let curl_default = essence == "application/x-www-form-urlencoded"
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    if (json || curl_default) && charset_ok {
        return Ok(());
    }
    Err(GatewayError::unsupported_media_type(content_type))
}

/// The proto names of the fields along `path` (which may use JSON names), so two spellings of
/// one field compare equal.
fn proto_names(input: &MessageDescriptor, path: &[String]) -> Option<Vec<String>> {
    let mut names = Vec::with_capacity(path.len());
    for i in 1..=path.len() {
        names.push(field_path::resolve(input, &path[..i])?.name().to_owned());
    }
    Some(names)
}

/// Refuses control characters (NUL and the rest, see `platform::text`) in every string of the
/// request, map keys included, naming the field: PostgreSQL refuses NUL in text, and none of
/// the others belongs in a name, a reason or a key.
fn reject_control_chars(message: &DynamicMessage, prefix: &str) -> Result<(), GatewayError> {
    for (field, value) in message.fields() {
        let name = format!("{prefix}{}", field.name());
        reject_in_value(value, &name)?;
    }
    Ok(())
}

fn reject_in_value(value: &prost_reflect::Value, name: &str) -> Result<(), GatewayError> {
    use prost_reflect::{MapKey, Value as V};
    match value {
        V::String(s) if s.chars().any(platform::text::is_refused_control) => {
            Err(GatewayError::invalid_text(name))
        }
        V::Message(m) => reject_control_chars(m, &format!("{name}.")),
        V::List(items) => items.iter().try_for_each(|v| reject_in_value(v, name)),
        V::Map(entries) => entries.iter().try_for_each(|(k, v)| {
            if let MapKey::String(k) = k
                && k.chars().any(platform::text::is_refused_control)
            {
                return Err(GatewayError::invalid_text(name));
            }
            reject_in_value(v, name)
        }),
        _ => Ok(()),
    }
}

/// Serialises a response with proto field names, defaults included (so `"replayed": false` and a
/// zero balance are visible), int64 as strings and enums by name.
pub fn response_json(message: &DynamicMessage, response_body: Option<&str>) -> Vec<u8> {
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut buf = Vec::with_capacity(256);
    if let Err(e) =
        message.serialize_with_options(&mut serde_json::Serializer::new(&mut buf), &opts)
    {
        tracing::error!(error = %e, "cannot serialise a response message");
        return b"{}".to_vec();
    }
    // `response_body`: answer with that one field, serialised by the same rules
    if let Some(field) = response_body.and_then(|f| message.descriptor().get_field_by_name(f))
        && let Ok(Value::Object(mut all)) = serde_json::from_slice::<Value>(&buf)
    {
        let inner = all.remove(field.name()).unwrap_or(Value::Null);
        return serde_json::to_vec(&inner).unwrap_or_default();
    }
    buf
}

fn parse_body(body: &[u8]) -> Result<Option<Value>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = UniqueKeys::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v.0))
        .map_err(|e| match e.to_string() {
            m if m.starts_with(DUPLICATE_KEY) => GatewayError::duplicate_key(&m),
            m => GatewayError::bad_json(&format!("malformed JSON: {m}")),
        })?;
    Ok(Some(value))
}

const DUPLICATE_KEY: &str = "duplicate key";

/// A JSON value whose objects name each key once. serde_json keeps the last of repeated keys
/// (`"amount":"1","amount":"500000"` moved 500,000), and a proxy or log in front may read the
/// first: the body is refused instead.
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        UniqueKeys::deserialize(de).map(|v| v.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("{DUPLICATE_KEY} `{key}`")));
            }
            let UniqueKeys(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

/// The typed decode; on failure the error names the JSON path of the offending field.
fn decode(input: &MessageDescriptor, value: Value) -> Result<DynamicMessage, GatewayError> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let opts = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(input.clone(), de, &opts).map_err(|e| {
        let path = track.path().to_string();
        let description = e.to_string();
        // an unknown field is reported by its parent; name the field itself
        let field = if path == "." {
            unknown_field_name(&description)
        } else {
            path
        };
        GatewayError::invalid_field(&field, &description)
    })
}

fn unknown_field_name(description: &str) -> String {
    description
        .split(['`', '\''])
        .nth(1)
        .filter(|_| description.contains("field"))
        .unwrap_or("body")
        .to_owned()
}

/// Well-known types written as a JSON string or number (Timestamp, Duration, wrappers, FieldMask).
fn is_scalar_like(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.BoolValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
    )
}

/// A path or query value as the JSON the typed decode expects. Anything that does not parse stays a
/// string, so the decode reports it against the field.
fn scalar_json(field: &FieldDescriptor, raw: &str) -> Value {
    let message_name = match field.kind() {
        Kind::Message(m) => Some(m.full_name().to_owned()),
        _ => None,
    };
    match (field.kind(), message_name.as_deref()) {
        (Kind::Bool, _) | (_, Some("google.protobuf.BoolValue")) => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(raw.to_owned()),
        },
        (Kind::Double | Kind::Float, _)
        | (_, Some("google.protobuf.DoubleValue" | "google.protobuf.FloatValue")) => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        _ => Value::String(raw.to_owned()),
    }
}

fn set_path(root: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut map = root;
    for p in parents {
        let entry = map
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        map = entry.as_object_mut().expect("object just ensured");
    }
    map.insert(last.clone(), value);
}

fn push_path(root: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut map = root;
    for p in parents {
        let entry = map
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        map = entry.as_object_mut().expect("object just ensured");
    }
    match map
        .entry(last.clone())
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(items) => items.push(value),
        other => *other = Value::Array(vec![value]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::RouteTable;

    fn input(name: &str) -> MessageDescriptor {
        let t = RouteTable::from_descriptor_set(proto::DESCRIPTOR_SET).unwrap();
        t.pool.get_message_by_name(name).unwrap()
    }

    fn to_json(m: &DynamicMessage) -> Value {
        serde_json::from_slice(&response_json(m, None)).unwrap()
    }

    #[test]
    fn body_accepts_both_spellings_and_int64_as_string_or_number() {
        let d = input("transactions.transfers.v1.CreateTransferRequest");
        for body in [
            r#"{"from_account_id": "1", "toAccountId": 2, "amount": "1500", "currency": "USD"}"#,
            r#"{"fromAccountId": 1, "to_account_id": "2", "amount": 1500, "currency": "USD"}"#,
        ] {
            let m = request_message(&d, &BodyRule::Whole, &[], None, body.as_bytes()).unwrap();
            let v = to_json(&m);
            assert_eq!(v["from_account_id"], "1");
            assert_eq!(v["to_account_id"], "2");
            assert_eq!(v["amount"], "1500", "int64 is a string on output");
            assert_eq!(v["request_id"], "", "defaults are emitted");
        }
    }

    #[test]
    fn path_variables_fill_fields_and_win_over_the_body() {
        let d = input("transactions.accounts.v1.FreezeAccountRequest");
        let vars = vec![(vec!["id".to_owned()], "42".to_owned())];
        let m = request_message(
            &d,
            &BodyRule::Whole,
            &vars,
            None,
            br#"{"id": "7", "reason": "fraud"}"#,
        )
        .unwrap();
        let v = to_json(&m);
        assert_eq!(v["id"], "42");
        assert_eq!(v["reason"], "fraud");
    }

    #[test]
    fn query_string_fills_the_rest_on_get() {
        let d = input("transactions.transfers.v1.ListEntriesRequest");
        let vars = vec![(vec!["account_id".to_owned()], "5".to_owned())];
        let m = request_message(
            &d,
            &BodyRule::None,
            &vars,
            Some("page_size=10&pageToken=abc%3D"),
            b"",
        )
        .unwrap();
        let v = to_json(&m);
        assert_eq!(v["account_id"], "5");
        assert_eq!(v["page_size"], 10);
        assert_eq!(v["page_token"], "abc=");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let d = input("transactions.transfers.v1.CreateTransferRequest");
        let err = request_message(
            &d,
            &BodyRule::Whole,
            &[],
            None,
            br#"{"amount": "lots", "currency": "USD"}"#,
        )
        .unwrap_err();
        assert_eq!(err.http_status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(err.field_violations()[0].0, "amount");

        let d = input("transactions.transfers.v1.ListEntriesRequest");
        let vars = vec![(vec!["account_id".to_owned()], "abc".to_owned())];
        let err = request_message(&d, &BodyRule::None, &vars, None, b"").unwrap_err();
        assert_eq!(err.field_violations()[0].0, "account_id");

        let err =
            request_message(&d, &BodyRule::None, &[], Some("page_size=big"), b"").unwrap_err();
        assert_eq!(err.field_violations()[0].0, "page_size");
        let err = request_message(&d, &BodyRule::None, &[], Some("colour=red"), b"").unwrap_err();
        assert_eq!(err.field_violations()[0].0, "colour");
    }

    #[test]
    fn unknown_body_field_and_malformed_json_are_bad_requests() {
        let d = input("transactions.auth.v1.LoginUserRequest");
        let err =
            request_message(&d, &BodyRule::Whole, &[], None, br#"{"usrname": "x"}"#).unwrap_err();
        assert_eq!(err.field_violations()[0].0, "usrname");
        let err =
            request_message(&d, &BodyRule::Whole, &[], None, br#"{"username": "#).unwrap_err();
        assert_eq!(err.reason(), "malformed_json");
        let err = request_message(&d, &BodyRule::Whole, &[], None, b"[1]").unwrap_err();
        assert_eq!(err.reason(), "malformed_json");
        // an empty body is an empty message
        assert!(request_message(&d, &BodyRule::Whole, &[], None, b"").is_ok());
    }

    #[test]
    fn a_field_body_fills_that_field_and_the_query_the_rest() {
        // as if the rule were `post: "/v1/accounts/{id}:freeze" body: "reason"`
        let d = input("transactions.accounts.v1.FreezeAccountRequest");
        let vars = vec![(vec!["id".to_owned()], "8".to_owned())];
        let m = request_message(
            &d,
            &BodyRule::Field("reason".into()),
            &vars,
            None,
            br#""suspicious activity""#,
        )
        .unwrap();
        let v = to_json(&m);
        assert_eq!(v["id"], "8");
        assert_eq!(v["reason"], "suspicious activity");
        let err =
            request_message(&d, &BodyRule::Field("reason".into()), &vars, None, b"42").unwrap_err();
        assert_eq!(err.field_violations()[0].0, "reason");
    }

    #[test]
    fn response_body_answers_with_one_field() {
        let d = input("transactions.auth.v1.CreateUserResponse");
        let m = DynamicMessage::deserialize(
            d,
            serde_json::json!({"user": {"username": "alice", "role": "ROLE_BANKER"}}),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&response_json(&m, Some("user"))).unwrap();
        assert_eq!(v["username"], "alice");
        assert_eq!(v["role"], "ROLE_BANKER");
    }

    #[test]
    fn enums_are_names_on_output_and_timestamps_rfc3339() {
        let d = input("transactions.accounts.v1.Account");
        let m = DynamicMessage::deserialize(
            d,
            serde_json::json!({"id": 3, "status": "ACCOUNT_STATUS_FROZEN", "kind": 1,
                "createdAt": "2026-11-25T10:00:00Z"}),
        )
        .unwrap();
        let v = to_json(&m);
        assert_eq!(v["status"], "ACCOUNT_STATUS_FROZEN");
        assert_eq!(v["kind"], "ACCOUNT_KIND_CUSTOMER");
        assert_eq!(v["created_at"], "2026-11-25T10:00:00Z");
        assert_eq!(v["balance"], "0");
    }

    #[test]
    fn a_query_parameter_that_names_a_path_variable_is_refused() {
        let d = input("transactions.transfers.v1.ListEntriesRequest");
        let vars = vec![(vec!["account_id".to_owned()], "5".to_owned())];
        for query in ["account_id=6", "accountId=6", "page_size=1&account_id=5"] {
            let err = request_message(&d, &BodyRule::None, &vars, Some(query), b"").unwrap_err();
            assert_eq!(err.http_status(), http::StatusCode::BAD_REQUEST, "{query}");
            let field = err.field_violations()[0].0.as_str();
            assert!(
                ["account_id", "accountId"].contains(&field),
                "{query}: {field}"
            );
        }
    }

    #[test]
    fn a_key_named_twice_in_a_body_is_refused() {
        let d = input("transactions.transfers.v1.CreateTransferRequest");
        for body in [
            r#"{"amount": "1", "currency": "USD", "amount": "500000"}"#,
            r#"{"amount": "1", "currency": "USD", "currency": "USD"}"#,
        ] {
            let err =
                request_message(&d, &BodyRule::Whole, &[], None, body.as_bytes()).unwrap_err();
            assert_eq!(err.http_status(), http::StatusCode::BAD_REQUEST);
            assert_eq!(err.reason(), "duplicate_key", "{body}");
        }
        // nested objects are held to it too
        let d = input("transactions.auth.v1.UpdateUserRequest");
        let err = request_message(
            &d,
            &BodyRule::Whole,
            &[],
            None,
            br#"{"username": "a", "x": {"k": 1, "k": 2}}"#,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "duplicate_key");
        assert_eq!(err.field_violations()[0].0, "k");
    }

    #[test]
    fn control_characters_in_any_string_field_are_refused_naming_it() {
        let d = input("transactions.accounts.v1.FreezeAccountRequest");
        let vars = vec![(vec!["id".to_owned()], "8".to_owned())];
        let err = request_message(
            &d,
            &BodyRule::Whole,
            &vars,
            None,
            br#"{"reason": "fraud\u0000"}"#,
        )
        .unwrap_err();
        assert_eq!(err.http_status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(err.reason(), "invalid_text");
        assert_eq!(err.field_violations()[0].0, "reason");
        // from the query string and the path as well
        let d = input("transactions.accounts.v1.ListAccountsRequest");
        let err =
            request_message(&d, &BodyRule::None, &[], Some("owner=al%00ice"), b"").unwrap_err();
        assert_eq!(err.field_violations()[0].0, "owner");
        let d = input("transactions.auth.v1.GetUserRequest");
        let vars = vec![(vec!["username".to_owned()], "a\u{1b}[2J".to_owned())];
        let err = request_message(&d, &BodyRule::None, &vars, None, b"").unwrap_err();
        assert_eq!(err.field_violations()[0].0, "username");
        // free text keeps its line breaks and tabs
        let d = input("transactions.accounts.v1.FreezeAccountRequest");
        request_message(
            &d,
            &BodyRule::Whole,
            &[],
            None,
            br#"{"reason": "two\nlines\tand a tab"}"#,
        )
        .unwrap();
    }

    #[test]
    fn a_body_is_json_or_curls_default_type_holding_json() {
        let json = br#"{"username": "a"}"#;
        let ok = |ct: Option<&str>, body: &[u8]| check_content_type(ct, &BodyRule::Whole, body);
        for ct in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON;charset=\"UTF-8\""),
            Some("application/merge-patch+json"),
            Some("application/x-www-form-urlencoded"),
        ] {
            ok(ct, json).unwrap_or_else(|e| panic!("{ct:?}: {e:?}"));
        }
        for (ct, body) in [
            ("text/plain", &json[..]),
            ("application/xml", b"<a/>"),
            ("application/x-www-form-urlencoded", b"username=a"),
            ("multipart/form-data; boundary=x", b"--x"),
            ("application/json; charset=latin1", json),
            ("application/+json", json),
        ] {
            let err = ok(Some(ct), body).unwrap_err();
            assert_eq!(
                err.http_status(),
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{ct}"
            );
            assert_eq!(err.reason(), "unsupported_media_type");
        }
        // nothing to check: no body, or a route that takes none
        ok(Some("text/plain"), b"  ").unwrap();
        check_content_type(Some("text/plain"), &BodyRule::None, json).unwrap();
    }
}
