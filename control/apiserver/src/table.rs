//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! The columns and cells are Kubernetes' own (`pkg/printers/internalversion`): `columns`
//! declares them per kind, `pod` and `rows` compute the cells, `duration` formats ages,
//! `format` holds the label/selector helpers. Like the Kubernetes apiserver, every row
//! carries all columns ("wide"); kubectl hides priority-1 columns unless `-o wide`.
//!
//! Lists use [`to_table`]; a single object (GET) uses [`object_to_table`]; a watch uses
//! [`WatchTables`], which sends the column definitions with the first event only, as
//! Kubernetes' watch encoder does (`NoHeaders` after the first object).

mod columns;
mod csr;
mod duration;
pub(crate) mod format;
mod pod;
mod rows;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

pub use columns::ColumnDefinition;
pub use duration::{human_duration, short_human_duration};

use crate::registry::ResourceType;
use columns::Printer;

/// What each row's `object` holds: the `includeObject` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// `None`: no object (`"object": null`).
    None,
    /// `Metadata` (the default): a `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// `Object`: the whole object.
    Object,
}

/// A bad `includeObject` value; the HTTP layer answers 400 BadRequest with its message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "Unable to convert to Table as requested: includeObject: Unsupported value: {0:?}: supported values: \"Metadata\", \"None\", \"Object\""
)]
pub struct UnsupportedIncludeObject(pub String);

impl IncludeObject {
    /// Parses the query parameter; absent or empty means `Metadata`.
    pub fn parse(value: Option<&str>) -> Result<Self, UnsupportedIncludeObject> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(UnsupportedIncludeObject(other.to_string())),
        }
    }
}

/// The column definitions of `rt`'s table.
pub fn column_definitions(rt: &ResourceType) -> &'static [ColumnDefinition] {
    Printer::for_kind(rt.group, rt.kind).columns()
}

fn columns_json(rt: &ResourceType) -> Value {
    Value::Array(
        column_definitions(rt)
            .iter()
            .map(ColumnDefinition::to_json)
            .collect(),
    )
}

/// One row: cells, the finished-pod conditions, and the object per `include`.
fn row(rt: &ResourceType, obj: &Value, include: IncludeObject, now: Timestamp) -> Value {
    let printer = Printer::for_kind(rt.group, rt.kind);
    let (cells, conditions) = match printer {
        Printer::Pod => pod::pod_row(obj, now),
        other => (rows::cells(other, obj, now), None),
    };
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    };
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells));
    if let Some(conditions) = conditions {
        row.insert("conditions".into(), conditions);
    }
    row.insert("object".into(), object);
    Value::Object(row)
}

fn table(columns: Value, metadata: Map<String, Value>, rows: Vec<Value>) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The Table of a list response: one row per object, with the list's resourceVersion,
/// continue token and remaining item count in `metadata`.
pub fn to_table(
    rt: &ResourceType,
    objects: &[Value],
    include_object: IncludeObject,
    now: Timestamp,
    resource_version: &str,
    continue_token: Option<&str>,
    remaining: Option<i64>,
) -> Value {
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), json!(resource_version));
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), json!(token));
    }
    if let Some(remaining) = remaining {
        metadata.insert("remainingItemCount".into(), json!(remaining));
    }
    let rows = objects
        .iter()
        .map(|o| row(rt, o, include_object, now))
        .collect();
    table(columns_json(rt), metadata, rows)
}

/// The Table of one object (a GET, or one watch event): a single row, the object's
/// resourceVersion, and column definitions only when `with_headers`.
pub fn object_to_table(
    rt: &ResourceType,
    object: &Value,
    include_object: IncludeObject,
    now: Timestamp,
    with_headers: bool,
) -> Value {
    let mut metadata = Map::new();
    if let Some(rv) = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
    {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    let columns = if with_headers {
        columns_json(rt)
    } else {
        Value::Null
    };
    table(
        columns,
        metadata,
        vec![row(rt, object, include_object, now)],
    )
}

/// Turns the objects of a watch into one-row Tables: the first carries the column
/// definitions, the following ones `columnDefinitions: null`, as Kubernetes does.
///
/// Status objects of ERROR events are not tables; send those as they are.
#[derive(Clone, Debug)]
pub struct WatchTables {
    rt: ResourceType,
    include_object: IncludeObject,
    headers_sent: bool,
}

impl WatchTables {
    /// A converter for one watch of `rt`.
    pub fn new(rt: &ResourceType, include_object: IncludeObject) -> Self {
        WatchTables {
            rt: rt.clone(),
            include_object,
            headers_sent: false,
        }
    }

    /// The Table to put in the next event's `object`.
    pub fn next_object(&mut self, object: &Value, now: Timestamp) -> Value {
        let with_headers = !self.headers_sent;
        self.headers_sent = true;
        object_to_table(&self.rt, object, self.include_object, now, with_headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn now() -> Timestamp {
        "2025-03-01T12:00:00Z".parse().unwrap()
    }

    fn configmap(name: &str, rv: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv,
                         "creationTimestamp": "2025-03-01T11:59:00Z", "labels": {"a": "b"}},
            "data": {"x": "1", "y": "2"}
        })
    }

    #[test]
    fn include_object_defaults_to_metadata_and_rejects_unknown_values() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("")), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        let err = IncludeObject::parse(Some("All")).unwrap_err();
        assert!(err.to_string().contains("Unsupported value: \"All\""));
    }

    #[test]
    fn list_table_has_list_metadata_columns_and_partial_object_metadata_rows() {
        let registry = Registry::builtin();
        let rt = registry.by_kind("", "ConfigMap").unwrap();
        let t = to_table(
            rt,
            &[configmap("one", "5")],
            IncludeObject::Metadata,
            now(),
            "42",
            Some("token"),
            Some(3),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "token", "remainingItemCount": 3})
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(t["columnDefinitions"][0]["priority"], 0);
        assert_eq!(t["rows"][0]["cells"], json!(["one", 2, "60s"]));
        assert_eq!(
            t["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": configmap("one", "5")["metadata"]})
        );
    }

    #[test]
    fn empty_list_has_empty_rows_and_no_continue() {
        let registry = Registry::builtin();
        let rt = registry.by_kind("", "Namespace").unwrap();
        let t = to_table(rt, &[], IncludeObject::Metadata, now(), "7", None, None);
        assert_eq!(t["rows"], json!([]));
        assert_eq!(t["metadata"], json!({"resourceVersion": "7"}));
    }

    #[test]
    fn include_object_none_and_object_control_the_row_object() {
        let registry = Registry::builtin();
        let rt = registry.by_kind("", "ConfigMap").unwrap();
        let cm = configmap("one", "5");
        let none = object_to_table(rt, &cm, IncludeObject::None, now(), true);
        assert_eq!(none["rows"][0]["object"], Value::Null);
        let full = object_to_table(rt, &cm, IncludeObject::Object, now(), true);
        assert_eq!(full["rows"][0]["object"], cm);
        assert_eq!(full["metadata"], json!({"resourceVersion": "5"}));
    }

    #[test]
    fn watch_tables_send_column_definitions_with_the_first_event_only() {
        let registry = Registry::builtin();
        let rt = registry.by_kind("", "ConfigMap").unwrap();
        let mut watch = WatchTables::new(rt, IncludeObject::Metadata);
        let first = watch.next_object(&configmap("a", "10"), now());
        let second = watch.next_object(&configmap("b", "11"), now());
        assert_eq!(first["columnDefinitions"].as_array().map(Vec::len), Some(3));
        assert_eq!(second["columnDefinitions"], Value::Null);
        assert_eq!(second["rows"].as_array().map(Vec::len), Some(1));
        assert_eq!(second["rows"][0]["cells"][0], "b");
        assert_eq!(second["metadata"]["resourceVersion"], "11");
    }

    #[test]
    fn every_registered_kind_has_one_cell_per_column() {
        let registry = Registry::builtin();
        for rt in registry.all() {
            let obj = json!({"metadata": {"name": "x"}});
            let t = object_to_table(rt, &obj, IncludeObject::None, now(), true);
            assert_eq!(
                t["rows"][0]["cells"].as_array().map(Vec::len),
                Some(column_definitions(rt).len()),
                "{}",
                rt.kind
            );
        }
    }

    #[test]
    fn finished_pod_rows_carry_the_completed_condition() {
        let registry = Registry::builtin();
        let rt = registry.by_kind("", "Pod").unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []},
                         "status": {"phase": "Failed"}});
        let t = object_to_table(rt, &pod, IncludeObject::None, now(), true);
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Failed");
    }
}
