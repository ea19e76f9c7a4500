//! A field of a message named by a path of names (`user.email`), the way path variables and query
//! parameters name them. Its own module because both the route table (which checks every path
//! variable when it is built) and the transcoder (which fills the fields) resolve paths, and
//! neither should reach into the other for it.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// Finds a field by a path of names, each the proto name or the JSON name.
pub fn resolve(message: &MessageDescriptor, path: &[String]) -> Option<FieldDescriptor> {
    let (first, rest) = path.split_first()?;
    let field = message
        .get_field_by_name(first)
        .or_else(|| message.get_field_by_json_name(first))?;
    if rest.is_empty() {
        return Some(field);
    }
    match field.kind() {
        Kind::Message(m) if !field.is_list() && !field.is_map() => resolve(&m, rest),
        _ => None,
    }
}
