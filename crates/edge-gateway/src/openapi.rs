//! OpenAPI 3 for the public API, generated from the same route table and descriptors as the
//! transcoding, with the `.proto` doc comments as descriptions.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::{
    field_path,
    routes::{BodyRule, PUBLIC_RPCS, Route, RouteTable},
};

pub fn document(table: &RouteTable, public_base_url: &str) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut op_ids = BTreeSet::new();
    for route in table.routes.iter() {
        let path = route.template.openapi_path();
        let op = operation(route, &mut schemas, &mut op_ids);
        paths
            .entry(path)
            .or_default()
            .insert(route.method.as_str().to_lowercase(), op);
    }
    let mut tags = Vec::new();
    for name in table.services() {
        if let Some(svc) = table.pool.get_service_by_name(&name) {
            let mut tag = json!({"name": svc.name()});
            if let Some(d) = comment(&svc.parent_file(), svc.path()) {
                tag["description"] = Value::String(d);
            }
            tags.push(tag);
        }
    }
    let mut components = schemas.into_map();
    components.insert("Error".into(), error_schema());
    let server = if public_base_url.is_empty() {
        "/"
    } else {
        public_base_url
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Transactions API",
            "version": "v1",
            "description": "Sign up, verify your email, log in, open accounts and move money between \
                them. Generated from the gRPC contract's google.api.http rules: field names are \
                snake_case on output (camelCase is accepted on input), 64-bit integers are JSON \
                strings (numbers are accepted on input), enums are names. Errors are \
                `{code, message, details}` with a stable `reason` in the ErrorInfo detail.",
        },
        "servers": [{"url": server}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "PASETO v4.public",
                    "description": "The access_token from POST /v1/sessions (LoginUser).",
                }
            }
        },
        "security": [{"bearerAuth": []}],
    })
}

fn operation(route: &Route, schemas: &mut Schemas, op_ids: &mut BTreeSet<String>) -> Value {
    let rpc = &route.rpc;
    let service = rpc.parent_service();
    let mut id = match route.binding {
        0 => format!("{}_{}", service.name(), rpc.name()),
        n => format!("{}_{}{}", service.name(), rpc.name(), n + 1),
    };
    while !op_ids.insert(id.clone()) {
        id.push('_');
    }
    let description = comment(&rpc.parent_file(), rpc.path()).unwrap_or_default();
    let summary = description.lines().next().unwrap_or(rpc.name()).to_owned();
    let input = rpc.input();

    let bound: BTreeSet<String> = route
        .template
        .variables
        .iter()
        .map(|v| v.field_path.join("."))
        .collect();
    let mut parameters = Vec::new();
    for var in &route.template.variables {
        let name = var.field_path.join(".");
        let field = field_path::resolve(&input, &var.field_path);
        let mut p = json!({
            "name": name,
            "in": "path",
            "required": true,
            "schema": field.as_ref().map(|f| schemas.field(f)).unwrap_or(json!({"type": "string"})),
        });
        if let Some(d) = field.and_then(|f| comment(&f.parent_file(), f.path())) {
            p["description"] = Value::String(d);
        }
        parameters.push(p);
    }
    if route.body != BodyRule::Whole {
        let skip = match &route.body {
            BodyRule::Field(f) => Some(f.clone()),
            _ => None,
        };
        query_parameters(
            &input,
            "",
            &bound,
            skip.as_deref(),
            schemas,
            &mut parameters,
            0,
        );
    }

    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "description": description,
        "tags": [service.name()],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": response_schema(route, schemas)}},
            },
            "default": {
                "description": "An error: the gRPC status mapped to HTTP (400, 401, 403, 404, 409, 413, 429, 503, 504 …).",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    let body_schema = match &route.body {
        BodyRule::None => None,
        BodyRule::Whole if bound.is_empty() => Some(schemas.message_ref(&input)),
        BodyRule::Whole => Some(schemas.inline_without(&input, &bound)),
        BodyRule::Field(f) => input.get_field_by_name(f).map(|f| schemas.field(&f)),
    };
    if let Some(schema) = body_schema {
        // no body is the empty message, which is only refused when a field of it is required
        let required = match &route.body {
            BodyRule::Whole => input
                .fields()
                .any(|f| !bound.contains(f.name()) && is_required(&f)),
            BodyRule::Field(f) => input.get_field_by_name(f).is_some_and(|f| is_required(&f)),
            BodyRule::None => false,
        };
        op["requestBody"] = json!({
            "required": required,
            "content": {"application/json": {"schema": schema}},
        });
    }
    if PUBLIC_RPCS.contains(&rpc.full_name()) {
        op["security"] = json!([]);
    }
    if route.template.variables.is_empty() && route.full_name().ends_with(".VerifyEmail") {
        op["description"] = Value::String(format!(
            "{description}\n\nWith `Accept: text/html` (a browser opening the emailed link) the answer is a small HTML page."
        ));
    }
    op
}

fn response_schema(route: &Route, schemas: &mut Schemas) -> Value {
    let output = route.rpc.output();
    match route
        .response_body
        .as_deref()
        .and_then(|f| output.get_field_by_name(f))
    {
        Some(f) => schemas.field(&f),
        None => schemas.message_ref(&output),
    }
}

fn query_parameters(
    message: &MessageDescriptor,
    prefix: &str,
    bound: &BTreeSet<String>,
    skip: Option<&str>,
    schemas: &mut Schemas,
    out: &mut Vec<Value>,
    depth: usize,
) {
    for field in message.fields() {
        let name = format!("{prefix}{}", field.name());
        if bound.contains(&name) || (depth == 0 && skip == Some(field.name())) || field.is_map() {
            continue;
        }
        match field.kind() {
            Kind::Message(m) if !is_scalar_wkt(&m) => {
                if !field.is_list() && depth < 3 {
                    query_parameters(
                        &m,
                        &format!("{name}."),
                        bound,
                        None,
                        schemas,
                        out,
                        depth + 1,
                    );
                }
            }
            _ => {
                let mut p = json!({
                    "name": name,
                    "in": "query",
                    "required": depth == 0 && is_required(&field),
                    "schema": schemas.field(&field),
                });
                if field.is_list() {
                    p["style"] = json!("form");
                    p["explode"] = json!(true);
                }
                if let Some(d) = comment(&field.parent_file(), field.path()) {
                    p["description"] = Value::String(d);
                }
                out.push(p);
            }
        }
    }
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error answer: a google.rpc.Status in JSON. `details` holds an ErrorInfo with the stable `reason`, a BadRequest with `field_violations` for bad input, and a RetryInfo when a retry is welcome.",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "The gRPC status code (3 = INVALID_ARGUMENT, 16 = UNAUTHENTICATED, …)."},
            "message": {"type": "string", "description": "A human-readable explanation."},
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "@type": {"type": "string", "example": "type.googleapis.com/google.rpc.ErrorInfo"},
                        "reason": {"type": "string", "description": "ErrorInfo: the stable machine-readable reason, e.g. `insufficient_funds`."},
                        "domain": {"type": "string"},
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        "field_violations": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "field": {"type": "string"},
                                    "description": {"type": "string"}
                                }
                            }
                        },
                        "retry_delay": {"type": "string", "example": "30s"}
                    },
                    "additionalProperties": true
                }
            }
        }
    })
}

fn is_scalar_wkt(m: &MessageDescriptor) -> bool {
    wkt_schema(m).is_some_and(|s| s.get("type").is_some_and(|t| t != "object"))
}

fn wkt_schema(m: &MessageDescriptor) -> Option<Value> {
    Some(match m.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "example": "1.5s"}),
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" | "google.protobuf.Any" => json!({"type": "object"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "format": "byte"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "format": "int32"})
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64"})
        }
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => {
            json!({"type": "number"})
        }
        _ => return None,
    })
}

/// The component schemas referenced so far.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
}

impl Schemas {
    fn into_map(self) -> Map<String, Value> {
        self.done.into_iter().collect()
    }

    fn message_ref(&mut self, m: &MessageDescriptor) -> Value {
        if let Some(s) = wkt_schema(m) {
            return s;
        }
        let name = m.full_name().to_owned();
        if !self.done.contains_key(&name) {
            self.done.insert(name.clone(), Value::Null); // cycle guard
            let schema = self.message_schema(m, &BTreeSet::new());
            self.done.insert(name.clone(), schema);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn enum_ref(&mut self, e: &EnumDescriptor) -> Value {
        let name = e.full_name().to_owned();
        if !self.done.contains_key(&name) {
            let values: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
            let mut doc = comment(&e.parent_file(), e.path()).unwrap_or_default();
            for v in e.values() {
                if let Some(c) = comment(&v.parent_file(), v.path()) {
                    doc.push_str(&format!("\n- `{}`: {}", v.name(), c));
                }
            }
            self.done.insert(
                name.clone(),
                json!({"type": "string", "enum": values, "description": doc}),
            );
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn inline_without(&mut self, m: &MessageDescriptor, skip: &BTreeSet<String>) -> Value {
        self.message_schema(m, skip)
    }

    fn message_schema(&mut self, m: &MessageDescriptor, skip: &BTreeSet<String>) -> Value {
        let mut props = Map::new();
        let mut required = Vec::new();
        for f in m.fields() {
            if skip.contains(f.name()) {
                continue;
            }
            props.insert(f.name().to_owned(), self.field(&f));
            if is_required(&f) {
                required.push(Value::String(f.name().to_owned()));
            }
        }
        // unknown fields are refused (400), so the schema says there are none
        let mut s = json!({"type": "object", "properties": props, "additionalProperties": false});
        if !required.is_empty() {
            s["required"] = Value::Array(required);
        }
        if let Some(d) = comment(&m.parent_file(), m.path()) {
            s["description"] = Value::String(d);
        }
        s
    }

    fn field(&mut self, f: &FieldDescriptor) -> Value {
        let mut schema = if f.is_map() {
            let entry = match f.kind() {
                Kind::Message(e) => e,
                _ => unreachable!("a map field's kind is its entry message"),
            };
            let value = entry.map_entry_value_field();
            json!({"type": "object", "additionalProperties": self.kind(&value.kind())})
        } else if f.is_list() {
            json!({"type": "array", "items": self.kind(&f.kind())})
        } else {
            let mut schema = self.kind(&f.kind());
            if let (Some(d), Some(object)) =
                (comment(&f.parent_file(), f.path()), schema.as_object_mut())
            {
                object.extend(bounds(&f.kind(), &d));
            }
            schema
        };
        if let Some(d) = comment(&f.parent_file(), f.path()) {
            if schema.get("$ref").is_some() {
                schema = json!({"allOf": [schema], "description": d});
            } else {
                schema["description"] = Value::String(d);
            }
        }
        schema
    }

    fn kind(&mut self, k: &Kind) -> Value {
        match k {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$", "description": "A 64-bit integer as a JSON string (a number is accepted on input)."})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^[0-9]{1,20}$", "description": "A 64-bit integer as a JSON string (a number is accepted on input)."})
            }
            Kind::Bool => json!({"type": "boolean"}),
            // the gateway refuses control characters in every string (`platform::text`)
            Kind::String => json!({"type": "string", "pattern": NO_CONTROLS}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Enum(e) => self.enum_ref(e),
            Kind::Message(m) => self.message_ref(m),
        }
    }
}

/// Any text without the control characters `platform::text` refuses (tab, LF and CR pass).
const NO_CONTROLS: &str = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$";

/// A field the contract's comment marks as required ("Required." or "(required)"). proto3 has no
/// required fields, so the convention lives in the comment, where a reader of the `.proto` sees
/// it too; an absent field is its default (the empty string, 0), which such a field refuses.
fn is_required(f: &FieldDescriptor) -> bool {
    comment(&f.parent_file(), f.path()).is_some_and(|d| {
        let d = d.to_lowercase();
        d.contains("(required)") || d.contains("required.") || d.starts_with("required")
    })
}

/// The bounds a field's comment states, as JSON Schema keywords, read from the conventions the
/// `.proto` comments follow: a regular expression in backticks (`` `^[a-z0-9_]{3,32}$` ``) is a
/// string's `pattern`; "N to M characters" (or "N to M of …") its length, "up to M characters"
/// its maximum; on a 32-bit integer "N to M" gives its minimum, 0 when the comment says what
/// "0 means". 64-bit integers are JSON strings: their pattern is digits.
fn bounds(kind: &Kind, comment: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let text = comment.replace('\n', " ");
    let words: Vec<&str> = text.split_whitespace().collect();
    let number = |w: &str| {
        w.trim_matches(|c: char| !c.is_ascii_digit())
            .parse::<u64>()
            .ok()
            .filter(|_| w.starts_with(|c: char| c.is_ascii_digit() || c == '('))
    };
    // ("N", "to", "M", rest of the clause)
    let range = words.windows(3).find_map(|w| {
        let (lo, hi) = (number(w[0])?, number(w[2])?);
        (w[1] == "to" && lo <= hi).then_some((lo, hi))
    });
    match kind {
        Kind::String => {
            for span in text.split('`').skip(1).step_by(2) {
                if span.starts_with('^') && span.ends_with('$') {
                    out.insert("pattern".into(), Value::String(span.to_owned()));
                }
            }
            let lower = text.to_lowercase();
            let of_length = lower.contains("character") || lower.contains(" of ");
            if let Some((lo, hi)) = range.filter(|_| of_length) {
                out.insert("minLength".into(), json!(lo));
                out.insert("maxLength".into(), json!(hi));
            } else if let Some(max) = lower
                .split("up to ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(number)
                .filter(|_| lower.contains("character"))
            {
                out.insert("maxLength".into(), json!(max));
            }
        }
        // only the lower bound: above the upper one a page size is lowered to it (AIP-158), not
        // refused, so a `maximum` would tell clients and fuzzers a refusal that never comes
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => {
            if let Some((lo, _)) = range {
                let lo = if text.contains("0 means") { 0 } else { lo };
                out.insert("minimum".into(), json!(lo));
            }
        }
        _ => {}
    }
    out
}

/// The leading comment of the element at `path` in `file`, trimmed.
fn comment(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let loc = info.location.iter().find(|l| l.path == path)?;
    let text = loc.leading_comments.as_deref().unwrap_or("").trim();
    if text.is_empty() {
        return None;
    }
    Some(text.lines().map(str::trim).collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        let t = RouteTable::from_descriptor_set(proto::DESCRIPTOR_SET).unwrap();
        document(&t, "")
    }

    #[test]
    fn every_route_is_an_operation_with_comments_and_error_schema() {
        let d = doc();
        let op = &d["paths"]["/v1/accounts/{id}:freeze"]["post"];
        assert_eq!(op["operationId"], "AccountsService_FreezeAccount");
        assert!(
            op["summary"]
                .as_str()
                .unwrap()
                .contains("Freezes an account")
        );
        assert_eq!(op["parameters"][0]["in"], "path");
        // the body carries the fields not bound by the path
        let body = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(body["properties"]["reason"].is_object());
        assert!(body["properties"].get("id").is_none());
        assert_eq!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert!(d["components"]["schemas"]["transactions.accounts.v1.Account"].is_object());
    }

    /// The operations of a new `.proto` come from its http rules with no gateway code, one
    /// operation id per binding.
    #[test]
    fn a_new_rpc_in_a_proto_is_documented_with_no_gateway_code() {
        let table = crate::routes::tests::table_with_a_new_proto();
        let doc = document(&table, "");
        assert_eq!(
            doc["paths"]["/v1/notes/{username}"]["patch"]["operationId"],
            "NotesService_Annotate"
        );
        assert_eq!(
            doc["paths"]["/v1/notes:annotate"]["post"]["operationId"],
            "NotesService_Annotate2"
        );
    }

    #[test]
    fn get_routes_take_the_rest_from_the_query_and_public_rpcs_need_no_token() {
        let d = doc();
        let op = &d["paths"]["/v1/accounts/{account_id}/entries"]["get"];
        let names: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "account_id",
                "page_size",
                "page_token",
                "start_time",
                "end_time"
            ]
        );
        assert_eq!(d["paths"]["/v1/sessions"]["post"]["security"], json!([]));
        assert!(d["paths"]["/v1/accounts"]["post"].get("security").is_none());
        let amount = &d["components"]["schemas"]["transactions.transfers.v1.Transfer"]["properties"]
            ["amount"];
        assert_eq!(amount["type"], "string");
        assert_eq!(amount["format"], "int64");
    }

    #[test]
    fn bounds_and_patterns_come_from_the_field_comments() {
        let d = doc();
        let schemas = &d["components"]["schemas"];
        let user = &schemas["transactions.auth.v1.User"]["properties"]["username"];
        assert_eq!(user["pattern"], "^[a-z0-9_]{3,32}$");
        let create = &schemas["transactions.auth.v1.CreateUserRequest"]["properties"];
        assert_eq!(create["full_name"]["minLength"], 1);
        assert_eq!(create["full_name"]["maxLength"], 100);
        assert_eq!(create["password"]["minLength"], 8);
        assert_eq!(create["password"]["maxLength"], 128);
        assert_eq!(create["username"]["minLength"], 3);
        assert_eq!(create["username"]["maxLength"], 32);
        let unfreeze = &d["paths"]["/v1/accounts/{id}:unfreeze"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]["properties"]["reason"];
        assert_eq!(unfreeze["maxLength"], 200, "{unfreeze}");
        assert!(unfreeze.get("minLength").is_none());
        // "Page size, 1 to 100; 0 means the default (20)."
        let op = &d["paths"]["/v1/accounts"]["get"];
        let page_size = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "page_size")
            .unwrap();
        assert_eq!(page_size["schema"]["minimum"], 0);
        // above 100 it is lowered to 100, not refused
        assert!(page_size["schema"].get("maximum").is_none());
        // enums are the proto enum's names
        let role = &schemas["transactions.auth.v1.Role"];
        assert!(
            role["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("ROLE_BANKER"))
        );
    }

    #[test]
    fn a_field_the_comment_marks_required_is_required() {
        let with = |text: &str| {
            let d = text.to_lowercase();
            d.contains("(required)") || d.contains("required.") || d.starts_with("required")
        };
        assert!(with("Password: 8 to 128 characters. Required."));
        assert!(with("The username (required)."));
        assert!(!with("A new full name."));
        let d = doc();
        let login = &d["components"]["schemas"]["transactions.auth.v1.LoginUserRequest"];
        assert_eq!(login["required"], json!(["username", "password"]));
        // a body is required only when a field of it is
        assert_eq!(
            d["paths"]["/v1/sessions"]["post"]["requestBody"]["required"],
            true
        );
        let resend = &d["paths"]["/v1/users/me/verification_emails"]["post"]["requestBody"];
        assert_eq!(resend["required"], false);
    }
}
