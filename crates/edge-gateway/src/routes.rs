//! The HTTP route table, built from the descriptor set's `google.api.http` rules. Nothing here names
//! a service or an RPC: a new RPC with an http rule in a `.proto` is a new route.

use std::sync::Arc;

use prost::Message;
use prost_reflect::{DescriptorPool, MethodDescriptor, Value};
use proto::google::api::{HttpRule, http_rule::Pattern};

use crate::{
    field_path,
    template::{PathTemplate, TemplateError},
};

/// RPCs callable without a bearer token (they create or exchange credentials). Every other route
/// without an `Authorization` header is 401 at the gateway, before its body is read or checked;
/// the token itself is verified by the service.
pub const PUBLIC_RPCS: [&str; 4] = [
    "transactions.auth.v1.AuthService.CreateUser",
    "transactions.auth.v1.AuthService.LoginUser",
    "transactions.auth.v1.AuthService.RenewAccessToken",
    "transactions.auth.v1.AuthService.VerifyEmail",
];

/// Where the request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body: every field not bound by the path comes from the query string.
    None,
    /// `body: "*"`: the whole request message (minus path variables).
    Whole,
    /// `body: "field"`: that field; the rest from the query string.
    Field(String),
}

/// One HTTP binding of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: http::Method,
    pub template: PathTemplate,
    pub body: BodyRule,
    /// `response_body`: the response field to answer with instead of the whole message.
    pub response_body: Option<String>,
    pub rpc: MethodDescriptor,
    /// gRPC path `/<package>.<Service>/<Method>`.
    pub grpc_path: String,
    /// The proto package, which picks the upstream.
    pub package: String,
    /// 0 for the rule itself, 1.. for its `additional_bindings` in order.
    pub binding: usize,
}

impl Route {
    /// `transactions.auth.v1.AuthService.LoginUser`.
    pub fn full_name(&self) -> &str {
        self.rpc.full_name()
    }

    /// Whether the RPC needs a bearer token (all but [`PUBLIC_RPCS`]).
    pub fn needs_token(&self) -> bool {
        !PUBLIC_RPCS.contains(&self.full_name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("descriptor set: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    #[error("{rpc}: {source}")]
    Template {
        rpc: String,
        #[source]
        source: TemplateError,
    },
    #[error("{rpc}: {why}")]
    Rule { rpc: String, why: String },
}

/// Every route of the descriptor set, most specific first.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub pool: DescriptorPool,
    pub routes: Arc<Vec<Route>>,
}

/// The outcome of looking a request up.
pub enum Lookup<'a> {
    Found(&'a Route, Vec<(Vec<String>, String)>),
    /// The path exists with other methods.
    WrongMethod(Vec<http::Method>),
    NotFound,
}

impl RouteTable {
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, RouteError> {
        let pool = DescriptorPool::decode(bytes)?;
        Self::from_pool(pool)
    }

    pub fn from_pool(pool: DescriptorPool) -> Result<Self, RouteError> {
        let mut routes = Vec::new();
        let ext = pool.get_extension_by_name("google.api.http");
        for service in pool.services() {
            for rpc in service.methods() {
                let Some(ext) = &ext else { continue };
                let options = rpc.options();
                if !options.has_extension(ext) {
                    continue;
                }
                let Value::Message(dynamic) = options.get_extension(ext).into_owned() else {
                    continue;
                };
                let rule = HttpRule::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| {
                    RouteError::Rule {
                        rpc: rpc.full_name().to_owned(),
                        why: e.to_string(),
                    }
                })?;
                add_rule(&mut routes, &rpc, &rule, 0)?;
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
        Ok(Self {
            pool,
            routes: Arc::new(routes),
        })
    }

    pub fn lookup(&self, method: &http::Method, path: &str) -> Lookup<'_> {
        let mut allowed = Vec::new();
        for route in self.routes.iter() {
            if let Some(vars) = route.template.matches(path) {
                if route.method == *method {
                    return Lookup::Found(route, vars);
                }
                if !allowed.contains(&route.method) {
                    allowed.push(route.method.clone());
                }
            }
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::WrongMethod(allowed)
        }
    }

    /// The gRPC service names that have at least one route, in descriptor order.
    pub fn services(&self) -> Vec<String> {
        self.pool
            .services()
            .filter(|s| {
                self.routes
                    .iter()
                    .any(|r| r.rpc.parent_service().full_name() == s.full_name())
            })
            .map(|s| s.full_name().to_owned())
            .collect()
    }
}

fn add_rule(
    routes: &mut Vec<Route>,
    rpc: &MethodDescriptor,
    rule: &HttpRule,
    binding: usize,
) -> Result<(), RouteError> {
    let bad = |why: &str| RouteError::Rule {
        rpc: rpc.full_name().to_owned(),
        why: why.to_owned(),
    };
    let (method, path) = match &rule.pattern {
        Some(Pattern::Get(p)) => (http::Method::GET, p),
        Some(Pattern::Put(p)) => (http::Method::PUT, p),
        Some(Pattern::Post(p)) => (http::Method::POST, p),
        Some(Pattern::Delete(p)) => (http::Method::DELETE, p),
        Some(Pattern::Patch(p)) => (http::Method::PATCH, p),
        Some(Pattern::Custom(c)) => (
            http::Method::from_bytes(c.kind.as_bytes()).map_err(|_| bad("bad custom method"))?,
            &c.path,
        ),
        None => return Err(bad("http rule without a pattern")),
    };
    let template = PathTemplate::parse(path).map_err(|source| RouteError::Template {
        rpc: rpc.full_name().to_owned(),
        source,
    })?;
    let input = rpc.input();
    for var in &template.variables {
        if field_path::resolve(&input, &var.field_path).is_none() {
            return Err(bad(&format!(
                "path variable `{}` is not a field of {}",
                var.field_path.join("."),
                input.full_name()
            )));
        }
    }
    let body = match rule.body.as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        field => {
            if input.get_field_by_name(field).is_none() {
                return Err(bad(&format!("body field `{field}` does not exist")));
            }
            BodyRule::Field(field.to_owned())
        }
    };
    let response_body = Some(rule.response_body.clone()).filter(|s| !s.is_empty());
    if let Some(f) = &response_body
        && rpc.output().get_field_by_name(f).is_none()
    {
        return Err(bad(&format!("response_body field `{f}` does not exist")));
    }
    let service = rpc.parent_service();
    routes.push(Route {
        method,
        template,
        body,
        response_body,
        rpc: rpc.clone(),
        grpc_path: format!("/{}/{}", service.full_name(), rpc.name()),
        package: service.package_name().to_owned(),
        binding,
    });
    // additional bindings do not nest (google/api/http.proto)
    if binding == 0 {
        for (i, extra) in rule.additional_bindings.iter().enumerate() {
            add_rule(routes, rpc, extra, i + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::from_descriptor_set(proto::DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn every_rpc_of_the_contract_has_a_route() {
        let t = table();
        let rpcs: usize = t
            .pool
            .services()
            .filter(|s| s.package_name().starts_with("transactions."))
            .map(|s| s.methods().len())
            .sum();
        assert!(rpcs >= 20);
        assert_eq!(t.routes.len(), rpcs);
    }

    #[test]
    fn lookup_finds_rpc_and_variables() {
        let t = table();
        let Lookup::Found(route, vars) = t.lookup(&http::Method::POST, "/v1/accounts/9:freeze")
        else {
            panic!("no route")
        };
        assert_eq!(
            route.grpc_path,
            "/transactions.accounts.v1.AccountsService/FreezeAccount"
        );
        assert_eq!(route.body, BodyRule::Whole);
        assert_eq!(vars, vec![(vec!["id".to_owned()], "9".to_owned())]);

        let Lookup::Found(route, _) = t.lookup(&http::Method::POST, "/v1/tokens:renew") else {
            panic!("no route")
        };
        assert_eq!(route.rpc.name(), "RenewAccessToken");
        // the literal `/v1/users/me/verification_emails` is not `/v1/users/{username}`
        let Lookup::Found(route, _) =
            t.lookup(&http::Method::POST, "/v1/users/me/verification_emails")
        else {
            panic!("no route")
        };
        assert_eq!(route.rpc.name(), "ResendVerificationEmail");
    }

    /// The route table of the contract plus a new `.proto` (built here as JSON of a
    /// FileDescriptorProto) with extra bindings, `{name=**}` and a field body. The OpenAPI tests
    /// document the same table.
    pub(crate) fn table_with_a_new_proto() -> RouteTable {
        let mut pool = DescriptorPool::decode(proto::DESCRIPTOR_SET).unwrap();
        let file_desc = pool
            .get_message_by_name("google.protobuf.FileDescriptorProto")
            .unwrap();
        let file = prost_reflect::DynamicMessage::deserialize(
            file_desc,
            serde_json::json!({
                "name": "transactions/notes/v1/notes.proto",
                "package": "transactions.notes.v1",
                "dependency": ["google/api/annotations.proto", "transactions/auth/v1/auth.proto"],
                "syntax": "proto3",
                "service": [{
                    "name": "NotesService",
                    "method": [{
                        "name": "Annotate",
                        "inputType": ".transactions.auth.v1.UpdateUserRequest",
                        "outputType": ".transactions.auth.v1.User",
                        "options": {"[google.api.http]": {
                            "patch": "/v1/notes/{username=**}",
                            "body": "full_name",
                            "additionalBindings": [{"post": "/v1/notes:annotate", "body": "*"}]
                        }}
                    }]
                }]
            }),
        )
        .unwrap();
        pool.decode_file_descriptor_proto(file.encode_to_vec().as_slice())
            .unwrap();
        RouteTable::from_pool(pool).unwrap()
    }

    /// A new `.proto` becomes routes with no gateway code (its OpenAPI operations: in `openapi`).
    #[test]
    fn a_new_rpc_in_a_proto_needs_no_gateway_code() {
        let table = table_with_a_new_proto();

        let Lookup::Found(route, vars) = table.lookup(&http::Method::PATCH, "/v1/notes/a/b/c")
        else {
            panic!("no route for the new RPC")
        };
        assert_eq!(
            route.grpc_path,
            "/transactions.notes.v1.NotesService/Annotate"
        );
        assert_eq!(route.package, "transactions.notes.v1");
        assert_eq!(route.body, BodyRule::Field("full_name".into()));
        assert_eq!(
            vars,
            vec![(vec!["username".to_owned()], "a/b/c".to_owned())]
        );
        let Lookup::Found(route, _) = table.lookup(&http::Method::POST, "/v1/notes:annotate")
        else {
            panic!("no route for the additional binding")
        };
        assert_eq!(route.body, BodyRule::Whole);
    }

    #[test]
    fn wrong_method_lists_the_allowed_ones_and_unknown_path_is_not_found() {
        let t = table();
        match t.lookup(&http::Method::PUT, "/v1/users/alice") {
            Lookup::WrongMethod(m) => {
                assert!(m.contains(&http::Method::GET) && m.contains(&http::Method::PATCH))
            }
            _ => panic!("expected wrong method"),
        }
        assert!(matches!(
            t.lookup(&http::Method::GET, "/v1/nope"),
            Lookup::NotFound
        ));
    }
}
